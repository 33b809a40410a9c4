"""Upgrade old Caffe definitions to the current schema, step for step as Caffe's upgrade_proto.cpp.

Nets: V0 (`layers { layer { type: "conv" } }`) -> V1 (`layers {}` with enum types), V1 data-layer
transform fields -> `transform_param`, V1 -> V2 (`layer {}` with string types, `blobs_lr` ->
`param { lr_mult }`), deprecated `input:` fields -> an `Input` layer, old 3-param BatchNorm.
Solvers: `solver_type:` enum -> `type:` string, and every embedded net upgraded as above.
"""
from distcaffe.errors import ParseError
from distcaffe.proto import caffe_pb2 as pb

V1 = pb.V1LayerParameter

# V0 type string -> V1 enum (UpgradeV0LayerType).
V0_TO_V1_TYPE = {
    "accuracy": V1.ACCURACY, "bnll": V1.BNLL, "concat": V1.CONCAT, "conv": V1.CONVOLUTION,
    "data": V1.DATA, "dropout": V1.DROPOUT, "euclidean_loss": V1.EUCLIDEAN_LOSS,
    "flatten": V1.FLATTEN, "hdf5_data": V1.HDF5_DATA, "hdf5_output": V1.HDF5_OUTPUT,
    "im2col": V1.IM2COL, "images": V1.IMAGE_DATA, "infogain_loss": V1.INFOGAIN_LOSS,
    "innerproduct": V1.INNER_PRODUCT, "lrn": V1.LRN,
    "multinomial_logistic_loss": V1.MULTINOMIAL_LOGISTIC_LOSS, "pool": V1.POOLING,
    "relu": V1.RELU, "sigmoid": V1.SIGMOID, "softmax": V1.SOFTMAX, "softmax_loss": V1.SOFTMAX_LOSS,
    "split": V1.SPLIT, "tanh": V1.TANH, "window_data": V1.WINDOW_DATA,
}

# V1 enum -> V2 type string (UpgradeV1LayerType).
V1_TO_V2_TYPE = {
    V1.NONE: "", V1.ABSVAL: "AbsVal", V1.ACCURACY: "Accuracy", V1.ARGMAX: "ArgMax",
    V1.BNLL: "BNLL", V1.CONCAT: "Concat", V1.CONTRASTIVE_LOSS: "ContrastiveLoss",
    V1.CONVOLUTION: "Convolution", V1.DECONVOLUTION: "Deconvolution", V1.DATA: "Data",
    V1.DROPOUT: "Dropout", V1.DUMMY_DATA: "DummyData", V1.EUCLIDEAN_LOSS: "EuclideanLoss",
    V1.ELTWISE: "Eltwise", V1.EXP: "Exp", V1.FLATTEN: "Flatten", V1.HDF5_DATA: "HDF5Data",
    V1.HDF5_OUTPUT: "HDF5Output", V1.HINGE_LOSS: "HingeLoss", V1.IM2COL: "Im2col",
    V1.IMAGE_DATA: "ImageData", V1.INFOGAIN_LOSS: "InfogainLoss",
    V1.INNER_PRODUCT: "InnerProduct", V1.LRN: "LRN", V1.MEMORY_DATA: "MemoryData",
    V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss", V1.MVN: "MVN",
    V1.POOLING: "Pooling", V1.POWER: "Power", V1.RELU: "ReLU", V1.SIGMOID: "Sigmoid",
    V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss", V1.SILENCE: "Silence",
    V1.SOFTMAX: "Softmax", V1.SOFTMAX_LOSS: "SoftmaxWithLoss", V1.SPLIT: "Split",
    V1.SLICE: "Slice", V1.TANH: "TanH", V1.WINDOW_DATA: "WindowData", V1.THRESHOLD: "Threshold",
}

SOLVER_TYPE_NAMES = {
    pb.SolverParameter.SGD: "SGD", pb.SolverParameter.NESTEROV: "Nesterov",
    pb.SolverParameter.ADAGRAD: "AdaGrad", pb.SolverParameter.RMSPROP: "RMSProp",
    pb.SolverParameter.ADADELTA: "AdaDelta", pb.SolverParameter.ADAM: "Adam", pb.SolverParameter.SAG: "SAG",
}

# V1 layer sub-messages copied verbatim to the V2 layer (same names in both messages).
V1_PARAM_FIELDS = [
    f.name for f in V1.DESCRIPTOR.fields
    if f.message_type is not None and f.name.endswith("_param")
]

# V0 field -> {v0 type: (sub-message of the V1 layer, field there)}; "*" = any type.
V0_FIELD_MAP = {
    "num_output": {"conv": ("convolution_param", "num_output"),
                   "innerproduct": ("inner_product_param", "num_output")},
    "biasterm": {"conv": ("convolution_param", "bias_term"),
                 "innerproduct": ("inner_product_param", "bias_term")},
    "weight_filler": {"conv": ("convolution_param", "weight_filler"),
                      "innerproduct": ("inner_product_param", "weight_filler")},
    "bias_filler": {"conv": ("convolution_param", "bias_filler"),
                    "innerproduct": ("inner_product_param", "bias_filler")},
    "pad": {"conv": ("convolution_param", "pad"), "pool": ("pooling_param", "pad")},
    "kernelsize": {"conv": ("convolution_param", "kernel_size"),
                   "pool": ("pooling_param", "kernel_size")},
    "group": {"conv": ("convolution_param", "group")},
    "stride": {"conv": ("convolution_param", "stride"), "pool": ("pooling_param", "stride")},
    "pool": {"pool": ("pooling_param", "pool")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio")},
    "local_size": {"lrn": ("lrn_param", "local_size")},
    "alpha": {"lrn": ("lrn_param", "alpha")},
    "beta": {"lrn": ("lrn_param", "beta")},
    "k": {"lrn": ("lrn_param", "k")},
    "source": {"data": ("data_param", "source"), "hdf5_data": ("hdf5_data_param", "source"),
               "images": ("image_data_param", "source"),
               "window_data": ("window_data_param", "source"),
               "infogain_loss": ("infogain_loss_param", "source")},
    "scale": {"*": ("transform_param", "scale")},
    "meanfile": {"*": ("transform_param", "mean_file")},
    "batchsize": {"data": ("data_param", "batch_size"),
                  "hdf5_data": ("hdf5_data_param", "batch_size"),
                  "images": ("image_data_param", "batch_size"),
                  "window_data": ("window_data_param", "batch_size")},
    "cropsize": {"*": ("transform_param", "crop_size")},
    "mirror": {"*": ("transform_param", "mirror")},
    "rand_skip": {"data": ("data_param", "rand_skip"), "images": ("image_data_param", "rand_skip")},
    "shuffle_images": {"images": ("image_data_param", "shuffle")},
    "new_height": {"images": ("image_data_param", "new_height")},
    "new_width": {"images": ("image_data_param", "new_width")},
    "concat_dim": {"concat": ("concat_param", "concat_dim")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", None)},
}

# V1 data-layer types whose sub-message still holds transform fields (UpgradeNetDataTransformation).
DATA_TRANSFORM_OWNERS = {V1.DATA: "data_param", V1.IMAGE_DATA: "image_data_param",
                         V1.WINDOW_DATA: "window_data_param"}
TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def net_needs_upgrade(net):
    """True when `net` uses any deprecated form that upgrade_net_param rewrites."""
    return (len(net.layers) > 0 or len(net.input) > 0 or len(net.input_shape) > 0
            or len(net.input_dim) > 0 or _needs_batchnorm_upgrade(net))


def upgrade_net_param(net, where="<net>"):
    """Return `net` upgraded in place to the current format (also returned); `where` names it in errors."""
    if any(l.HasField("layer") for l in net.layers):
        _upgrade_v0_net(net, where)
    if _needs_data_upgrade(net):
        _upgrade_data_transformation(net)
    if len(net.layers) > 0:
        _upgrade_v1_net(net, where)
    if len(net.input) or len(net.input_shape) or len(net.input_dim):
        _upgrade_net_input(net, where)
    if _needs_batchnorm_upgrade(net):
        for layer in net.layer:
            if layer.type == "BatchNorm" and len(layer.param) == 3:
                for spec in layer.param:
                    spec.lr_mult = 0.0
                    spec.decay_mult = 0.0
    return net


def upgrade_solver_param(solver, where="<solver>"):
    """Return `solver` upgraded in place: enum `solver_type` -> string `type`, embedded nets upgraded."""
    if solver.HasField("solver_type"):
        if solver.HasField("type"):
            raise ParseError("%s: both the old 'solver_type' (enum) and the new 'type' (string) are set; "
                             "keep only 'type'" % where)
        solver.type = SOLVER_TYPE_NAMES[solver.solver_type]
        solver.ClearField("solver_type")
    if solver.HasField("net_param"):
        upgrade_net_param(solver.net_param, where + " (net_param)")
    if solver.HasField("train_net_param"):
        upgrade_net_param(solver.train_net_param, where + " (train_net_param)")
    for i, net in enumerate(solver.test_net_param):
        upgrade_net_param(net, "%s (test_net_param #%d)" % (where, i))
    return solver


def _needs_batchnorm_upgrade(net):
    return any(l.type == "BatchNorm" and len(l.param) == 3 for l in net.layer)


def _upgrade_v0_net(net, where):
    """V0 -> V1: fold padding layers into the next conv/pool, then map each V0 layer's fields."""
    layers = _fold_v0_padding(net, where)
    keep = pb.NetParameter()
    if net.HasField("name"):
        keep.name = net.name
    keep.input.extend(net.input)
    keep.input_dim.extend(net.input_dim)
    if net.HasField("force_backward"):
        keep.force_backward = net.force_backward
    for old in layers:
        _upgrade_v0_layer(old, keep.layers.add(), where)
    net.Clear()
    net.CopyFrom(keep)


def _fold_v0_padding(net, where):
    """UpgradeV0PaddingLayers: drop `padding` layers, moving their pad onto the consuming conv/pool."""
    last_top = {name: -1 for name in net.input}
    out = []
    for i, conn in enumerate(net.layers):
        v0 = conn.layer
        if v0.type != "padding":
            new = V1()
            new.CopyFrom(conn)
            out.append(new)
        for j, blob in enumerate(conn.bottom):
            if blob not in last_top:
                raise ParseError("%s: unknown blob input '%s' to V0 layer '%s'" % (where, blob, v0.name))
            src_idx = last_top[blob]
            if src_idx == -1:
                continue
            src = net.layers[src_idx]
            if src.layer.type == "padding":
                if v0.type not in ("conv", "pool"):
                    raise ParseError("%s: padding layer feeds non-conv/pool V0 layer '%s' (type %s)"
                                     % (where, v0.name, v0.type))
                if len(conn.bottom) != 1 or len(src.bottom) != 1 or len(src.top) != 1:
                    raise ParseError("%s: V0 padding layer '%s' must have one bottom and one top, and feed "
                                     "a single-input layer" % (where, src.layer.name))
                out[-1].layer.pad = src.layer.pad
                out[-1].bottom[j] = src.bottom[0]
        for blob in conn.top:
            last_top[blob] = i
    return out


def _upgrade_v0_layer(conn, layer, where):
    """UpgradeV0LayerParameter: one V0 layer -> one V1 layer."""
    layer.bottom.extend(conn.bottom)
    layer.top.extend(conn.top)
    if not conn.HasField("layer"):
        return
    v0 = conn.layer
    if v0.HasField("name"):
        layer.name = v0.name
    vtype = v0.type
    if v0.HasField("type"):
        if vtype not in V0_TO_V1_TYPE:
            raise ParseError("%s: unknown V0 layer type '%s' (layer '%s')" % (where, vtype, v0.name))
        layer.type = V0_TO_V1_TYPE[vtype]
    for blob in v0.blobs:
        layer.blobs.add().CopyFrom(blob)
    layer.blobs_lr.extend(v0.blobs_lr)
    layer.weight_decay.extend(v0.weight_decay)
    for field, targets in V0_FIELD_MAP.items():
        if not v0.HasField(field):
            continue
        target = targets.get(vtype) or targets.get("*")
        if target is None:
            raise ParseError("%s: V0 field '%s' is not valid for layer type '%s' (layer '%s')"
                             % (where, field, vtype, v0.name))
        sub_name, sub_field = target
        sub = getattr(layer, sub_name)
        value = getattr(v0, field)
        if sub_field is None:
            sub.CopyFrom(value)
        elif sub.DESCRIPTOR.fields_by_name[sub_field].message_type is not None:
            getattr(sub, sub_field).CopyFrom(value)
        elif sub.DESCRIPTOR.fields_by_name[sub_field].is_repeated:
            getattr(sub, sub_field).append(value)
        else:
            setattr(sub, sub_field, value)


def _needs_data_upgrade(net):
    for layer in net.layers:
        owner = DATA_TRANSFORM_OWNERS.get(layer.type)
        if owner and any(getattr(layer, owner).HasField(f) for f in TRANSFORM_FIELDS):
            return True
    return False


def _upgrade_data_transformation(net):
    """UpgradeNetDataTransformation: move scale/mean_file/crop_size/mirror into transform_param."""
    for layer in net.layers:
        owner = DATA_TRANSFORM_OWNERS.get(layer.type)
        if not owner:
            continue
        sub = getattr(layer, owner)
        for f in TRANSFORM_FIELDS:
            if sub.HasField(f):
                setattr(layer.transform_param, f, getattr(sub, f))
                sub.ClearField(f)


def _upgrade_v1_net(net, where):
    """UpgradeV1Net: every V1 `layers {}` entry becomes a `layer {}` with a type string."""
    if len(net.layer) > 0:
        raise ParseError("%s: mixes V1 'layers' and current 'layer' entries; use one format" % where)
    old = list(net.layers)
    net.ClearField("layers")
    for v1 in old:
        _upgrade_v1_layer(v1, net.layer.add(), where)


def _upgrade_v1_layer(v1, layer, where):
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    if v1.HasField("name"):
        layer.name = v1.name
    for rule in v1.include:
        layer.include.add().CopyFrom(rule)
    for rule in v1.exclude:
        layer.exclude.add().CopyFrom(rule)
    if v1.HasField("type"):
        layer.type = V1_TO_V2_TYPE[v1.type]
    for blob in v1.blobs:
        layer.blobs.add().CopyFrom(blob)

    def spec(i):
        while len(layer.param) <= i:
            layer.param.add()
        return layer.param[i]

    for i, name in enumerate(v1.param):
        spec(i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        spec(i).share_mode = mode  # V1 and ParamSpec DimCheckMode share values
    for i, lr in enumerate(v1.blobs_lr):
        spec(i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        spec(i).decay_mult = decay
    layer.loss_weight.extend(v1.loss_weight)
    for name in V1_PARAM_FIELDS:
        if v1.HasField(name):
            getattr(layer, name).CopyFrom(getattr(v1, name))
    if v1.HasField("layer"):
        raise ParseError("%s: V1 layer '%s' still holds a V0 'layer' block" % (where, v1.name))


def _upgrade_net_input(net, where):
    """UpgradeNetInput: deprecated input/input_shape/input_dim -> one `Input` layer named "input" first."""
    has_shape, has_dim = len(net.input_shape) > 0, len(net.input_dim) > 0
    if has_shape or has_dim:
        n = len(net.input)
        if has_shape and len(net.input_shape) != n:
            raise ParseError("%s: %d 'input' blobs but %d 'input_shape' entries" % (where, n, len(net.input_shape)))
        if not has_shape and len(net.input_dim) != 4 * n:
            raise ParseError("%s: %d 'input' blobs need %d 'input_dim' values, found %d"
                             % (where, n, 4 * n, len(net.input_dim)))
        layer = pb.LayerParameter(name="input", type="Input")
        for i, top in enumerate(net.input):
            layer.top.append(top)
            shape = layer.input_param.shape.add()
            if has_shape:
                shape.CopyFrom(net.input_shape[i])
            else:
                shape.dim.extend(net.input_dim[4 * i:4 * i + 4])
        rest = list(net.layer)
        net.ClearField("layer")
        net.layer.add().CopyFrom(layer)
        for l in rest:
            net.layer.add().CopyFrom(l)
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")
