"""Normalization layers: BatchNorm (BVLC statistics + NVCaffe `scale_bias`), LRN, MVN, as Caffe computes them."""
import numpy as np

from .. import backend
from . import fastpath
from .elementwise import dot_outer_inner, mean_outer_inner
from .im2col import workspace
from ..proto import caffe_pb2
from .base import NeuronLayer, register


@register("BatchNorm")
class BatchNormLayer(NeuronLayer):
    """Caffe's BatchNorm: blobs are running mean, running variance (unbiased, m/(m-1)) and their scale
    factor; NVCaffe's `scale_bias` adds per-channel scale and bias blobs (3 and 4) applied after it."""

    precise = True

    def layer_setup(self, bottom, top):
        bp = self.layer_param.batch_norm_param
        self.moving_average_fraction = bp.moving_average_fraction
        self.use_global_stats = self.phase == caffe_pb2.TEST
        if bp.HasField("use_global_stats"):
            self.use_global_stats = bp.use_global_stats
        self.channels = 1 if bottom[0].num_axes == 1 else bottom[0].shape[1]
        self.eps = bp.eps
        self.scale_bias = bp.scale_bias or bp.HasField("scale_filler") or bp.HasField("bias_filler")
        if not self.blobs:      # statistics, scale and bias in the fp32 accumulator type (cuDNN's BN layout too)
            c, acc = self.channels, backend.accum_dtype(self.dtype)
            self.blobs = [self.new_param([c], dtype=acc), self.new_param([c], dtype=acc),
                          self.new_param([1], dtype=acc)]
            if self.scale_bias:
                one = caffe_pb2.FillerParameter(type="constant", value=1.0)
                self.blobs.append(self.new_param([c], bp.scale_filler if bp.HasField("scale_filler") else one, acc))
                self.blobs.append(self.new_param([c], bp.bias_filler if bp.HasField("bias_filler") else None, acc))
        # the statistics are not learned: lr_mult 0 (BVLC refuses anything else; NVCaffe's scale_bias layer
        # sets statistics to lr/decay 0 and scale/bias to 1/1 whatever the prototxt says); scale/bias learn
        params = self.layer_param.param
        for i in range(len(self.blobs)):
            if len(params) == i:
                params.add(lr_mult=0.0 if i < 3 else 1.0, decay_mult=0.0 if i < 3 else 1.0)
            elif self.scale_bias:
                params[i].lr_mult = params[i].decay_mult = 0.0 if i < 3 else 1.0
            elif params[i].lr_mult != 0:
                raise self.error("Cannot configure batch normalization statistics as layer parameters.")
        self.x_norm, self.x_norm_fresh = None, False

    def reshape(self, bottom, top):
        if bottom[0].num_axes > 1:
            self.check(bottom[0].shape[1] == self.channels, "bottom has %d channels, expected %d"
                       % (bottom[0].shape[1], self.channels))
        top[0].reshape_like(bottom[0])

    def _view(self, arr):
        n = arr.shape[0] if arr.ndim else 1
        return self.m(arr).reshape(n, self.channels, -1)

    def forward(self, bottom, top):
        xp = self.xp
        x = self._view(bottom[0].dev_data)
        c = self.channels
        if self.use_global_stats:
            f = self.m(self.blobs[2].dev_data)             # stays on the device: no host sync
            factor = (f != 0) / xp.where(f == 0, 1, f)
            mean = self.m(self.blobs[0].dev_data) * factor
            var = self.m(self.blobs[1].dev_data) * factor
        else:
            mean = mean_outer_inner(x)
        xc = self._x_norm_buffer(x.shape, np.result_type(x.dtype, mean.dtype))
        _center(xp, x, mean, xc)
        if not self.use_global_stats:
            m = x.size // c
            var = dot_outer_inner(xp, xc, xc) / m          # the mean of the squares, without their array
            maf = self.moving_average_fraction
            self.blobs[2].mut_dev_data[...] = self.blobs[2].dev_data * maf + 1
            self.blobs[0].mut_dev_data[...] = mean + maf * self.m(self.blobs[0].dev_data)
            correction = m / (m - 1.0) if m > 1 else 1.0
            self.blobs[1].mut_dev_data[...] = correction * var + maf * self.m(self.blobs[1].dev_data)
        self.std = xp.sqrt(var + self.eps)
        top_data = top[0].mut_dev_data
        direct = not self.scale_bias and top_data.dtype == xc.dtype
        _divide_copy(xp, xc, self.std, top_data.reshape(x.shape) if direct else xc)
        self.x_norm = xc
        self.x_norm_fresh = True            # for a paired Scale: x_norm is what this pass writes to the top
        if not direct:
            y = xc
            if self.scale_bias:
                y = y * self.m(self.blobs[3].dev_data)[:, None] + self.m(self.blobs[4].dev_data)[:, None]
            top_data[...] = y.reshape(top[0].shape)

    def _x_norm_buffer(self, shape, dtype):
        """The array for this pass's x_norm: on CPU the last pass's when it is this layer's own (not Large Model
        Support's view of it, which must see a new array each pass to move it) and fits, so that a pass does not
        page fresh memory in (ResNet-50: 53 of them, 8-26 MB each); else a new one."""
        old = self.x_norm
        if (self.xp is np and isinstance(old, np.ndarray) and old.base is None and old.shape == shape
                and old.dtype == dtype):
            return old
        return self.xp.empty(shape, dtype)

    def backward_reads_data(self, bottom, top):
        return (), ()                                    # x_norm and std are kept

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        g = self._view(top[0].dev_diff)
        if self.scale_bias:
            pd = self.param_propagate_down
            if len(pd) > 3 and pd[3]:
                self.blobs[3].mut_dev_diff[...] += (g * self.x_norm).sum(axis=(0, 2))
            if len(pd) > 4 and pd[4]:
                self.blobs[4].mut_dev_diff[...] += g.sum(axis=(0, 2))
            g = g * self.m(self.blobs[3].dev_data)[:, None]
        if not propagate_down[0]:
            return
        diff = bottom[0].mut_dev_diff
        # computed straight into the bottom diff (which may be the top diff: every step is elementwise)
        d = diff.reshape(g.shape) if diff.dtype == g.dtype else xp.empty_like(g)
        if self.use_global_stats:
            xp.divide(g, self.std[:, None], out=d)
        else:
            y = self.x_norm
            m = g.size // self.channels
            mean_gy = dot_outer_inner(xp, g, y) / m
            mean_g = mean_outer_inner(g)
            _input_diff(xp, g, y, mean_g, mean_gy, self.std, d)
        if diff.dtype != g.dtype:
            diff[...] = d.reshape(diff.shape)


def _center(xp, x, mean, xc):
    """xc = x - mean per channel of (N, C, M) arrays into the fresh xc: one compiled pass, or numpy's subtract
    (the same bits)."""
    loops = fastpath.loops(xp, xc.dtype, "pointwise_loops")
    if loops is not None and x.dtype == mean.dtype == xc.dtype:
        loops.bn_center(x, mean, xc)
        return
    xp.subtract(x, mean[:, None], out=xc)


def _divide_copy(xp, xc, std, top):
    """xc /= std per channel of (N, C, M) arrays, then top = xc unless top is xc: one compiled pass, or numpy's
    divide and copy (the same bits)."""
    loops = fastpath.loops(xp, xc.dtype, "pointwise_loops")
    if loops is not None and top.dtype == xc.dtype == std.dtype:
        loops.bn_normalize(xc, std, top)
        return
    xp.divide(xc, std[:, None], out=xc)
    if top is not xc:
        top[...] = xc


def _input_diff(xp, g, y, mean_g, mean_gy, std, d):
    """BatchNorm's bottom diff on batch statistics, d = ((g - mean_g) - mean_gy y) / std per channel (d may be g):
    one compiled pass, or numpy's steps in the same order."""
    loops = fastpath.loops(xp, g.dtype, "pointwise_loops")
    if loops is not None and g.dtype == y.dtype == d.dtype == mean_g.dtype == mean_gy.dtype == std.dtype:
        loops.bn_input_diff(g, y, mean_g, mean_gy, std, d)
        return
    t = xp.multiply(mean_gy[:, None], y, out=workspace(xp, "bn", g.shape, g.dtype))
    xp.subtract(g, mean_g[:, None], out=d)
    xp.subtract(d, t, out=d)
    xp.divide(d, std[:, None], out=d)


def pair_batchnorm_scale(layers, bottom_ids, top_ids):
    """Link each in-place Scale that directly follows the BatchNorm writing its blob (ResNet's BN + Scale):
    the Scale then takes its saved input from the BatchNorm's normalized output instead of copying the blob
    (NVCaffe's fused scale_bias idea; the same numbers, one copy of every such blob less)."""
    for i in range(len(layers) - 1):
        bn, sc = layers[i], layers[i + 1]
        if (bn.type == "BatchNorm" and sc.type == "Scale" and len(bottom_ids[i + 1]) == 1
                and bottom_ids[i + 1] == top_ids[i] == top_ids[i + 1]):
            sc.normalized_by = bn


def _out(dest, like):
    """`dest` when a result may be written straight into it (same dtype), else None (a new array)."""
    return dest if dest.dtype == like.dtype else None


def _write(result, dest):
    """Store `result` in `dest` unless it was computed there."""
    if result is not dest:
        dest[...] = result


def _window_sum(xp, a, axes, size):
    """Sum over a centred window of odd `size` along each of `axes` (zero padding), by shifted slices."""
    pre = (size - 1) // 2
    out = a
    for ax in axes:
        pad = [(0, 0)] * a.ndim
        pad[ax] = (pre, pre)
        p = xp.pad(out, pad)
        n = out.shape[ax]
        acc = None
        for k in range(size):
            sl = [slice(None)] * a.ndim
            sl[ax] = slice(k, k + n)
            window = p[tuple(sl)]
            if acc is None:
                acc = window
            elif k == 1:
                acc = acc + window          # the first sum is a new array (acc was a view of the padding)
            else:
                acc += window
        out = acc
    return out


@register("LRN")
class LRNLayer(NeuronLayer):
    """Caffe's local response normalization: x / (k + alpha/n sum x^2)^beta across channels, or
    x / (1 + alpha/n^2 sum x^2)^beta over a spatial n x n window (WITHIN_CHANNEL ignores k, as Caffe)."""

    precise = True

    def layer_setup(self, bottom, top):
        p = self.layer_param.lrn_param
        self.size = p.local_size
        self.check(self.size % 2 == 1, "LRN only supports odd values for local_size")
        self.alpha, self.beta, self.k = p.alpha, p.beta, p.k
        self.across = p.norm_region == caffe_pb2.LRNParameter.ACROSS_CHANNELS

    def reshape(self, bottom, top):
        self.check(bottom[0].num_axes == 4, "Input must have 4 axes, corresponding to (num, channels, height, "
                   "width); got %s" % bottom[0].shape_string())
        top[0].reshape_like(bottom[0])

    def _terms(self):
        """(axes summed over, divisor of alpha, constant added)."""
        if self.across:
            return (1,), self.size, self.k
        return (2, 3), self.size * self.size, 1.0

    # Both passes make Caffe's operations in its order, each step written over a temporary that is done with
    # (AlexNet's norm1: 19 MB per array), so a pass holds three such arrays at once instead of seven. The power
    # scale^-beta is kept from forward for backward (numpy's pow is the dearest step: 5 ms on norm1). Across
    # channels, with the `fast` extra, the window sums and the bottom diff are compiled loops (lrn_loops) giving
    # the same bits.
    def _loops(self, *arrays):
        """lrn_loops when the compiled steps apply to these arrays (across channels, one float dtype,
        C-contiguous, the first, which they write, not overlapping the others), else None."""
        loops = fastpath.loops(self.xp, arrays[0].dtype, "lrn_loops") if self.across else None
        if loops is None or any(a.dtype != arrays[0].dtype or not a.flags.c_contiguous for a in arrays):
            return None
        if any(np.may_share_memory(arrays[0], a) for a in arrays[1:]):
            return None
        return loops

    def forward(self, bottom, top):
        xp, x = self.xp, self.m(bottom[0].dev_data)
        axes, n, k = self._terms()
        loops = self._loops(x)
        if loops is not None:
            scale = xp.empty(x.shape, x.dtype)
            loops.scale(x.reshape(x.shape[:2] + (-1,)), scale.reshape(x.shape[:2] + (-1,)), self.size,
                        self.alpha / n, k)
        else:
            scale = _window_sum(xp, x * x, axes, self.size)
            xp.multiply(self.alpha / n, scale, out=scale)
            xp.add(k, scale, out=scale)
        self.scale = scale
        self.power = scale ** -self.beta
        top_data = top[0].mut_dev_data
        _write(xp.multiply(x, self.power, out=_out(top_data, x)), top_data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp, x = self.xp, self.m(bottom[0].dev_data)
        g = self.m(top[0].dev_diff)
        axes, n, _ = self._terms()
        coeff = 2.0 * self.alpha * self.beta / n
        diff = bottom[0].mut_dev_diff
        loops = self._loops(diff, x, g, self.scale, self.power)
        if loops is not None:
            flat = x.shape[:2] + (-1,)
            loops.bottom_diff(x.reshape(flat), g.reshape(flat), self.scale.reshape(flat), self.power.reshape(flat),
                              diff.reshape(flat), self.size, coeff)
            return
        t = xp.multiply(x, self.power)                  # y, then g * y / scale
        xp.multiply(g, t, out=t)
        ratio = _window_sum(xp, xp.divide(t, self.scale, out=t), axes, self.size)
        power = xp.multiply(g, self.power)
        xp.multiply(coeff, x, out=t)
        xp.multiply(t, ratio, out=t)
        _write(xp.subtract(power, t, out=_out(diff, power)), diff)


@register("MVN")
class MVNLayer(NeuronLayer):
    """Caffe's mean-variance normalization per (num, channel) or per num (across_channels); eps is added
    to the standard deviation, as Caffe does."""

    precise = True

    def layer_setup(self, bottom, top):
        p = self.layer_param.mvn_param
        self.normalize_variance = p.normalize_variance
        self.across_channels = p.across_channels
        self.eps = p.eps

    def reshape(self, bottom, top):
        self.check(bottom[0].num_axes <= 4, "Cannot use legacy accessors on Blobs with > 4 axes (shape %s)"
                   % bottom[0].shape_string())
        top[0].reshape_like(bottom[0])

    def _view(self, arr):
        shape = arr.shape + (1,) * (2 - arr.ndim) if arr.ndim < 2 else arr.shape
        rows = shape[0] if self.across_channels else shape[0] * shape[1]
        return self.m(arr).reshape(rows, -1)

    def forward(self, bottom, top):
        x = self._view(bottom[0].dev_data)
        y = x - x.mean(axis=1, keepdims=True)
        if self.normalize_variance:
            self.std = self.xp.sqrt((y * y).mean(axis=1, keepdims=True)) + self.eps
            y = y / self.std
        top[0].mut_dev_data[...] = y.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        g = self._view(top[0].dev_diff)
        if self.normalize_variance:
            y = self._view(top[0].dev_data)
            d = g - (g.sum(axis=1, keepdims=True) + y * (y * g).sum(axis=1, keepdims=True)) / g.shape[1]
            d = d / self.std
        else:
            d = g - g.mean(axis=1, keepdims=True)
        bottom[0].mut_dev_diff[...] = d.reshape(bottom[0].shape)
