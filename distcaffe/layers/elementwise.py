"""Elementwise combination layers: Eltwise (PROD/SUM/MAX over several bottoms), Bias and Scale (a blob
broadcast along axes `axis .. axis+num_axes` of bottom 0, learned or given as a second bottom)."""
import numpy as np

from .. import backend
from ..proto import caffe_pb2
from . import cpu_split, fastpath
from .base import Layer, register
from .shape import canonical_axis

PROD, SUM, MAX = caffe_pb2.EltwiseParameter.PROD, caffe_pb2.EltwiseParameter.SUM, caffe_pb2.EltwiseParameter.MAX


def broadcast_param_shape(layer, bottom0, axis, num_axes, what):
    """Shape of a learned `what` blob spanning bottom0's axes axis..axis+num_axes (-1: to the end)."""
    axis = canonical_axis(layer, bottom0, axis)
    if num_axes < -1:
        raise layer.error("num_axes must be non-negative, or -1 to extend to the end of bottom[0] (got %d)"
                          % num_axes)
    if num_axes >= 0 and bottom0.num_axes < axis + num_axes:
        raise layer.error("%s blob's shape extends past bottom[0]'s shape %s when applied starting with axis %d "
                          "(num_axes %d)" % (what, bottom0.shape_string(), axis, num_axes))
    return bottom0.shape[axis:] if num_axes == -1 else bottom0.shape[axis:axis + num_axes]


def broadcast_dims(layer, bottom0, p, axis, what):
    """Caffe's (outer, dim, inner) split of bottom0 for blob `p` applied from `axis` (axis 0 for a scalar)."""
    axis = 0 if p.num_axes == 0 else canonical_axis(layer, bottom0, axis)
    if bottom0.num_axes < axis + p.num_axes:
        raise layer.error("%s blob's shape %s extends past bottom[0]'s shape %s when applied starting with axis %d"
                          % (what, p.shape_string(), bottom0.shape_string(), axis))
    for i in range(p.num_axes):
        if bottom0.shape[axis + i] != p.shape[i]:
            raise layer.error("dimension mismatch between bottom[0] %s axis %d and %s blob %s axis %d"
                              % (bottom0.shape_string(), axis + i, what, p.shape_string(), i))
    return bottom0.count_range(0, axis), p.count, bottom0.count_range(axis + p.num_axes)


def _per_channel(subscripts, *arrays3):
    """np.einsum(subscripts, *arrays3), the (dim,) per-channel sums of (outer, dim, inner) numpy arrays, over parts
    of dim on the BLAS pool's threads, in their accumulation dtype (fp32 for fp16, as numpy's mean). einsum's order
    per channel is the same in a part as in the whole (numpy's pairwise `sum` along two axes is not: its blocking
    follows the part's shape)."""
    out = np.empty((1, arrays3[0].shape[1], 1), backend.accum_dtype(np.result_type(*arrays3)))

    def part(*parts):
        parts[-1][0, :, 0] = np.einsum(subscripts, *parts[:-1], dtype=out.dtype)
    cpu_split.over_axis(part, 1, *arrays3, out)
    return out.reshape(-1)


def sum_outer_inner(a3):
    """Sum an (outer, dim, inner) array down to (dim,) (cupy's: one reduction kernel)."""
    if type(a3) is not np.ndarray:
        return a3.sum(axis=(0, 2))
    return _per_channel("ijk->j", a3).astype(a3.dtype, copy=False)


def mean_outer_inner(a3):
    """The mean of an (outer, dim, inner) array per channel, (dim,) (BatchNorm's batch mean)."""
    if type(a3) is not np.ndarray:
        return a3.mean(axis=(0, 2))
    return (_per_channel("ijk->j", a3) / (a3.shape[0] * a3.shape[2])).astype(a3.dtype, copy=False)


def dot_outer_inner(xp, a3, b3):
    """sum_outer_inner(a3 * b3) without the product array (one pass: per-channel dot products)."""
    if type(a3) is not np.ndarray:
        return xp.einsum("ijk,ijk->j", a3, b3)
    return _per_channel("ijk,ijk->j", a3, b3).astype(np.result_type(a3, b3), copy=False)


@register("Eltwise")
class EltwiseLayer(Layer):
    """Elementwise PROD, SUM (with per-bottom coeff) or MAX (remembering which bottom won) of same-shape bottoms."""

    min_bottom = 2
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.eltwise_param
        self.check(len(p.coeff) in (0, len(bottom)),
                   "takes one coefficient per bottom blob (%d bottoms, %d coeff)" % (len(bottom), len(p.coeff)))
        self.check(not (p.operation == PROD and len(p.coeff)), "only takes coefficients for summation (SUM)")
        self.op = p.operation
        self.coeffs = list(p.coeff) if len(p.coeff) else [1.0] * len(bottom)
        self.stable_prod_grad = p.stable_prod_grad
        self.max_idx = None

    def reshape(self, bottom, top):
        for i, b in enumerate(bottom[1:], 1):
            self.check(b.shape == bottom[0].shape, "bottom %d '%s' has shape %s but bottom 0 '%s' has %s; all "
                       "bottoms must have the same shape" % (i, b.name, b.shape_string(), bottom[0].name,
                                                             bottom[0].shape_string()))
        top[0].reshape_like(bottom[0])

    def forward(self, bottom, top):
        xp = self.xp
        xs = [self.m(b.dev_data) for b in bottom]
        if self.op == PROD:
            y = xs[0] * xs[1]
            for x in xs[2:]:
                y *= x
        elif (self.op == SUM and all(c == 1 for c in self.coeffs) and top[0].dtype == xs[0].dtype
              and all(top[0] is not b for b in bottom[1:])):
            cpu_split.sum_into(xp, top[0].mut_dev_data, *xs)         # straight into the top
            return
        elif self.op == SUM:
            y = self.coeffs[0] * xs[0]
            for c, x in zip(self.coeffs[1:], xs[1:]):
                y += c * x
        else:
            # Caffe's tie rule: bottom 1 wins a tie with bottom 0; later bottoms must be strictly greater.
            first = xs[0] > xs[1]
            y = xp.where(first, xs[0], xs[1])
            idx = xp.where(first, 0, 1).astype(np.int32)
            for i, x in enumerate(xs[2:], 2):
                win = x > y
                y = xp.where(win, x, y)
                idx[win] = i
            self.max_idx = idx
        top[0].mut_dev_data[...] = y

    def backward_reads_data(self, bottom, top):
        return ((), ()) if self.op == SUM else super().backward_reads_data(bottom, top)

    def backward(self, top, propagate_down, bottom):
        dy = self.m(top[0].dev_diff)
        for i, b in enumerate(bottom):
            if not propagate_down[i]:
                continue
            if self.op == PROD:
                if self.stable_prod_grad:
                    others = [self.m(o.dev_data) for j, o in enumerate(bottom) if j != i]
                    g = others[0].copy()
                    for o in others[1:]:
                        g *= o
                else:
                    g = self.m(top[0].dev_data) / self.m(b.dev_data)
                g = g * dy
            elif self.op == SUM:
                out, c = b.mut_dev_diff, self.coeffs[i]
                if out.dtype == dy.dtype:                 # straight into the bottom diff, split over threads
                    if c == 1:
                        cpu_split.copy(out, dy)
                    else:
                        cpu_split.elementwise(lambda a, o: self.xp.multiply(a, c, out=o), dy, out)
                    continue
                g = dy if c == 1 else c * dy
            else:
                g = dy * (self.max_idx == i)
            b.mut_dev_diff[...] = g


class _BroadcastParamLayer(Layer):
    """Shared setup for Bias and Scale: the blob is bottom[1] when given, else a learned parameter."""

    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1

    def operand(self, bottom, param_index=0):
        return bottom[1] if len(bottom) > 1 else self.blobs[param_index]

    def learned_blob(self, bottom, p, filler, what):
        return self.new_param(broadcast_param_shape(self, bottom[0], p.axis, p.num_axes, what), filler)


@register("Bias")
class BiasLayer(_BroadcastParamLayer):
    """top = bottom[0] + b, b broadcast along axes axis..axis+num_axes (b = bottom[1] or a learned blob)."""

    def layer_setup(self, bottom, top):
        p = self.layer_param.bias_param
        if len(bottom) == 1 and not self.blobs:
            self.blobs = [self.learned_blob(bottom, p, p.filler, "bias")]
        self.param_propagate_down = [True] * len(self.blobs)

    def reshape(self, bottom, top):
        self.dims = broadcast_dims(self, bottom[0], self.operand(bottom), self.layer_param.bias_param.axis, "bias")
        if top[0] is not bottom[0]:
            top[0].reshape_like(bottom[0])

    def forward(self, bottom, top):
        x3 = self.m(bottom[0].dev_data).reshape(self.dims)
        b3 = self.m(self.operand(bottom).dev_data).reshape(1, -1, 1)
        top[0].mut_dev_data[...] = (x3 + b3).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0] and top[0] is not bottom[0]:
            bottom[0].mut_dev_diff[...] = top[0].dev_diff
        learned = len(bottom) == 1
        if (learned and self.param_propagate_down[0]) or (not learned and propagate_down[1]):
            g = sum_outer_inner(self.m(top[0].dev_diff).reshape(self.dims))
            b = self.operand(bottom)
            if learned:
                b.mut_dev_diff[...] += g.reshape(b.shape)
            else:
                b.mut_dev_diff[...] = g.reshape(b.shape)


@register("Scale")
class ScaleLayer(_BroadcastParamLayer):
    """top = bottom[0] * s (+ bias when bias_term), s broadcast like Bias; blobs: [scale][, bias] with a learned
    scale, [bias] when the scale is bottom[1] (Caffe's order, so .caffemodel weights load by position)."""

    def layer_setup(self, bottom, top):
        p = self.layer_param.scale_param
        if len(bottom) == 1 and not self.blobs:
            filler = p.filler if p.HasField("filler") else caffe_pb2.FillerParameter(type="constant", value=1)
            self.blobs = [self.learned_blob(bottom, p, filler, "scale")]
        self.bias_id = None
        if p.bias_term:
            if len(self.blobs) + len(bottom) < 3:
                num_axes = bottom[1].num_axes if len(bottom) > 1 else p.num_axes
                bias_p = caffe_pb2.BiasParameter(axis=p.axis, num_axes=num_axes)
                self.bias_id = len(self.blobs)
                self.blobs.append(self.learned_blob(bottom, bias_p, p.bias_filler, "bias"))
            else:
                self.bias_id = len(self.blobs) - 1
        self.param_propagate_down = [True] * len(self.blobs)
        self.saved_x = None
        self.normalized_by = None         # a BatchNorm whose output this in-place Scale rescales

    def reshape(self, bottom, top):
        axis = self.layer_param.scale_param.axis
        self.dims = broadcast_dims(self, bottom[0], self.operand(bottom), axis, "scale")
        if self.bias_id is not None:
            self.bias_dims = broadcast_dims(self, bottom[0], self.blobs[self.bias_id], axis, "bias")
        if top[0] is not bottom[0]:
            top[0].reshape_like(bottom[0])

    def _saved_input(self, bottom, x):
        """The input kept for backward when computing in place: the paired BatchNorm's normalized output
        when it is exactly this blob's data (see normalization.pair_batchnorm_scale), else a copy."""
        bn = self.normalized_by
        if bn is not None and bn.x_norm_fresh:
            bn.x_norm_fresh = False
            if not bn.scale_bias and bn.x_norm.dtype == x.dtype == bottom[0].dtype and bn.x_norm.size == x.size:
                return bn.x_norm.reshape(x.shape)
        return x.copy()

    def forward(self, bottom, top):
        x = self.m(bottom[0].dev_data)
        if top[0] is bottom[0]:
            self.saved_x = self._saved_input(bottom, x)
        s3 = self.m(self.operand(bottom).dev_data).reshape(1, -1, 1)
        out = top[0].mut_dev_data
        if out.dtype == x.dtype:                      # straight into the top, no temporaries
            bias = None if self.bias_id is None else self.m(self.blobs[self.bias_id].dev_data)
            loops = fastpath.loops(self.xp, x.dtype, "pointwise_loops")
            if (loops is not None and bias is not None and self.bias_dims == self.dims
                    and s3.dtype == bias.dtype == x.dtype):           # one pass instead of two
                loops.scale_bias(x.reshape(self.dims), s3.reshape(-1), bias.reshape(-1), out.reshape(self.dims))
                return
            self.xp.multiply(x.reshape(self.dims), s3, out=out.reshape(self.dims))
            if bias is not None:
                o3 = out.reshape(self.bias_dims)
                self.xp.add(o3, bias.reshape(1, -1, 1), out=o3)
            return
        y = x.reshape(self.dims) * s3
        if self.bias_id is not None:
            y = y.reshape(self.bias_dims) + self.m(self.blobs[self.bias_id].dev_data).reshape(1, -1, 1)
        out[...] = y.reshape(top[0].shape)

    def backward_reads_data(self, bottom, top):
        """In place the input is kept (saved_x); the scale operand when it is bottom[1]."""
        return (range(1, len(bottom)) if top[0] is bottom[0] else range(len(bottom))), ()

    def backward(self, top, propagate_down, bottom):
        dy = self.m(top[0].dev_diff)
        if self.bias_id is not None and self.param_propagate_down[self.bias_id]:
            bias = self.blobs[self.bias_id]
            bias.mut_dev_diff[...] += sum_outer_inner(dy.reshape(self.bias_dims)).reshape(bias.shape)
        learned = len(bottom) == 1
        s = self.operand(bottom)
        if (learned and self.param_propagate_down[0]) or (not learned and propagate_down[1]):
            x = self.saved_x if top[0] is bottom[0] else self.m(bottom[0].dev_data)
            g = dot_outer_inner(self.xp, dy.reshape(self.dims), x.reshape(self.dims)).reshape(s.shape)
            if learned:
                s.mut_dev_diff[...] += g
            else:
                s.mut_dev_diff[...] = g
        if propagate_down[0]:
            s3 = self.m(s.dev_data).reshape(1, -1, 1)
            out = bottom[0].mut_dev_diff
            if out.dtype == dy.dtype:
                cpu_split.over_axis(lambda a, b, o: self.xp.multiply(a, b, out=o), 1, dy.reshape(self.dims), s3,
                                    out.reshape(self.dims))
            else:
                out[...] = (dy.reshape(self.dims) * s3).reshape(bottom[0].shape)
