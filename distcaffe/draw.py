"""pycaffe's caffe.draw: a NetParameter as a Graphviz graph (layers as boxes, blobs as octagons).

Needs pydot (pip install 'distcaffe[draw]') and, to render images, Graphviz's `dot` program; without them
the calls raise one CaffeError line saying what to install. Old-format (V0/V1) nets are upgraded first.
"""
from .errors import CaffeError
from .proto import caffe_pb2

LAYER_STYLE_DEFAULT = {"shape": "record", "fillcolor": "#6495ED", "style": "filled"}
NEURON_LAYER_STYLE = {"shape": "record", "fillcolor": "#90EE90", "style": "filled"}
BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}
_LAYER_COLORS = {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
                 "InnerProduct": "#CC33FF"}
_LEARNING = ("Convolution", "Deconvolution", "InnerProduct")


def _pydot():
    try:
        import pydot
    except ImportError:
        raise CaffeError("caffe.draw needs pydot: pip install 'distcaffe[draw]' (and Graphviz's dot program, "
                         "e.g. apt-get install graphviz)") from None
    return pydot


def get_pooling_types_dict():
    """Pooling method number -> name (0 -> 'MAX', ...)."""
    return {v.number: name for name, v in caffe_pb2.PoolingParameter.PoolMethod.DESCRIPTOR.values_by_name.items()}


def get_edge_label(layer):
    """Label of a layer's output edges: the batch size of Data layers, num_output of learning layers."""
    if layer.type == "Data":
        return "Batch " + str(layer.data_param.batch_size)
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return '""'


def get_layer_lr_mult(layer):
    """(weights, bias) learning-rate multipliers of a Convolution/Deconvolution/InnerProduct layer."""
    if layer.type not in _LEARNING:
        raise ValueError("%s layers do not have a learning rate multiplier" % layer.type)
    if len(layer.param) > 2:
        raise ValueError("layer %s: could not parse the learning rate multiplier (%d param specs)"
                         % (layer.name, len(layer.param)))
    mults = [p.lr_mult for p in layer.param] + [1.0] * (2 - len(layer.param))
    return tuple(mults)


def _spatial_descriptor(layer, separator):
    if layer.type == "Pooling":
        p = layer.pooling_param
        kernel, stride, pad = p.kernel_size, p.stride, p.pad
    else:
        p = layer.convolution_param
        kernel = p.kernel_size[0] if len(p.kernel_size) else 1
        stride = p.stride[0] if len(p.stride) else 1
        pad = p.pad[0] if len(p.pad) else 0
    return separator.join(["kernel size: %d" % kernel, "stride: %d" % stride, "pad: %d" % pad])


def get_layer_label(layer, rankdir, display_lrm=False):
    """A layer's node label: name, (type), spatial parameters and optionally the lr multipliers; words go on
    separate lines in horizontal layouts, on one line in vertical ones (TB/BT)."""
    separator = " " if rankdir in ("TB", "BT") else r"\n"
    if layer.type == "Pooling":
        kind = "(%s %s)" % (layer.type, get_pooling_types_dict()[layer.pooling_param.pool])
    else:
        kind = "(%s)" % layer.type
    parts = [layer.name, kind]
    if layer.type in ("Convolution", "Deconvolution", "Pooling"):
        parts.append(_spatial_descriptor(layer, separator))
    if display_lrm and layer.type in _LEARNING:
        w, b = get_layer_lr_mult(layer)
        if w or b:
            parts.append("lr mult: %.1f, %.1f" % (w, b))
    return '"%s"' % separator.join(parts)


def choose_color_by_layertype(layertype):
    """Node colour by layer type (convolutions red, pooling orange, inner products purple, else blue)."""
    return _LAYER_COLORS.get(layertype, LAYER_STYLE_DEFAULT["fillcolor"])


def _in_phase(layer, phase):
    """Caffe's include/exclude rules, by phase only (a rule without a phase matches every phase)."""
    if len(layer.include) and len(layer.exclude):
        raise ValueError("layer %s has both include and exclude specified" % layer.name)
    matches = [not rule.HasField("phase") or rule.phase == phase for rule in layer.include or layer.exclude]
    if layer.include:
        return any(matches)
    return not any(matches)


def _upgraded(caffe_net):
    if len(caffe_net.layers):
        from .io import upgrade_net_param
        return upgrade_net_param(caffe_net)
    return caffe_net


def get_pydot_graph(caffe_net, rankdir, label_edges=True, phase=None, display_lrm=False):
    """The pydot graph of a NetParameter; with `phase`, only the layers of that phase (TRAIN or TEST)."""
    pydot = _pydot()
    caffe_net = _upgraded(caffe_net)
    graph = pydot.Dot(graph_name=caffe_net.name or "Net", graph_type="digraph", rankdir=rankdir)
    nodes, edges = {}, []

    def node(key, label, **style):
        nodes[key] = pydot.Node('"%s"' % key.replace('"', r'\"'), label=label, **style)

    for layer in caffe_net.layer:
        if phase is not None and not _in_phase(layer, phase):
            continue
        layer_key = "%s_%s" % (layer.name, layer.type)
        label = get_layer_label(layer, rankdir, display_lrm=display_lrm)
        if len(layer.bottom) == 1 and len(layer.top) == 1 and layer.bottom[0] == layer.top[0]:
            node(layer_key, label, **NEURON_LAYER_STYLE)
        else:
            node(layer_key, label, **dict(LAYER_STYLE_DEFAULT, fillcolor=choose_color_by_layertype(layer.type)))
        for bottom in layer.bottom:
            node(bottom + "_blob", '"%s"' % bottom, **BLOB_STYLE)
            edges.append((bottom + "_blob", layer_key, '""'))
        for top in layer.top:
            node(top + "_blob", '"%s"' % top)
            edges.append((layer_key, top + "_blob", get_edge_label(layer) if label_edges else '""'))
    for n in nodes.values():
        graph.add_node(n)
    for src, dst, label in edges:
        graph.add_edge(pydot.Edge(nodes[src], nodes[dst], label=label))
    return graph


def draw_net(caffe_net, rankdir, ext="png", phase=None, display_lrm=False):
    """The net drawn by Graphviz as image bytes in format `ext` (png, pdf, svg, ... or 'raw' for dot text)."""
    graph = get_pydot_graph(caffe_net, rankdir, phase=phase, display_lrm=display_lrm)
    if ext == "raw":
        return graph.to_string().encode()
    try:
        return graph.create(format=ext)
    except FileNotFoundError:
        raise CaffeError("drawing a net needs Graphviz's dot program on PATH (e.g. apt-get install graphviz)") \
            from None
    except AssertionError as e:  # pydot reports dot's own failures (e.g. an unknown format) this way
        raise CaffeError("Graphviz could not draw net %s as %s: %s" % (caffe_net.name or "Net", ext,
                                                                      str(e).strip().splitlines()[-1:])) from None


def draw_net_to_file(caffe_net, filename, rankdir="LR", phase=None, display_lrm=False):
    """Draw the net into `filename` in the format its extension names ('.raw' writes the dot text)."""
    from .io.files import write_atomic
    ext = filename[filename.rfind(".") + 1:]
    write_atomic(filename, draw_net(caffe_net, rankdir, ext, phase, display_lrm))


__all__ = ["BLOB_STYLE", "LAYER_STYLE_DEFAULT", "NEURON_LAYER_STYLE", "choose_color_by_layertype", "draw_net",
           "draw_net_to_file", "get_edge_label", "get_layer_label", "get_layer_lr_mult", "get_pooling_types_dict",
           "get_pydot_graph"]
