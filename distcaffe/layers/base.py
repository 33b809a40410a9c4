"""Layer base classes and the registry keyed by Caffe `type` strings.

Protocol (Caffe's): `setup` once (blob-count checks, `layer_setup`, `reshape`, loss weights), then per pass
`reshape` + `forward(bottom, top)` and `backward(top, propagate_down, bottom)`. Rules every layer follows:
- math uses `self.xp` (numpy or cupy), never numpy directly, so it runs on both;
- tops are written through `top[i].mut_dev_data`, bottom diffs through `bottom[i].mut_dev_diff` (overwritten);
- parameter diffs ACCUMULATE (`+=`), as Caffe's GEMMs with beta=1: the solver zeroes them each iteration,
  which is what makes `iter_size` and shared parameters work.
"""
import numpy as np

from .. import backend
from ..blob import Blob
from ..errors import NetError

_REGISTRY = {}


def register(*type_names):
    """Class decorator: make the layer constructible by its Caffe type string(s)."""
    def deco(cls):
        for name in type_names:
            if name in _REGISTRY and _REGISTRY[name] is not cls:
                raise RuntimeError("layer type %s registered twice" % name)
            _REGISTRY[name] = cls
        cls.type = type_names[0]
        return cls
    return deco


def layer_types():
    return sorted(_REGISTRY)


def layer_class(type_name):
    return _REGISTRY.get(type_name)


def _trt_advice(lp):
    tp = lp.trt_param
    return ("NVCaffe's TRT layer runs a deploy net through TensorRT, which distcaffe does not have; run that "
            "deploy net itself instead (trt_param.deploy '%s' with weights trt_param.model '%s', e.g. "
            "`distcaffe test -model <net with the data layer + deploy layers> -weights %s`)"
            % (tp.deploy, tp.model, tp.model or "<model>"))


_UNAVAILABLE = {"TRT": _trt_advice}        # vendor-runtime layers: a clear error saying what to use instead


def create_layer(layer_param, dtype=np.float32, bwd_dtype=None):
    """Instantiate the layer for a LayerParameter; an unknown type names the layer and the known types."""
    cls = _REGISTRY.get(layer_param.type)
    if cls is None and layer_param.type in _UNAVAILABLE:
        raise NetError("layer '%s' (%s): %s" % (layer_param.name, layer_param.type,
                                                _UNAVAILABLE[layer_param.type](layer_param)))
    if cls is None:
        raise NetError("layer '%s': unknown layer type '%s' (known types: %s)"
                       % (layer_param.name, layer_param.type, ", ".join(layer_types())))
    return cls(layer_param, dtype=dtype, bwd_dtype=bwd_dtype)


class Layer:
    """Base of every layer. Subclasses set the blob-count class attributes and implement the protocol."""

    type = ""
    exact_num_bottom = -1
    min_bottom = -1
    max_bottom = -1
    exact_num_top = -1
    min_top = -1
    max_top = -1
    equal_num_bottom_top = False
    auto_top_blobs = False
    precise = False          # accumulates in fp32 whatever the math type (BN, LRN, softmax, losses, reductions)
    holds_bottom_diff = False  # forward leaves values in a diff that backward reads: diff sharing skips its blobs
    tops_share_data = False    # forward makes every top share bottom[0]'s data (Split)

    def __init__(self, layer_param, dtype=np.float32, bwd_dtype=None):
        self.layer_param = layer_param
        self.name = layer_param.name
        self.phase = layer_param.phase
        self.dtype = np.dtype(dtype)                       # forward storage type (tops, params)
        self.bwd_dtype = np.dtype(bwd_dtype or dtype)      # backward storage type (diffs)
        self.set_math(self.dtype, self.bwd_dtype)
        self.blobs = []                                    # parameter blobs
        self.param_propagate_down = []
        self.loss_weights = []

    # --- helpers for implementations --------------------------------------------------------------
    @property
    def xp(self):
        return backend.xp()

    def set_math(self, forward_math, backward_math):
        """NVCaffe's forward_math / backward_math: the dtypes forward and backward compute in (on CPU and
        GPU alike); the net switches `math` between them around each pass."""
        self.forward_math, self.backward_math = np.dtype(forward_math), np.dtype(backward_math)
        self.math = self.forward_math

    @property
    def mdtype(self):
        """The dtype this pass computes in: the math type, or its fp32 accumulator for `precise` layers."""
        return backend.accum_dtype(self.math) if self.precise else self.math

    def m(self, arr):
        """`arr` in the math dtype (no copy when it already is)."""
        return arr.astype(self.mdtype, copy=False)

    def error(self, msg):
        return NetError("layer '%s' (%s): %s" % (self.name, self.type, msg))

    def check(self, cond, msg):
        if not cond:
            raise self.error(msg)

    def check_values(self, bad, values, describe):
        """A layer error naming the first of `values` where `bad` holds: `describe(value, flat_index)` gives
        the message. Read back at once on CPU, at the solver's next display on a GPU (no host sync)."""
        if not bad.size:
            return
        i = self.xp.argmax(bad.reshape(-1))
        first = values.reshape(-1)[i]
        backend.check_later(bad.any(), lambda: self.error(describe(float(first), int(i))))

    def new_param(self, shape, filler=None, dtype=None):
        """A parameter blob of this layer's storage types (or `dtype` for both), filled by a FillerParameter."""
        blob = Blob(tuple(shape), dtype=dtype or self.dtype, name="%s[%d]" % (self.name, len(self.blobs)),
                    diff_dtype=dtype or self.bwd_dtype)
        if filler is not None:
            from ..fillers import fill
            fill(blob, filler, what="layer '%s' param %d" % (self.name, len(self.blobs)))
        return blob

    # --- Caffe protocol ---------------------------------------------------------------------------
    def setup(self, bottom, top):
        self.check_blob_counts(bottom, top)
        self.layer_setup(bottom, top)
        self.reshape(bottom, top)
        self.set_loss_weights(top)

    def layer_setup(self, bottom, top):
        """One-time setup: read parameters, create parameter blobs."""

    def reshape(self, bottom, top):
        raise NotImplementedError

    def forward(self, bottom, top):
        raise NotImplementedError

    def backward(self, top, propagate_down, bottom):
        """Default: nothing to propagate (layers with no differentiable bottoms and no parameters)."""
        if any(propagate_down):
            raise self.error("cannot backpropagate to its inputs")

    def backward_reads_data(self, bottom, top):
        """(bottom indices, top indices) whose data this layer's backward reads; data no backward reads may
        share memory once forward is past it (blob_sharing). Default: all of them."""
        return range(len(bottom)), range(len(top))

    def allow_force_backward(self, bottom_index):
        return True

    def loss(self, top_index):
        return self.loss_weights[top_index] if top_index < len(self.loss_weights) else 0.0

    def set_loss_weights(self, top):
        """Caffe's SetLossWeights: the top diff of a loss top holds its weight (the start of backward)."""
        weights = list(self.layer_param.loss_weight)
        if not weights:
            return
        if len(weights) != len(top):
            raise self.error("loss_weight must be unspecified or given once per top blob (%d tops, %d weights)"
                             % (len(top), len(weights)))
        self.loss_weights = [float(w) for w in weights]
        for w, t in zip(self.loss_weights, top):
            if w:
                t.mut_dev_diff[...] = w

    def check_blob_counts(self, bottom, top):
        nb, nt = len(bottom), len(top)

        def need(cond, what, n, have):
            if not cond:
                raise self.error("takes %s %d %s blob(s), got %d" % (what, n, have, nb if have == "bottom" else nt))

        if self.exact_num_bottom >= 0:
            need(nb == self.exact_num_bottom, "exactly", self.exact_num_bottom, "bottom")
        if self.min_bottom >= 0:
            need(nb >= self.min_bottom, "at least", self.min_bottom, "bottom")
        if self.max_bottom >= 0:
            need(nb <= self.max_bottom, "at most", self.max_bottom, "bottom")
        if self.exact_num_top >= 0:
            need(nt == self.exact_num_top, "exactly", self.exact_num_top, "top")
        if self.min_top >= 0:
            need(nt >= self.min_top, "at least", self.min_top, "top")
        if self.max_top >= 0:
            need(nt <= self.max_top, "at most", self.max_top, "top")
        if self.equal_num_bottom_top and nb != nt:
            raise self.error("needs as many top blobs as bottom blobs (%d bottom, %d top)" % (nb, nt))

    def to_proto(self, write_diff=False, old_format=False):
        """LayerParameter with the current parameter blobs (Caffe's Layer::ToProto)."""
        from ..proto import caffe_pb2
        lp = caffe_pb2.LayerParameter()
        lp.CopyFrom(self.layer_param)
        del lp.blobs[:]
        for b in self.blobs:
            lp.blobs.add().CopyFrom(b.to_proto(write_diff, old_format))
        return lp

    def __repr__(self):
        return "<%s layer '%s'>" % (self.type, self.name)


class NeuronLayer(Layer):
    """One bottom, one top of the same shape (may be in place)."""

    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])


class LossLayer(Layer):
    """Two bottoms (prediction, target) -> scalar loss; loss weight 1 unless the prototxt says otherwise."""

    exact_num_bottom = 2
    exact_num_top = 1
    auto_top_blobs = True
    precise = True

    def layer_setup(self, bottom, top):
        if not self.layer_param.loss_weight:
            self.layer_param.loss_weight.append(1.0)

    def reshape(self, bottom, top):
        self.check(bottom[0].shape[0] == bottom[1].shape[0],
                   "the data and label should have the same first dimension (%s vs %s: %s vs %s)"
                   % (bottom[0].name, bottom[1].name, bottom[0].shape_string(), bottom[1].shape_string()))
        top[0].reshape(())

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1
