"""Net: builds Caffe's DAG from a NetParameter and runs forward/backward, with pycaffe's Python API.

Construction follows Caffe's Net::Init step for step (filter by NetState, insert Splits, append bottoms,
tops and parameters, decide which layers need backward, force_backward, share named parameters), so a
net that builds in Caffe builds here with the same blobs, shapes and gradient flow.
"""
import contextlib
import os
from collections import OrderedDict
from itertools import zip_longest

import numpy as np

from . import backend
from .blob import Blob
from .errors import NetError
from .layers import create_layer
from .layers.cudnn_conv import inherit_net_defaults
from .layers.normalization import pair_batchnorm_scale
from .log import get_logger
from .net_filter import filter_net, insert_splits
from .proto import caffe_pb2

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
log = get_logger("net")


def _precision(lp, net_param):
    """(forward_type, backward_type, forward_math, backward_math) of a layer, by NVCaffe's Net::Init rules:
    a type is the layer's field, else the net's default_ one, else FLOAT (a data layer's unset backward type
    is FLOAT); a math is the layer's field, else the layer's own type field, else the net's default_ math,
    else the net's default_ type. None of it depends on the device."""
    def net_default(field, fallback):
        if net_param.HasField(field):
            return backend.dtype_of(getattr(net_param, field))
        return fallback

    def pick(kind, data_default):
        if lp.HasField(kind + "_type"):
            storage = backend.dtype_of(getattr(lp, kind + "_type"))
        else:
            storage = data_default or net_default("default_%s_type" % kind, np.float32)
        if lp.HasField(kind + "_math"):
            math = backend.dtype_of(getattr(lp, kind + "_math"))
        elif lp.HasField(kind + "_type"):
            math = storage
        else:
            math = net_default("default_%s_math" % kind, net_default("default_%s_type" % kind, np.float32))
        return np.dtype(storage), np.dtype(math)

    ftype, fmath = pick("forward", None)
    btype, bmath = pick("backward", np.float32 if lp.HasField("transform_param") else None)
    return ftype, btype, fmath, bmath


class Hooks(list):
    """Per-layer callbacks `fn(layer_index)`; `net.after_backward(fn)` (pycaffe) or `.append(fn)` adds one."""

    def __call__(self, fn):
        self.append(fn)


def _machine_memory():
    """Bytes of host memory of this machine: the bound on a net's blobs (their host copies; on a GPU, Large
    Model Support may page device memory, so the device's size is no bound)."""
    import psutil
    return psutil.virtual_memory().total


def load_net_param(source):
    """A NetParameter from a path, prototxt text in a NetParameter, or a message (upgraded if needed)."""
    from . import io as cio
    if isinstance(source, caffe_pb2.NetParameter):
        return cio.upgrade_net_param(source)
    return cio.read_net_param(str(source))


class Net:
    """pycaffe-compatible Net: `Net(proto, phase)`, `Net(proto, weights, phase)`, `Net(proto, phase, weights=)`."""

    def __init__(self, network, *args, phase=None, weights=None, level=0, stages=(), stage=None):
        rest = list(args)
        if rest and isinstance(rest[0], str):
            weights = rest.pop(0)
        if rest:
            phase = rest.pop(0)
        if rest:
            raise TypeError("Net(network_file, [weights], phase, level=, stages=, weights=)")
        param = load_net_param(network)
        param.state.phase = TEST if phase is None else phase
        if stage is not None:
            stages = [stage] if isinstance(stage, str) else stage
        if stages:
            del param.state.stage[:]
            param.state.stage.extend(stages)
        if level:
            param.state.level = level
        self._source = str(network) if not isinstance(network, caffe_pb2.NetParameter) else "<NetParameter>"
        try:
            self._init(param)
        except BaseException:
            self.close()          # a failed build must not leave data layers' threads and databases behind
            raise
        if weights:
            self.copy_from(weights)

    def close(self):
        """Stop the data layers' prefetch threads and close their databases (the net cannot forward after)."""
        for layer in getattr(self, "layers", ()):
            close = getattr(layer, "close", None)
            if close is not None:
                close()

    # --- construction (Caffe's Net::Init) ----------------------------------------------------------
    def _init(self, in_param):
        self.phase = in_param.state.phase
        param = insert_splits(filter_net(in_param))
        self.param = param
        self.name = param.name
        self.debug_info = param.debug_info
        self.layers = []
        self._layer_names = []
        self._blobs = []
        self._blob_names = []
        self._blob_index = {}
        self.blob_need_backward = []
        self.bottom_ids, self.top_ids, self.param_ids = [], [], []
        self.bottom_need_backward = []
        self.layer_need_backward = []
        self._blob_loss_weights = []
        self._input_ids, self._output_ids = [], []
        self._params, self.param_owners, self.param_display_names = [], [], []
        self.param_layer_indices = []
        self._param_names_index = {}
        self.learnable_params, self.learnable_param_ids = [], []
        self.params_lr, self.params_weight_decay = [], []
        self.has_params_lr, self.has_params_decay = [], []
        self.before_forward, self.after_forward = Hooks(), Hooks()
        self.before_backward, self.after_backward = Hooks(), Hooks()
        available = OrderedDict()
        memory = params_memory = 0
        machine = _machine_memory()
        for layer_id, lp in enumerate(param.layer):
            if not lp.HasField("phase"):
                lp.phase = self.phase
            if lp.propagate_down and len(lp.propagate_down) != len(lp.bottom):
                raise NetError("layer '%s': propagate_down must be given once per bottom (%d bottoms, %d values)"
                               % (lp.name, len(lp.bottom), len(lp.propagate_down)))
            inherit_net_defaults(lp, param)
            fwd, bwd, fmath, bmath = _precision(lp, param)
            layer = create_layer(lp, dtype=fwd, bwd_dtype=bwd)
            layer.set_math(fmath, bmath)
            self.layers.append(layer)
            self._layer_names.append(lp.name)
            self.bottom_ids.append([])
            self.top_ids.append([])
            self.bottom_need_backward.append([])
            need_backward = False
            for j in range(len(lp.bottom)):
                need_backward |= self._append_bottom(lp, layer_id, j, available)
            for j in range(len(lp.top)):
                self._append_top(lp, layer_id, j, available, fwd, bwd)
            if layer.auto_top_blobs:
                needed = max(layer.min_top, layer.exact_num_top)
                for j in range(len(lp.top), needed):
                    self._append_top(lp, layer_id, j, None, fwd, bwd)
            bottom = [self._blobs[i] for i in self.bottom_ids[layer_id]]
            top = [self._blobs[i] for i in self.top_ids[layer_id]]
            if lp.type == "Input":
                self._input_ids.extend(self.top_ids[layer_id])
            try:
                layer.setup(bottom, top)
            except (ValueError, IndexError, TypeError, ZeroDivisionError, OverflowError, MemoryError) as e:
                raise NetError("layer '%s' (%s): setup failed for bottoms %s: %s: %s"
                               % (lp.name, lp.type, [b.name + " " + str(b.shape) for b in bottom],
                                  type(e).__name__, e)) from None
            except NetError as e:
                if "layer '%s'" % lp.name in str(e):
                    raise
                raise NetError("layer '%s' (%s): %s" % (lp.name, lp.type, e)) from None
            for j, tid in enumerate(self.top_ids[layer_id]):
                self._blob_loss_weights[tid] = layer.loss(j)
                t = self._blobs[tid]
                log.info("Top shape: %s", t.shape_string())
                if layer.loss(j):
                    log.info("    with loss weight %g", layer.loss(j))
                memory += t.count * t.dtype.itemsize
            params_memory += sum(b.count * b.dtype.itemsize for b in layer.blobs)
            if memory + params_memory > machine:
                raise NetError("layer '%s' (%s): the net needs %.3g GB for its tops and parameters up to this layer "
                               "(tops %s), more than the %.3g GB of memory of this machine"
                               % (lp.name, lp.type, (memory + params_memory) / 1e9,
                                  ", ".join(t.shape_string() for t in top), machine / 1e9))
            if len(lp.param) > len(layer.blobs):
                raise NetError("layer '%s': too many params specified (%d param specs, the layer has %d blobs)"
                               % (lp.name, len(lp.param), len(layer.blobs)))
            layer.param_propagate_down = []
            for pid in range(len(layer.blobs)):
                spec = lp.param[pid] if pid < len(lp.param) else caffe_pb2.ParamSpec()
                pneed = spec.lr_mult != 0
                need_backward |= pneed
                layer.param_propagate_down.append(pneed)
            self.param_ids.append([])
            for pid in range(len(layer.blobs)):
                self._append_param(layer_id, pid)
            self.layer_need_backward.append(need_backward)
            if need_backward:
                for tid in self.top_ids[layer_id]:
                    self.blob_need_backward[tid] = True
        self._backward_analysis(param)
        pair_batchnorm_scale(self.layers, self.bottom_ids, self.top_ids)
        self._output_ids = [self._blob_index[name] for name in available]
        for i in self._output_ids:
            log.info("This network produces output %s", self._blob_names[i])
        self._share_weights()
        self.memory_used = memory
        log.info("Network initialization done.")
        log.info("Memory required for data: %d", memory)
        self._build_pycaffe_views()
        from . import lms
        self.lms = lms.attach(self)
        self._sharing = {"_diff": None, "_data": None}

    @property
    def share_diffs(self):
        """True when intermediate blobs' diffs share buffers in backward (`distcaffe.blob_sharing`): the memory
        of the diffs live at once instead of every blob's; afterwards only the diffs of the net's inputs,
        outputs and parameters keep their values. Off by default; `distcaffe train` turns it on."""
        return self._sharing["_diff"] is not None

    @share_diffs.setter
    def share_diffs(self, on):
        self._share("_diff", on)

    @property
    def share_data(self):
        """True when blobs' data that no backward reads (a Convolution's output feeding an Eltwise SUM, ...)
        share buffers in forward: only the net's inputs, outputs and the data backward needs keep their values
        after forward. Off by default; `distcaffe train` turns it on."""
        return self._sharing["_data"] is not None

    @share_data.setter
    def share_data(self, on):
        self._share("_data", on)

    def _share(self, field, on):
        """Large Model Support manages its own memory, so under it nothing is shared."""
        from .blob_sharing import SharedBuffers
        if on and self.lms is not None:
            log.info("Blob sharing stays off: Large Model Support manages this net's memory")
            on = False
        if on and self._sharing[field] is None:
            self._sharing[field] = SharedBuffers(self, field)
        elif not on and self._sharing[field] is not None:
            self._sharing[field].release()
            self._sharing[field] = None

    def _append_bottom(self, lp, layer_id, j, available):
        name = lp.bottom[j]
        if name not in available:
            raise NetError("layer '%s': unknown bottom blob '%s' (bottom index %d)" % (lp.name, name, j))
        bid = self._blob_index[name]
        log.info("%s <- %s", lp.name, name)
        self.bottom_ids[layer_id].append(bid)
        del available[name]
        need = self.blob_need_backward[bid]
        if lp.propagate_down:
            need = bool(lp.propagate_down[j])
        self.bottom_need_backward[layer_id].append(need)
        return need

    def _append_top(self, lp, layer_id, j, available, dtype, diff_dtype):
        name = lp.top[j] if j < len(lp.top) else "(automatic)"
        if available is not None and j < len(lp.bottom) and name == lp.bottom[j]:
            log.info("%s -> %s (in-place)", lp.name, name)
            self.top_ids[layer_id].append(self._blob_index[name])
        elif available is not None and name in self._blob_index:
            raise NetError("layer '%s': top blob '%s' produced by multiple sources (only in-place layers may "
                           "reuse a name, as top %d = bottom %d)" % (lp.name, name, j, j))
        else:
            log.info("%s -> %s", lp.name, name)
            bid = len(self._blobs)
            self._blobs.append(Blob(dtype=dtype, name=name, diff_dtype=diff_dtype))
            self._blob_names.append(name)
            self.blob_need_backward.append(False)
            self._blob_loss_weights.append(0.0)
            if available is not None:
                self._blob_index[name] = bid
            self.top_ids[layer_id].append(bid)
        if available is not None:
            available[name] = True

    def _append_param(self, layer_id, pid):
        layer = self.layers[layer_id]
        lp = layer.layer_param
        spec = lp.param[pid] if pid < len(lp.param) else caffe_pb2.ParamSpec()
        pname = spec.name
        self.param_display_names.append(pname or str(pid))
        net_pid = len(self._params)
        self._params.append(layer.blobs[pid])
        self.param_ids[layer_id].append(net_pid)
        self.param_layer_indices.append((layer_id, pid))
        if not pname or pname not in self._param_names_index:
            self.param_owners.append(-1)
            if pname:
                self._param_names_index[pname] = net_pid
            self.learnable_param_ids.append(len(self.learnable_params))
            self.learnable_params.append(layer.blobs[pid])
            self.has_params_lr.append(spec.HasField("lr_mult"))
            self.has_params_decay.append(spec.HasField("decay_mult"))
            self.params_lr.append(spec.lr_mult)
            self.params_weight_decay.append(spec.decay_mult)
            return
        owner = self._param_names_index[pname]
        self.param_owners.append(owner)
        olayer, opid = self.param_layer_indices[owner]
        log.info("Sharing parameters '%s' owned by layer '%s', param index %d", pname, self._layer_names[olayer], opid)
        this, own = layer.blobs[pid], self.layers[olayer].blobs[opid]
        permissive = spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE
        if (this.count != own.count) if permissive else (this.shape != own.shape):
            raise NetError("cannot share param '%s' owned by layer '%s' with layer '%s'; shape mismatch. Owner layer "
                           "param shape is %s; sharing layer shape is %s" % (pname, self._layer_names[olayer], lp.name,
                                                                             own.shape_string(), this.shape_string()))
        lid = self.learnable_param_ids[owner]
        self.learnable_param_ids.append(lid)
        for has, vals, field in ((self.has_params_lr, self.params_lr, "lr_mult"),
                                 (self.has_params_decay, self.params_weight_decay, "decay_mult")):
            if spec.HasField(field):
                if has[lid] and getattr(spec, field) != vals[lid]:
                    raise NetError("shared param '%s' has mismatched %s (layer '%s')" % (pname, field, lp.name))
                has[lid] = True
                vals[lid] = getattr(spec, field)

    def _backward_analysis(self, param):
        under_loss, skip = set(), set()
        for lid in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[lid]
            contributes, skip_down = False, True
            for j, tid in enumerate(self.top_ids[lid]):
                name = self._blob_names[tid]
                if layer.loss(j) or name in under_loss:
                    contributes = True
                if name not in skip:
                    skip_down = False
                if contributes and not skip_down:
                    break
            if self.layer_need_backward[lid] and skip_down:
                self.layer_need_backward[lid] = False
                self.bottom_need_backward[lid] = [False] * len(self.bottom_need_backward[lid])
            if not contributes:
                self.layer_need_backward[lid] = False
            log.info("%s %s", self._layer_names[lid],
                     "needs backward computation." if self.layer_need_backward[lid]
                     else "does not need backward computation.")
            for j, bid in enumerate(self.bottom_ids[lid]):
                name = self._blob_names[bid]
                if contributes:
                    under_loss.add(name)
                else:
                    self.bottom_need_backward[lid][j] = False
                if not self.bottom_need_backward[lid][j]:
                    skip.add(name)
        if param.force_backward:
            for lid, layer in enumerate(self.layers):
                self.layer_need_backward[lid] = True
                for j, bid in enumerate(self.bottom_ids[lid]):
                    need = self.bottom_need_backward[lid][j] or layer.allow_force_backward(j)
                    self.bottom_need_backward[lid][j] = need
                    self.blob_need_backward[bid] = self.blob_need_backward[bid] or need
                layer.param_propagate_down = [True] * len(layer.blobs)

    def _share_weights(self):
        for i, owner in enumerate(self.param_owners):
            if owner >= 0:
                self._params[i].share_data(self._params[owner])
                self._params[i].share_diff(self._params[owner])

    def _build_pycaffe_views(self):
        self.blobs = OrderedDict((n, self._blobs[i]) for n, i in self._blob_index.items())
        self.layer_dict = OrderedDict(zip(self._layer_names, self.layers))
        self.params = OrderedDict((name, layer.blobs) for name, layer in zip(self._layer_names, self.layers)
                                  if layer.blobs)
        self.top_names = OrderedDict((self._layer_names[i], [self._blob_names[b] for b in ids])
                                     for i, ids in enumerate(self.top_ids))
        self.bottom_names = OrderedDict((self._layer_names[i], [self._blob_names[b] for b in ids])
                                        for i, ids in enumerate(self.bottom_ids))
        self.inputs = [self._blob_names[i] for i in self._input_ids]
        self.outputs = [self._blob_names[i] for i in self._output_ids]
        self.blob_loss_weights = self.blob_loss_weights_by_name = OrderedDict(
            (self._blob_names[i], w) for i, w in enumerate(self._blob_loss_weights))

    # --- running ---------------------------------------------------------------------------------
    def _bottom(self, i):
        return [self._blobs[b] for b in self.bottom_ids[i]]

    def _top(self, i):
        return [self._blobs[b] for b in self.top_ids[i]]

    def layer_index(self, name):
        try:
            return self._layer_names.index(name)
        except ValueError:
            raise NetError("net '%s' has no layer named '%s'" % (self.name, name)) from None

    def forward_from_to(self, start, end):
        """Run layers start..end (inclusive); returns the summed weighted loss (Caffe's ForwardFromTo)."""
        return float(self.forward_device(start, end))

    def forward_device(self, start, end):
        """forward_from_to, the loss left as a 0-d array of the current device (no host sync on a GPU)."""
        if self._sharing["_data"] is not None and start == 0:
            self._sharing["_data"].apply()
        loss = 0.0
        for i in range(start, end + 1):
            for cb in self.before_forward:
                cb(i)
            layer, bottom, top = self.layers[i], self._bottom(i), self._top(i)
            layer.math = layer.forward_math
            try:
                layer.reshape(bottom, top)
                layer.forward(bottom, top)
            except (ValueError, IndexError, ZeroDivisionError, FloatingPointError, MemoryError) as e:
                raise NetError("layer '%s' (%s): forward failed for bottoms %s: %s: %s"
                               % (layer.name, layer.type, ", ".join(b.name + " " + b.shape_string() for b in bottom),
                                  type(e).__name__, e)) from None
            for j, t in enumerate(top):
                w = layer.loss(j)
                if w:
                    loss = loss + w * t.dev_data.sum(dtype=np.float32 if t.dtype == np.float16 else t.dtype)
            if self.debug_info:
                self._forward_debug(i)
            for cb in self.after_forward:
                cb(i)
        return loss

    def backward_from_to(self, start, end):
        """Backward through layers start down to end (inclusive)."""
        if self._sharing["_diff"] is not None:
            self._sharing["_diff"].apply()
        for i in range(start, end - 1, -1):
            for cb in self.before_backward:
                cb(i)
            if self.layer_need_backward[i]:
                self.layers[i].math = self.layers[i].backward_math
                self.layers[i].backward(self._top(i), self.bottom_need_backward[i], self._bottom(i))
                if self.debug_info:
                    self._backward_debug(i)
            for cb in self.after_backward:
                cb(i)

    # pycaffe's _caffe names that BVLC's pycaffe.py (and net-surgery scripts) build on
    _forward, _backward = forward_from_to, backward_from_to

    def _top_ids(self, i):
        return list(self.top_ids[i])

    def _bottom_ids(self, i):
        return list(self.bottom_ids[i])

    @property
    def _inputs(self):
        return list(self._input_ids)

    @property
    def _outputs(self):
        return list(self._output_ids)

    def forward_prefilled(self):
        return self.forward_from_to(0, len(self.layers) - 1)

    def forward_backward(self):
        """One training pass; returns the loss (Caffe's Net::ForwardBackward)."""
        return float(self.forward_backward_device())

    def forward_backward_device(self):
        """forward_backward with the loss left on the device (the solver reads it only to display it)."""
        loss = self.forward_device(0, len(self.layers) - 1)
        self.backward_from_to(len(self.layers) - 1, 0)
        return loss

    def clear_param_diffs(self):
        for i, p in enumerate(self.learnable_params):
            with self.memory_step("clear", i):
                p.mut_dev_diff[...] = 0

    def memory_step(self, kind, i):
        """Bracket device work on learnable param i outside the layer loop, for Large Model Support."""
        return self.lms.memory_step(kind, i) if self.lms is not None else contextlib.nullcontext()

    def reshape(self):
        for i, layer in enumerate(self.layers):
            layer.reshape(self._bottom(i), self._top(i))

    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """pycaffe forward: optional input arrays by name; returns {output name: host array}."""
        blobs = list(blobs or [])
        start_ind = self.layer_index(start) if start is not None else 0
        if end is not None:
            end_ind = self.layer_index(end)
            outputs = set(self.top_names[end] + blobs)
        else:
            end_ind = len(self.layers) - 1
            outputs = set(self.outputs + blobs)
        if kwargs:
            if set(kwargs) != set(self.inputs):
                raise NetError("input blob arguments %s do not match net inputs %s" % (sorted(kwargs), self.inputs))
            for name, arr in kwargs.items():
                self._fill("input", name, arr, "data")
        self.forward_from_to(start_ind, end_ind)
        return {out: self.blobs[out].data for out in outputs}

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        """pycaffe backward: optional output diffs by name; returns {input name: host diff}."""
        diffs = list(diffs or [])
        start_ind = self.layer_index(start) if start is not None else len(self.layers) - 1
        if end is not None:
            end_ind = self.layer_index(end)
            outputs = set(self.bottom_names[end] + diffs)
        else:
            end_ind = 0
            outputs = set(self.inputs + diffs)
        if kwargs:
            if set(kwargs) != set(self.outputs):
                raise NetError("top diff arguments %s do not match net outputs %s" % (sorted(kwargs), self.outputs))
            for name, arr in kwargs.items():
                self._fill("top diff", name, arr, "diff")
        self.backward_from_to(start_ind, end_ind)
        return {out: self.blobs[out].diff for out in outputs}

    def _fill(self, what, name, arr, field):
        """Copy a caller's array into blob `name`'s data or diff; the shapes must agree (numpy broadcasting
        into the blob's shape is allowed, as pycaffe allows it), else one line naming the blob and both shapes."""
        blob = self.blobs[name]
        arr = np.asarray(arr)
        if arr.ndim == 0 or arr.shape[0] != blob.shape[0]:
            raise NetError("%s '%s' is not batch sized: the array has shape %s, blob '%s' has %s"
                           % (what, name, "x".join(map(str, arr.shape)) or "()", name, "x".join(map(str, blob.shape))))
        try:
            fits = np.broadcast_shapes(arr.shape, blob.shape) == blob.shape
        except ValueError:
            fits = False
        if not fits:
            raise NetError("%s '%s': the array has shape %s but blob '%s' has shape %s; reshape the blob first "
                           "(net.blobs['%s'].reshape(%s) then net.reshape()) or resize/crop the input"
                           % (what, name, "x".join(map(str, arr.shape)), name, "x".join(map(str, blob.shape)), name,
                              ", ".join(map(str, arr.shape))))
        getattr(blob, field)[...] = arr

    def _batch(self, arrays):
        """Split {name: array of N items} into the net's batches; the last is padded with zeros (pycaffe)."""
        num = len(next(iter(arrays.values())))
        batch = next(iter(self.blobs.values())).shape[0]
        for start in range(0, num, batch):
            chunk = {name: np.asarray(a[start:start + batch]) for name, a in arrays.items()}
            short = batch - len(next(iter(chunk.values())))
            if short:
                chunk = {name: np.concatenate([a, np.zeros((short,) + a.shape[1:], a.dtype)])
                         for name, a in chunk.items()}
            yield chunk

    @staticmethod
    def _collect(batches, total):
        """Stack per-batch {name: array} results and drop the padding past `total` items."""
        out = {}
        for result in batches:
            for name, arr in result.items():
                out.setdefault(name, []).append(arr)
        return {name: np.concatenate(parts)[:total] for name, parts in out.items()}

    def forward_all(self, blobs=None, **kwargs):
        """pycaffe forward_all: run the inputs in batches of the net's batch size; {output: stacked array}."""
        if not kwargs:
            return self.forward(blobs)
        total = len(next(iter(kwargs.values())))
        return self._collect((_copies(self.forward(blobs=blobs, **chunk)) for chunk in self._batch(kwargs)), total)

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """pycaffe forward_backward_all: inputs and output diffs in batches; ({blob: data}, {blob: diff})."""
        fwd = {k: v for k, v in kwargs.items() if k in self.inputs}
        bwd = {k: v for k, v in kwargs.items() if k in self.outputs}
        outs, grads = [], []
        for fb, bb in zip_longest(self._batch(fwd) if fwd else (), self._batch(bwd) if bwd else (), fillvalue={}):
            outs.append(_copies(self.forward(blobs=blobs, **fb)))
            grads.append(_copies(self.backward(diffs=diffs, **bb)))
        total = len(next(iter(kwargs.values()))) if kwargs else None
        return self._collect(outs, total), self._collect(grads, total)

    def set_input_arrays(self, data, labels):
        """pycaffe's Net.set_input_arrays: feed arrays to the first layer, which must be MemoryData."""
        if not self.layers or self.layers[0].type != "MemoryData":
            raise NetError("set_input_arrays may only be called if the first layer is a MemoryData layer")
        self.layers[0].set_input_arrays(data, labels)

    _set_input_arrays = set_input_arrays

    # --- weights ---------------------------------------------------------------------------------
    def copy_trained_layers_from(self, source, where="the weights file"):
        """Copy parameter blobs from a NetParameter by layer name (Caffe's CopyTrainedLayersFrom); returns the
        names of the layers copied and of the source layers with blobs that matched none here."""
        from .io import blobproto_to_array
        found = []
        for src in source.layer:
            where_layer = "%s: layer '%s'" % (where, src.name)
            arrays = [blobproto_to_array(b, where=where_layer) for b in src.blobs]
            found.append((src.name, self._copy_layer(src.name, arrays, [_is_legacy(b) for b in src.blobs], where),
                          bool(arrays)))
        return [n for n, copied, _ in found if copied], [n for n, copied, has in found if has and not copied]

    def copy_trained_layers_from_hdf5(self, path):
        """Copy parameter arrays from a Caffe .caffemodel.h5 (`data/<layer>/<i>`) by layer name; returns the layers
        copied and the source layers that matched none here."""
        from .io import read_net_hdf5
        found = [(name, self._copy_layer(name, arrays, [False] * len(arrays), path))
                 for name, arrays in read_net_hdf5(path).items()]
        return [n for n, copied in found if copied], [n for n, copied in found if not copied]

    def _copy_layer(self, name, arrays, legacy, where):
        """Copy one source layer's arrays into this net's layer of that name; counts and shapes must match
        (legacy 4-D blobs match on their trailing dims, as Caffe's ShapeEquals)."""
        target = self.layer_dict.get(name)
        if target is None:
            log.info("Ignoring source layer %s", name)
            return False
        log.info("Copying source layer %s #blobs=%d", name, len(arrays))
        if len(target.blobs) != len(arrays):
            raise NetError("incompatible number of blobs for layer '%s': %s has %d, the net has %d"
                           % (name, where, len(arrays), len(target.blobs)))
        for j, (tb, arr, old) in enumerate(zip(target.blobs, arrays, legacy)):
            if not _shape_equals(tb.shape, arr.shape, old):
                raise NetError("cannot copy param %d weights from layer '%s'; shape mismatch. Source param shape "
                               "is %s; target param shape is %s (in %s). To learn this layer's parameters from "
                               "scratch rather than copying from a saved net, rename the layer."
                               % (j, name, " ".join(map(str, arr.shape)), tb.shape_string(), where))
            tb.data[...] = arr.reshape(tb.shape)
        return True

    def load_hdf5(self, path):
        """pycaffe's Net.load_hdf5: weights from a .caffemodel.h5 (Caffe's CopyTrainedLayersFromHDF5)."""
        self.copy_trained_layers_from_hdf5(str(path))

    def copy_from(self, path, strict=None):
        """Load weights from a .caffemodel (binary NetParameter) or a .caffemodel.h5, by layer name. Source
        layers with weights that match no layer here, and layers here whose parameters the file leaves as
        initialised, are listed in one warning, or one error when `strict` (default: DISTCAFFE_STRICT_WEIGHTS=1)
        -- a damaged layer name must not silently drop trained weights."""
        from .io import read_net_binary
        path = str(path)
        if path.endswith(".h5"):
            copied, unmatched = self.copy_trained_layers_from_hdf5(path)
        else:
            copied, unmatched = self.copy_trained_layers_from(read_net_binary(path), path)
        untrained = [layer.name for layer in self.layers if layer.blobs and layer.name not in copied]
        if not unmatched and not untrained:
            return
        parts = (["layers of the file that match no layer of net '%s': %s" % (self.name, ", ".join(unmatched))]
                 if unmatched else []) + (["layers left untrained: %s" % ", ".join(untrained)] if untrained else [])
        message = "%s: %s" % (path, "; ".join(parts))
        if strict if strict is not None else os.environ.get("DISTCAFFE_STRICT_WEIGHTS") == "1":
            raise NetError(message + " (strict weights loading)")
        log.warning("%s", message)

    def to_proto(self, write_diff=False, old_format=False):
        """NetParameter with every layer and its blobs (Caffe's Net::ToProto)."""
        out = caffe_pb2.NetParameter()
        out.name = self.name
        for layer in self.layers:
            out.layer.add().CopyFrom(layer.to_proto(write_diff, old_format))
        return out

    def save(self, path, write_diff=False, old_format=False):
        from .io import write_net_binary
        write_net_binary(self.to_proto(write_diff, old_format), str(path))

    def save_hdf5(self, path, write_diff=False):
        from .io import write_net_hdf5
        write_net_hdf5(str(path), [(layer.name, [b.data for b in layer.blobs]) for layer in self.layers],
                       diffs=[(layer.name, [b.diff for b in layer.blobs]) for layer in self.layers] if write_diff
                       else None)

    def share_with(self, other):
        """Share parameter data with another net of the same layers (Caffe's ShareTrainedLayersWith)."""
        for layer in other.layers:
            target = self.layer_dict.get(layer.name)
            if target is None:
                continue
            if len(target.blobs) != len(layer.blobs):
                raise NetError("incompatible number of blobs for layer '%s'" % layer.name)
            for tb, sb in zip(target.blobs, layer.blobs):
                if tb.shape != sb.shape:
                    raise NetError("cannot share param of layer '%s': shape %s vs %s" % (layer.name, tb.shape,
                                                                                          sb.shape))
                tb.share_data(sb)

    # --- debug info ------------------------------------------------------------------------------
    def _forward_debug(self, i):
        for tid in self.top_ids[i]:
            b = self._blobs[tid]
            log.info("    [Forward] Layer %s, top blob %s data: %g", self._layer_names[i], b.name,
                     float(np.abs(backend.to_host(b.dev_data)).mean()) if b.count else 0.0)

    def _backward_debug(self, i):
        for j, bid in enumerate(self.bottom_ids[i]):
            if self.bottom_need_backward[i][j]:
                b = self._blobs[bid]
                log.info("    [Backward] Layer %s, bottom blob %s diff: %g", self._layer_names[i], b.name,
                         float(np.abs(backend.to_host(b.dev_diff)).mean()) if b.count else 0.0)


def _copies(arrays):
    """{name: copy} of a pass's {name: blob view}, which the next pass would overwrite."""
    return {name: arr.copy() for name, arr in arrays.items()}


def _is_legacy(blobproto):
    """True for a BlobProto with the old num/channels/height/width fields instead of `shape`."""
    return any(blobproto.HasField(f) for f in ("num", "channels", "height", "width"))


def _shape_equals(shape, arr_shape, legacy):
    """Caffe's Blob::ShapeEquals: legacy 4-D protos match on the trailing dims padded with ones."""
    if legacy:
        if len(shape) > 4:
            return False
        return tuple((1,) * (4 - len(shape)) + tuple(shape)) == tuple(arr_shape) or tuple(shape) == tuple(arr_shape)
    return tuple(shape) == tuple(arr_shape)
