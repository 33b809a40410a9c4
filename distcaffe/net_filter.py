"""Phase/level/stage filtering and Split insertion: the NetParameter rewrites Caffe applies before building.

`filter_net` keeps the layers whose include/exclude rules match the NetState (Caffe's FilterNet);
`insert_splits` gives every blob read by several layers its own Split layer so diffs add up (insert_splits.cpp).
"""
from .errors import NetError
from .proto import caffe_pb2


def state_meets_rule(state, rule):
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def filter_net(param):
    """Copy of `param` holding only the layers included in its `state`."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    for lp in param.layer:
        if lp.include and lp.exclude:
            raise NetError("layer '%s': specify either include rules or exclude rules; not both" % lp.name)
        included = not lp.include
        if any(state_meets_rule(param.state, r) for r in lp.exclude):
            included = False
        if any(state_meets_rule(param.state, r) for r in lp.include):
            included = True
        if included:
            out.layer.add().CopyFrom(lp)
    return out


def split_layer_name(layer_name, blob_name, blob_idx):
    """Caffe's SplitLayerName: blob name first, then the producing layer's name."""
    return "%s_%s_%d_split" % (blob_name, layer_name, blob_idx)


def split_blob_name(layer_name, blob_name, blob_idx, split_idx):
    """Caffe's SplitBlobName: `<blob>_<layer>_<top index>_split_<k>`."""
    return "%s_%s_%d_split_%d" % (blob_name, layer_name, blob_idx, split_idx)


def insert_splits(param):
    """Caffe's InsertSplits: a blob consumed k>1 times (a weighted loss counts as a use) gets a Split layer."""
    last_top = {}
    bottom_source = {}
    use_count = {}
    loss_weight = {}
    for i, lp in enumerate(param.layer):
        for j, name in enumerate(lp.bottom):
            if name not in last_top:
                raise NetError("layer '%s': unknown bottom blob '%s' (bottom index %d); no earlier layer "
                               "produces it" % (lp.name, name, j))
            src = last_top[name]
            bottom_source[(i, j)] = src
            use_count[src] = use_count.get(src, 0) + 1
        for j, name in enumerate(lp.top):
            last_top[name] = (i, j)
        for j in range(min(len(lp.loss_weight), len(lp.top))):
            src = last_top[lp.top[j]]
            loss_weight[src] = lp.loss_weight[j]
            if loss_weight[src]:
                use_count[src] = use_count.get(src, 0) + 1
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    split_idx = {}
    for i, lp in enumerate(param.layer):
        new = out.layer.add()
        new.CopyFrom(lp)
        for j, name in enumerate(lp.bottom):
            src = bottom_source[(i, j)]
            if use_count.get(src, 0) > 1:
                k = split_idx.get(src, 0)
                new.bottom[j] = split_blob_name(param.layer[src[0]].name, name, src[1], k)
                split_idx[src] = k + 1
        for j, name in enumerate(lp.top):
            n = use_count.get((i, j), 0)
            if n > 1:
                split = out.layer.add()
                split.name = split_layer_name(lp.name, name, j)
                split.type = "Split"
                split.bottom.append(name)
                w = loss_weight.get((i, j), 0.0)
                for k in range(n):
                    split.top.append(split_blob_name(lp.name, name, j, k))
                    if w:
                        split.loss_weight.append(w if k == 0 else 0.0)
                if w:
                    del new.loss_weight[:]
                    split_idx[(i, j)] = split_idx.get((i, j), 0) + 1
    return out
