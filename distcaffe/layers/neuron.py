"""Neuron layers: one bottom, one top of the same shape, elementwise (Caffe's NeuronLayer family).

Most are `_Pointwise`: `fn` gives the top from the bottom data, `grad` the bottom diff from the bottom data,
top data and top diff. In place, the bottom data *is* the top data, exactly as in Caffe, so each layer allows
in-place computation only where Caffe's formula stays right (it reads top data or a sign-preserving bottom).
"""
import math

import numpy as np

from .. import backend
from ..proto import caffe_pb2
from . import cpu_split, fastpath
from .base import NeuronLayer, register


def sigmoid(xp, x):
    """Caffe's sigmoid, 0.5 tanh(x/2) + 0.5: no overflow for any x."""
    return 0.5 * xp.tanh(0.5 * x) + 0.5


class _Pointwise(NeuronLayer):
    """y = fn(x) elementwise; bottom diff = grad(x, y, top diff)."""

    def fn(self, xp, x):
        raise NotImplementedError

    def grad(self, xp, x, y, dy):
        raise NotImplementedError

    def forward(self, bottom, top):
        top[0].mut_dev_data[...] = self.fn(self.xp, self.m(bottom[0].dev_data))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = self.m(bottom[0].dev_data)
        y = self.m(top[0].dev_data)
        dy = self.m(top[0].dev_diff)
        bottom[0].mut_dev_diff[...] = self.grad(self.xp, x, y, dy)


@register("AbsVal")
class AbsValLayer(_Pointwise):
    """y = |x|."""

    def reshape(self, bottom, top):
        self.check(top[0] is not bottom[0], "does not allow in-place computation")
        super().reshape(bottom, top)

    def fn(self, xp, x):
        return xp.abs(x)

    def grad(self, xp, x, y, dy):
        return xp.sign(x) * dy


@register("BNLL")
class BNLLLayer(_Pointwise):
    """Binomial normal log likelihood, y = log(1 + exp(x)), computed without overflow."""

    THRESHOLD = 50.0  # Caffe's kBNLL_THRESHOLD: exp() argument cap in backward

    def fn(self, xp, x):
        return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))

    def grad(self, xp, x, y, dy):
        e = xp.exp(xp.minimum(x, self.THRESHOLD))
        return dy * e / (e + 1)


@register("Clip")
class ClipLayer(_Pointwise):
    """y = max(min, min(x, max)); the gradient passes where min <= x <= max."""

    def layer_setup(self, bottom, top):
        p = self.layer_param.clip_param
        self.lo, self.hi = p.min, p.max

    def fn(self, xp, x):
        return xp.maximum(self.lo, xp.minimum(x, self.hi))

    def grad(self, xp, x, y, dy):
        return dy * ((x >= self.lo) & (x <= self.hi))


@register("ELU")
class ELULayer(_Pointwise):
    """y = lambda * (x > 0 ? x : alpha (exp(x) - 1)); NVCaffe's `lambda` (default 1) makes it SELU."""

    def layer_setup(self, bottom, top):
        p = self.layer_param.elu_param
        self.alpha, self.lam = p.alpha, getattr(p, "lambda")

    def fn(self, xp, x):
        return self.lam * xp.where(x > 0, x, self.alpha * xp.expm1(xp.minimum(x, 0)))

    def grad(self, xp, x, y, dy):
        return xp.where(x > 0, dy * self.lam, dy * (y + self.lam * self.alpha))


@register("Exp")
class ExpLayer(_Pointwise):
    """y = base^(shift + scale x) (base e when base = -1)."""

    def layer_setup(self, bottom, top):
        p = self.layer_param.exp_param
        self.check(p.base > 0 or p.base == -1, "base must be strictly positive or -1 (for e), got %g" % p.base)
        log_base = 1.0 if p.base == -1 else math.log(p.base)
        self.inner_scale = log_base * p.scale
        self.outer_scale = 1.0 if p.shift == 0 else (math.exp(p.shift) if p.base == -1 else p.base ** p.shift)

    def fn(self, xp, x):
        return self.outer_scale * xp.exp(self.inner_scale * x)

    def grad(self, xp, x, y, dy):
        return dy * y * self.inner_scale


@register("Log")
class LogLayer(_Pointwise):
    """y = log_base(shift + scale x) (natural log when base = -1)."""

    def layer_setup(self, bottom, top):
        p = self.layer_param.log_param
        self.check(p.base > 0 or p.base == -1, "base must be strictly positive or -1 (for e), got %g" % p.base)
        self.check(p.base != 1, "base 1 gives an infinite scale 1/log(1)")
        self.base_scale = 1.0 if p.base == -1 else 1.0 / math.log(p.base)
        self.scale, self.shift = p.scale, p.shift

    def fn(self, xp, x):
        return xp.log(self.scale * x + self.shift) * self.base_scale

    def grad(self, xp, x, y, dy):
        return dy * (self.scale * self.base_scale) / (self.scale * x + self.shift)


@register("Power")
class PowerLayer(_Pointwise):
    """y = (shift + scale x)^power, with Caffe's special cases for power 0, 1, 2 and shift 0."""

    def layer_setup(self, bottom, top):
        p = self.layer_param.power_param
        self.power, self.scale, self.shift = p.power, p.scale, p.shift
        self.diff_scale = p.power * p.scale

    def fn(self, xp, x):
        if self.diff_scale == 0:
            return xp.full_like(x, 1.0 if self.power == 0 else self.shift ** self.power)
        base = self.scale * x + self.shift
        return base if self.power == 1 else base ** self.power

    def grad(self, xp, x, y, dy):
        if self.diff_scale == 0:
            return xp.zeros_like(dy)
        if self.power == 1:
            return dy * self.diff_scale
        if self.power == 2:
            d = self.diff_scale * self.scale * x + self.diff_scale * self.shift
        elif self.shift == 0:
            d = self.power * (y / x)
        else:
            d = self.diff_scale * (y / (self.scale * x + self.shift))
        return dy * d


@register("ReLU")
class ReLULayer(_Pointwise):
    """y = max(x, 0) + negative_slope min(x, 0) (leaky when negative_slope != 0); the plain ReLU writes both
    passes straight into the top / bottom diff (no temporaries)."""

    def layer_setup(self, bottom, top):
        self.slope = self.layer_param.relu_param.negative_slope

    def fn(self, xp, x):
        y = xp.maximum(x, 0)
        return y + self.slope * xp.minimum(x, 0) if self.slope else y

    def grad(self, xp, x, y, dy):
        """dy where x > 0, else negative_slope * dy, in dy's dtype (a bool mask times a float would be fp64)."""
        if self.slope:
            return xp.where(x > 0, dy, dy * self.slope)
        return dy * (x > 0)

    def forward(self, bottom, top):
        if self.slope:
            return super().forward(bottom, top)
        xp = self.xp
        cpu_split.elementwise(lambda x, y: xp.maximum(x, 0, out=y), self.m(bottom[0].dev_data),
                              top[0].mut_dev_data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, x = self.m(top[0].dev_diff), self.m(bottom[0].dev_data)
        if self.slope:
            bottom[0].mut_dev_diff[...] = self.grad(self.xp, x, None, dy)
        else:                                            # straight into the bottom diff (in place or not)
            dx = bottom[0].mut_dev_diff
            loops = fastpath.loops(self.xp, dx.dtype, "pointwise_loops")
            if loops is not None and dy.dtype == dx.dtype == x.dtype and dx.flags.c_contiguous:
                loops.relu_diff(dy.reshape(-1), x.reshape(-1), dx.reshape(-1))
                return
            self.xp.multiply(dy, x > 0, out=dx)


@register("Sigmoid")
class SigmoidLayer(_Pointwise):
    """y = 1 / (1 + exp(-x))."""

    def fn(self, xp, x):
        return sigmoid(xp, x)

    def grad(self, xp, x, y, dy):
        return dy * y * (1 - y)


@register("TanH")
class TanHLayer(_Pointwise):
    """y = tanh(x)."""

    def fn(self, xp, x):
        return xp.tanh(x)

    def grad(self, xp, x, y, dy):
        return dy * (1 - y * y)


@register("Threshold")
class ThresholdLayer(_Pointwise):
    """y = 1 where x > threshold, else 0; not differentiable (backward is refused, as in Caffe)."""

    def layer_setup(self, bottom, top):
        self.threshold = self.layer_param.threshold_param.threshold

    def fn(self, xp, x):
        return x > self.threshold

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error("cannot backpropagate to its input (the step function has no gradient)")


@register("Swish")
class SwishLayer(NeuronLayer):
    """y = x sigmoid(beta x); keeps sigmoid(beta x) for backward, which then needs only the top (in place ok)."""

    def layer_setup(self, bottom, top):
        self.beta = self.layer_param.swish_param.beta

    def forward(self, bottom, top):
        x = self.m(bottom[0].dev_data)
        self.sig = sigmoid(self.xp, self.beta * x)
        top[0].mut_dev_data[...] = x * self.sig

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        by = self.beta * self.m(top[0].dev_data)
        bottom[0].mut_dev_diff[...] = self.m(top[0].dev_diff) * (by + self.sig * (1 - by))


@register("Dropout")
class DropoutLayer(NeuronLayer):
    """TRAIN: keep each value with probability 1 - ratio and scale kept ones by 1/(1 - ratio); TEST: identity."""

    def layer_setup(self, bottom, top):
        self.ratio = self.layer_param.dropout_param.dropout_ratio
        self.check(0 <= self.ratio < 1, "dropout_ratio must be in [0, 1), got %g" % self.ratio)
        self.scale = 1.0 / (1.0 - self.ratio)
        self.mask = None

    def _keep_mask(self, shape):
        """Bernoulli(1 - ratio) draws from the framework RNG (seeded by `random_seed`) on the current device."""
        xp = self.xp
        if xp is np:
            return backend.rng().random(shape, dtype=np.float32) >= self.ratio
        return xp.random.random_sample(shape, dtype=np.float32) >= self.ratio

    def forward(self, bottom, top):
        x = bottom[0].dev_data
        if self.phase == caffe_pb2.TRAIN:
            self.mask = self._keep_mask(x.shape)
            top[0].mut_dev_data[...] = self.m(x) * self.mask * self.scale
        elif top[0] is not bottom[0]:
            top[0].mut_dev_data[...] = x

    def backward_reads_data(self, bottom, top):
        return (), ()                                    # the mask is kept

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].dev_diff
        if self.phase == caffe_pb2.TRAIN:
            bottom[0].mut_dev_diff[...] = self.m(dy) * self.mask * self.scale
        elif top[0] is not bottom[0]:
            bottom[0].mut_dev_diff[...] = dy


@register("PReLU")
class PReLULayer(NeuronLayer):
    """Leaky ReLU with a learned slope per channel (axis 1), or one shared slope; default slope 0.25."""

    def layer_setup(self, bottom, top):
        p = self.layer_param.prelu_param
        self.check(bottom[0].num_axes >= 2, "number of axes of bottom blob must be >= 2, got shape %s"
                   % bottom[0].shape_string())
        channels = bottom[0].shape[1]
        self.shared = p.channel_shared
        if not self.blobs:
            filler = p.filler
            if not p.HasField("filler"):
                filler = caffe_pb2.FillerParameter(type="constant", value=0.25)
            self.blobs = [self.new_param(() if self.shared else (channels,), filler)]
        want = 1 if self.shared else channels
        self.check(self.blobs[0].count == want, "negative slope size is inconsistent with prototxt config "
                   "(%d slopes, want %d)" % (self.blobs[0].count, want))
        self.param_propagate_down = [True]
        self.saved_x = None

    def reshape(self, bottom, top):
        self.check(bottom[0].num_axes >= 2, "number of axes of bottom blob must be >= 2, got shape %s"
                   % bottom[0].shape_string())
        super().reshape(bottom, top)

    def _slope(self, ndim):
        s = self.m(self.blobs[0].dev_data)
        return s.reshape(()) if self.shared else s.reshape((1, -1) + (1,) * (ndim - 2))

    def forward(self, bottom, top):
        xp = self.xp
        x = self.m(bottom[0].dev_data)
        if top[0] is bottom[0]:
            self.saved_x = x.copy()
        top[0].mut_dev_data[...] = xp.maximum(x, 0) + self._slope(x.ndim) * xp.minimum(x, 0)

    def backward(self, top, propagate_down, bottom):
        x = self.saved_x if top[0] is bottom[0] else self.m(bottom[0].dev_data)
        dy = self.m(top[0].dev_diff)
        if self.param_propagate_down[0]:
            contrib = dy * x * (x <= 0)
            if self.shared:
                g = contrib.sum()
            else:
                g = contrib.sum(axis=tuple(a for a in range(x.ndim) if a != 1))
            self.blobs[0].mut_dev_diff[...] += g.reshape(self.blobs[0].shape)
        if propagate_down[0]:
            bottom[0].mut_dev_diff[...] = dy * ((x > 0) + self._slope(x.ndim) * (x <= 0))
