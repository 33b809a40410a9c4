"""Layers that move values without arithmetic on them, plus Reduction: Concat, Slice, Flatten, Reshape, Crop,
Tile, Filter, BatchReindex, Silence, Reduction. Flatten and Reshape (and one-input Concat/Slice) share the
bottom's memory, as in Caffe, so they cost no copy."""
import numpy as np

from .. import backend
from ..proto import caffe_pb2
from .base import Layer, register

ASUM, SUMSQ, MEAN = (caffe_pb2.ReductionParameter.ASUM, caffe_pb2.ReductionParameter.SUMSQ,
                     caffe_pb2.ReductionParameter.MEAN)


def canonical_axis(layer, blob, axis):
    """Caffe's CanonicalAxisIndex (negative counts from the end), with an error naming the layer."""
    n = blob.num_axes
    if not -n <= axis < n:
        raise layer.error("axis %d out of range for %d-D bottom blob '%s' of shape %s"
                          % (axis, n, blob.name, blob.shape_string()))
    return axis % n


def share_view(top, bottom, shape):
    """Make `top` a `shape`-shaped view of `bottom`'s data and diff (Caffe's ShareData + ShareDiff)."""
    top.reshape(shape)
    top.share_data(bottom)
    top.share_diff(bottom)


def axis_slice(axis, start, stop):
    """Index selecting start:stop along `axis`."""
    return (slice(None),) * axis + (slice(start, stop),)


def legacy_axis(layer, blob, p, legacy_field, legacy_value):
    """The axis of Concat/Slice: `axis`, or the legacy `concat_dim`/`slice_dim` when that is set instead."""
    if p.HasField(legacy_field):
        layer.check(legacy_value < blob.num_axes, "%s %d out of range for bottom shape %s"
                    % (legacy_field, legacy_value, blob.shape_string()))
        return legacy_value
    return canonical_axis(layer, blob, p.axis)


@register("Concat")
class ConcatLayer(Layer):
    """Joins bottoms along `axis` (default 1); all other dimensions must agree."""

    min_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.concat_param
        self.check(not (p.HasField("axis") and p.HasField("concat_dim")),
                   "either axis or concat_dim should be specified; not both")

    def reshape(self, bottom, top):
        p = self.layer_param.concat_param
        b0 = bottom[0]
        self.axis = legacy_axis(self, b0, p, "concat_dim", p.concat_dim)
        shape = list(b0.shape)
        for i, b in enumerate(bottom[1:], 1):
            self.check(b.num_axes == b0.num_axes, "all inputs must have the same number of axes: bottom %d '%s' "
                       "is %s, bottom 0 '%s' is %s" % (i, b.name, b.shape_string(), b0.name, b0.shape_string()))
            for j in range(b0.num_axes):
                self.check(j == self.axis or b.shape[j] == b0.shape[j],
                           "all inputs must have the same shape except at concat axis %d: bottom %d '%s' is %s, "
                           "bottom 0 '%s' is %s" % (self.axis, i, b.name, b.shape_string(), b0.name,
                                                    b0.shape_string()))
            shape[self.axis] += b.shape[self.axis]
        if len(bottom) == 1:
            share_view(top[0], b0, shape)
        else:
            top[0].reshape(shape)

    def forward(self, bottom, top):
        if len(bottom) == 1:
            return
        y = top[0].mut_dev_data
        off = 0
        for b in bottom:
            n = b.shape[self.axis]
            y[axis_slice(self.axis, off, off + n)] = b.dev_data
            off += n

    def backward_reads_data(self, bottom, top):
        return (), ()

    def backward(self, top, propagate_down, bottom):
        if len(bottom) == 1:
            return
        dy = top[0].dev_diff
        off = 0
        for b, down in zip(bottom, propagate_down):
            n = b.shape[self.axis]
            if down:
                b.mut_dev_diff[...] = dy[axis_slice(self.axis, off, off + n)]
            off += n


@register("Slice")
class SliceLayer(Layer):
    """Splits the bottom along `axis` at `slice_point`s (or into equal parts, one per top)."""

    exact_num_bottom = 1
    min_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.slice_param
        self.check(not (p.HasField("axis") and p.HasField("slice_dim")),
                   "either axis or slice_dim should be specified; not both")

    def reshape(self, bottom, top):
        p = self.layer_param.slice_param
        b = bottom[0]
        self.axis = legacy_axis(self, b, p, "slice_dim", p.slice_dim)
        n = b.shape[self.axis]
        if len(p.slice_point):
            self.check(len(p.slice_point) == len(top) - 1, "needs one slice_point per top after the first "
                       "(%d tops, %d slice_points)" % (len(top), len(p.slice_point)))
            self.check(len(top) <= n, "%d tops is more than the %d elements of axis %d" % (len(top), n, self.axis))
            bounds = [0] + list(p.slice_point)
            for lo, hi in zip(bounds, bounds[1:]):
                self.check(hi > lo, "slice points %s must be strictly increasing" % list(p.slice_point))
            self.check(bounds[-1] <= n, "slice point %d is past the end of axis %d (size %d)"
                       % (bounds[-1], self.axis, n))
            bounds.append(n)
        else:
            self.check(n % len(top) == 0, "number of top blobs (%d) should evenly divide input slice axis %d (%d)"
                       % (len(top), self.axis, n))
            bounds = list(range(0, n + 1, n // len(top)))
        self.bounds = bounds
        for t, lo, hi in zip(top, bounds, bounds[1:]):
            shape = list(b.shape)
            shape[self.axis] = hi - lo
            if len(top) == 1:
                share_view(t, b, shape)
            else:
                t.reshape(shape)

    def forward(self, bottom, top):
        if len(top) == 1:
            return
        x = bottom[0].dev_data
        for t, lo, hi in zip(top, self.bounds, self.bounds[1:]):
            t.mut_dev_data[...] = x[axis_slice(self.axis, lo, hi)]

    def backward_reads_data(self, bottom, top):
        return (), ()

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0] or len(top) == 1:
            return
        dx = bottom[0].mut_dev_diff
        for t, lo, hi in zip(top, self.bounds, self.bounds[1:]):
            dx[axis_slice(self.axis, lo, hi)] = t.dev_diff


class _ViewLayer(Layer):
    """One bottom, one top that is a reshaped view of it: forward and backward have nothing to do."""

    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        self.check(top[0] is not bottom[0], "does not allow in-place computation")

    def top_shape(self, bottom0):
        raise NotImplementedError

    def reshape(self, bottom, top):
        share_view(top[0], bottom[0], self.top_shape(bottom[0]))

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass


@register("Flatten")
class FlattenLayer(_ViewLayer):
    """Collapses axes axis..end_axis (default 1..-1) into one."""

    def top_shape(self, b):
        p = self.layer_param.flatten_param
        start, end = canonical_axis(self, b, p.axis), canonical_axis(self, b, p.end_axis)
        self.check(start <= end, "end_axis %d comes before axis %d for bottom shape %s"
                   % (p.end_axis, p.axis, b.shape_string()))
        return b.shape[:start] + (b.count_range(start, end + 1),) + b.shape[end + 1:]


@register("Reshape")
class ReshapeLayer(_ViewLayer):
    """Replaces axes axis..axis+num_axes by `shape`, where 0 copies the bottom dimension and one -1 is inferred."""

    def layer_setup(self, bottom, top):
        super().layer_setup(bottom, top)
        dims = list(self.layer_param.reshape_param.shape.dim)
        self.copy_axes = [i for i, d in enumerate(dims) if d == 0]
        inferred = [i for i, d in enumerate(dims) if d == -1]
        self.check(len(inferred) <= 1, "new shape %s contains multiple -1 dims; at most a single (1) value of -1 "
                   "may be specified" % dims)
        self.check(all(d >= -1 for d in dims), "new shape %s has a dimension below -1" % dims)
        self.inferred_axis = inferred[0] if inferred else None
        self.constant_count = int(np.prod([d for d in dims if d > 0], dtype=np.int64))

    def top_shape(self, b):
        p = self.layer_param.reshape_param
        start = p.axis if p.axis >= 0 else b.num_axes + p.axis + 1
        self.check(0 <= start <= b.num_axes, "axis %d out of range for %d-D input blob" % (p.axis, b.num_axes))
        self.check(p.num_axes >= -1, "num_axes must be >= 0, or -1 for all (got %d)" % p.num_axes)
        end = b.num_axes if p.num_axes == -1 else start + p.num_axes
        self.check(end <= b.num_axes, "end_axis = axis + num_axes = %d is out of range for %d-D input blob"
                   % (end, b.num_axes))
        shape = list(b.shape[:start]) + list(p.shape.dim) + list(b.shape[end:])
        for i in self.copy_axes:
            self.check(start + i < b.num_axes, "new shape contains a 0 at %d, but there was no corresponding "
                       "bottom axis to copy (bottom shape %s)" % (i, b.shape_string()))
            shape[start + i] = b.shape[start + i]
        if self.inferred_axis is not None:
            explicit = self.constant_count * b.count_range(0, start) * b.count_range(end)
            for i in self.copy_axes:
                explicit *= shape[start + i]
            self.check(explicit and b.count % explicit == 0, "bottom count (%d) must be divisible by the product "
                       "of the specified dimensions (%d)" % (b.count, explicit))
            shape[start + self.inferred_axis] = b.count // explicit
        count = int(np.prod(shape, dtype=np.int64))
        self.check(count == b.count, "output count %d (shape %s) must match input count %d (shape %s)"
                   % (count, shape, b.count, b.shape_string()))
        return shape


@register("Crop")
class CropLayer(Layer):
    """Crops bottom[0] to bottom[1]'s shape on axes >= axis, starting at `offset` (one for all, or one per axis)."""

    exact_num_bottom = 2
    exact_num_top = 1

    def reshape(self, bottom, top):
        p = self.layer_param.crop_param
        x, ref = bottom
        start = canonical_axis(self, x, p.axis)
        n = x.num_axes
        self.check(ref.num_axes == n, "bottom[1] %s must have as many axes as bottom[0] %s"
                   % (ref.shape_string(), x.shape_string()))
        if len(p.offset) > 1:
            self.check(start + len(p.offset) == n, "number of crop offsets (%d) must equal the number of "
                       "dimensions from axis %d on (%d)" % (len(p.offset), start, n - start))
        offsets, shape = [0] * n, list(x.shape)
        for i in range(start, n):
            offsets[i] = p.offset[0] if len(p.offset) == 1 else (p.offset[i - start] if p.offset else 0)
            shape[i] = ref.shape[i]
        for i in range(n):
            self.check(x.shape[i] - offsets[i] >= ref.shape[i], "invalid crop parameters in dimension %d: bottom[0] "
                       "%s minus offset %d is smaller than bottom[1] %s"
                       % (i, x.shape_string(), offsets[i], ref.shape_string()))
        self.index = tuple(slice(o, o + s) for o, s in zip(offsets, shape))
        top[0].reshape(shape)

    def forward(self, bottom, top):
        top[0].mut_dev_data[...] = bottom[0].dev_data[self.index]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dx = bottom[0].mut_dev_diff
            dx[...] = 0
            dx[self.index] = top[0].dev_diff


@register("Tile")
class TileLayer(Layer):
    """Repeats the bottom `tiles` times along `axis` (blocks of everything from `axis` on)."""

    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        p = self.layer_param.tile_param
        b = bottom[0]
        self.axis = canonical_axis(self, b, p.axis)
        self.check(p.HasField("tiles"), "number of tiles must be specified (tile_param.tiles)")
        self.check(p.tiles > 0, "number of tiles must be positive, got %d" % p.tiles)
        self.tiles = p.tiles
        shape = list(b.shape)
        shape[self.axis] *= p.tiles
        self.dims = (b.count_range(0, self.axis), p.tiles, b.count_range(self.axis))
        top[0].reshape(shape)

    def forward(self, bottom, top):
        outer, tiles, inner = self.dims
        top[0].mut_dev_data.reshape(self.dims)[...] = bottom[0].dev_data.reshape(outer, 1, inner)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            g = self.m(top[0].dev_diff).reshape(self.dims).sum(axis=1)
            bottom[0].mut_dev_diff[...] = g.reshape(bottom[0].shape)


def index_error_bottom(layer, index_bottom):
    """The refusal to backpropagate into an index/selector input, as Caffe's LOG(FATAL)."""
    return layer.error("cannot backpropagate to the index input (bottom %d); set propagate_down: false for it"
                       % index_bottom)


@register("Filter")
class FilterLayer(Layer):
    """Keeps the items (along axis 0) of bottoms 0..K-1 whose selector (last bottom) is non-zero."""

    min_bottom = 2
    min_top = 1

    def layer_setup(self, bottom, top):
        self.check(len(top) == len(bottom) - 1, "needs one top per filtered bottom (%d bottoms incl. the selector, "
                   "%d tops)" % (len(bottom), len(top)))
        self.first_reshape = True

    def allow_force_backward(self, bottom_index):
        return bottom_index != len(self.layer_param.bottom) - 1

    def reshape(self, bottom, top):
        sel = bottom[-1]
        self.check(sel.num_axes >= 1 and all(d == 1 for d in sel.shape[1:]),
                   "selector blob dimensions must be singletons (1), except the first; got %s" % sel.shape_string())
        for i, b in enumerate(bottom[:-1]):
            self.check(b.num_axes >= 1 and b.shape[0] == sel.shape[0], "each bottom should have the same 0th "
                       "dimension as the selector blob: bottom %d '%s' is %s, selector is %s"
                       % (i, b.name, b.shape_string(), sel.shape_string()))
        selected = np.flatnonzero(backend.to_host(sel.dev_data).reshape(-1))
        self.indices = self.xp.asarray(selected)
        num = bottom[0].shape[0] if self.first_reshape else len(selected)
        self.first_reshape = False
        for t, b in zip(top, bottom):
            t.reshape((num,) + b.shape[1:])

    def forward(self, bottom, top):
        for t, b in zip(top, bottom):
            t.mut_dev_data[...] = b.dev_data[self.indices]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[-1]:
            raise index_error_bottom(self, len(bottom) - 1)
        for t, b, down in zip(top, bottom, propagate_down):
            if down:
                dx = b.mut_dev_diff
                dx[...] = 0
                dx[self.indices] = t.dev_diff


@register("BatchReindex")
class BatchReindexLayer(Layer):
    """top[i] = bottom[0][index[i]] along axis 0 (index = bottom[1], 1-D); backward sums repeated picks."""

    exact_num_bottom = 2
    exact_num_top = 1

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def reshape(self, bottom, top):
        self.check(bottom[1].num_axes == 1, "the index bottom must be 1-D, got shape %s" % bottom[1].shape_string())
        top[0].reshape((bottom[1].shape[0],) + bottom[0].shape[1:])

    def forward(self, bottom, top):
        idx = backend.to_host(bottom[1].dev_data).astype(np.int64)
        num = bottom[0].shape[0]
        self.check(bool((idx >= 0).all()), "index specified for reindex layer was negative: %s" % idx.tolist())
        self.check(bool((idx < num).all()), "index specified for reindex layer was greater than batch size %d: %s"
                   % (num, idx.tolist()))
        self.idx = self.xp.asarray(idx)
        if top[0].count:
            top[0].mut_dev_data[...] = bottom[0].dev_data[self.idx]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise index_error_bottom(self, 1)
        if not propagate_down[0]:
            return
        xp = self.xp
        num = bottom[0].shape[0]
        onehot = (self.idx[:, None] == xp.arange(num)[None, :]).astype(self.mdtype)
        dy = self.m(top[0].dev_diff).reshape(len(self.idx), -1)
        bottom[0].mut_dev_diff[...] = (onehot.T @ dy).reshape(bottom[0].shape)


@register("Silence")
class SilenceLayer(Layer):
    """Consumes blobs that would otherwise be net outputs; backward gives them zero diffs."""

    min_bottom = 1
    exact_num_top = 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for b, down in zip(bottom, propagate_down):
            if down:
                b.mut_dev_diff[...] = 0


@register("Reduction")
class ReductionLayer(Layer):
    """Reduces all axes from `axis` on by SUM, ASUM (sum |x|), SUMSQ or MEAN, times `coeff`."""

    precise = True

    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        p = self.layer_param.reduction_param
        b = bottom[0]
        self.axis = canonical_axis(self, b, p.axis) if b.num_axes else 0
        self.op = p.operation
        self.dims = (b.count_range(0, self.axis), b.count_range(self.axis))
        self.coeff = p.coeff / self.dims[1] if self.op == MEAN and self.dims[1] else p.coeff
        top[0].reshape(b.shape[:self.axis])

    def forward(self, bottom, top):
        xp = self.xp
        x = self.m(bottom[0].dev_data).reshape(self.dims)
        if self.op == ASUM:
            r = xp.abs(x).sum(axis=1)
        elif self.op == SUMSQ:
            r = (x * x).sum(axis=1)
        else:
            r = x.sum(axis=1)
        top[0].mut_dev_data[...] = (self.coeff * r).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        g = self.coeff * self.m(top[0].dev_diff).reshape(-1, 1)
        if self.op == ASUM:
            g = xp.sign(self.m(bottom[0].dev_data).reshape(self.dims)) * g
        elif self.op == SUMSQ:
            g = 2 * self.m(bottom[0].dev_data).reshape(self.dims) * g
        else:
            g = xp.broadcast_to(g, self.dims)
        bottom[0].mut_dev_diff[...] = g.reshape(bottom[0].shape)
