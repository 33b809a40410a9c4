"""Window views and their adjoint (im2col / col2im) shared by convolution, pooling and LRN.

Arrays hold their spatial axes as a contiguous run starting at `axis` (2 for (B, C, *spatial); 1 for the
batch-last (C, *spatial, B) layout convolution uses so that copies and slice-adds run over long rows).
`windows` is Caffe's im2col as a zero-copy strided view: spatial -> (*kernel, *out).
`accumulate_windows` is col2im: it adds every window back onto the (padded) plane, looping over kernel
offsets only (each step one strided slice add over all images and channels), so overlapping windows
sum in Caffe's kernel-offset order without any scatter; 2-D col2im runs as a compiled loop when numba is
installed (`fastpath`), with the same additions in the same order. `col2im_rows` is col2im for columns laid
out one receptive field per row (the data gradient of the convolution's im2row rows).
`workspace` hands out reusable scratch arrays so that no pass allocates its columns afresh.
"""
import itertools
import threading

import numpy as np

from . import fastpath

_scratch = threading.local()


def workspace(xp, slot, shape, dtype):
    """A scratch array of `shape` reused across calls and layers of this thread (Caffe's shared col buffer):
    one flat numpy buffer per (slot, dtype), grown when needed, so no pass page-faults fresh memory in. Its
    contents are garbage. On a GPU a fresh array from cupy's memory pool, as before (device memory stays LMS's)."""
    if xp is not np:
        return xp.empty(shape, dtype=dtype)
    pool = _scratch.__dict__.setdefault("pool", {})
    key = (slot, np.dtype(dtype).str)
    size = prod(shape)
    buf = pool.get(key)
    if buf is None or buf.size < size:
        buf = pool[key] = np.empty(size, dtype=dtype)
    return buf[:size].reshape(shape)


def release_workspace():
    """Free this thread's scratch buffers (Large Model Support keeps them inside each pass's workspace)."""
    _scratch.__dict__.pop("pool", None)


def prod(values):
    return int(np.prod(values, dtype=np.int64)) if len(values) else 1


def conv_out_size(size, kernel, stride, pad, dilation):
    """Caffe's output size of a convolution along one axis."""
    extent = dilation * (kernel - 1) + 1
    return (size + 2 * pad - extent) // stride + 1


def _spatial(x, axis, n, values):
    """An index tuple selecting `values` (slices/ints) on the n spatial axes starting at `axis`."""
    return (slice(None),) * axis + tuple(values) + (slice(None),) * (x.ndim - axis - n)


def padded(xp, x, pad, padded_shape, value=0, axis=2, out=None):
    """`x` placed at offset `pad` on its spatial axes inside an array of spatial shape `padded_shape`; into
    `out` when given (a reused workspace), filling only its border with `value`, not the whole array."""
    n = len(pad)
    spatial = x.shape[axis:axis + n]
    padded_shape = tuple(padded_shape)
    if out is None:
        if not any(pad) and padded_shape == tuple(spatial):
            return x
        out = xp.full(x.shape[:axis] + padded_shape + x.shape[axis + n:], value, dtype=x.dtype)
    else:
        for i, (p, s) in enumerate(zip(pad, spatial)):
            for side in (slice(0, p), slice(p + s, None)):
                out[_spatial(out, axis, n, [slice(None)] * i + [side])] = value
    out[_spatial(out, axis, n, [slice(p, p + s) for p, s in zip(pad, spatial)])] = x
    return out


def crop(x, pad, shape, axis=2):
    """The interior of a padded array (inverse of `padded`)."""
    return x[_spatial(x, axis, len(pad), [slice(p, p + s) for p, s in zip(pad, shape)])]


def windows(xp, xpad, kernel, stride, dilation, out_shape, axis=2):
    """Strided view of `xpad` with its spatial axes replaced by (*kernel, *out): element [.., k.., o.., ..]
    is xpad[.., o*stride + k*dilation, ..] per axis (Caffe's im2col columns, no copy)."""
    n = len(kernel)
    sp = xpad.strides[axis:axis + n]
    shape = xpad.shape[:axis] + tuple(kernel) + tuple(out_shape) + xpad.shape[axis + n:]
    strides = (xpad.strides[:axis] + tuple(d * s for d, s in zip(dilation, sp))
               + tuple(st * s for st, s in zip(stride, sp)) + xpad.strides[axis + n:])
    return xp.lib.stride_tricks.as_strided(xpad, shape=shape, strides=strides)


def accumulate_windows(xp, col, padded_shape, stride, dilation, axis=2, kernel=None, dtype=None):
    """col2im onto a zeroed padded plane (the adjoint of `windows`). `col` is the (.., *kernel, *out, ..)
    array, or a function of the kernel offset returning that offset's (.., *out, ..) piece (then
    `kernel` and `dtype` are given)."""
    n = len(padded_shape)
    if callable(col):
        piece = col
    else:
        kernel, dtype = col.shape[axis:axis + n], col.dtype

        def piece(offs):
            return col[(slice(None),) * axis + tuple(offs)]
    first = piece((0,) * n)
    out_shape = first.shape[axis:axis + n]
    acc = xp.zeros(first.shape[:axis] + tuple(padded_shape) + first.shape[axis + n:], dtype=dtype)
    for offs in itertools.product(*[range(k) for k in kernel]):
        dst = [slice(k * d, k * d + (o - 1) * s + 1, s) for k, d, o, s in zip(offs, dilation, out_shape, stride)]
        acc[_spatial(acc, axis, n, dst)] += first if not any(offs) else piece(offs)
    return acc


def im2col(xp, x, kernel, stride, pad, dilation, out_shape, axis=2, out=None):
    """Caffe's im2col: a (.., *kernel, *out, ..) view of the zero-padded input, or that copied into `out` (then
    padded in a reused workspace: a fresh padded copy a call paged in ~0.1 ms of memory each time)."""
    n = len(kernel)
    spatial = x.shape[axis:axis + n]
    shape = [s + 2 * p for s, p in zip(spatial, pad)]
    scratch = None
    if out is not None and any(pad):
        scratch = workspace(xp, "im2col_pad", x.shape[:axis] + tuple(shape) + x.shape[axis + n:], x.dtype)
    xpad = padded(xp, x, pad, shape, axis=axis, out=scratch)
    view = windows(xp, xpad, kernel, stride, dilation, out_shape, axis)
    if out is None:
        return view
    out = out.reshape(view.shape)
    out[...] = view
    return out


def col2im(xp, col, spatial, stride, pad, dilation, axis=2):
    """Caffe's col2im: sum the (.., *kernel, *out, ..) columns back into the (.., *spatial, ..) input (on the
    compiled path a scratch array, valid until the next col2im)."""
    loops = fastpath.loops(xp, col.dtype)
    if loops is not None and len(spatial) == 2:
        lead, trail = prod(col.shape[:axis]), prod(col.shape[axis + 4:])
        kh, kw, oh, ow = col.shape[axis:axis + 4]
        c5 = np.ascontiguousarray(col).reshape(lead, kh, kw, oh, ow * trail)
        out = workspace(np, "col2im", (lead,) + tuple(spatial) + (trail,), col.dtype)
        loops.col2im_2d(c5, out.reshape(lead, spatial[0], spatial[1] * trail), trail, stride[0], stride[1],
                        dilation[0], dilation[1], pad[0], pad[1])
        return out.reshape(col.shape[:axis] + tuple(spatial) + col.shape[axis + 4:])
    acc = accumulate_windows(xp, col, [s + 2 * p for s, p in zip(spatial, pad)], stride, dilation, axis)
    return crop(acc, pad, spatial, axis)


def col2im_rows(xp, col, spatial, stride, pad, dilation):
    """col2im of row columns `col` (G, n, *out, *kernel, cg): each output position's receptive field one
    contiguous row, channels fastest (im2row's layout; OpenBLAS runs the convolution's GEMMs over such rows
    faster than over (kernel_dim, positions) columns for few outputs). Returns the (n, G, cg, *spatial) sum (a
    view; on the compiled path of a scratch array, valid until the next col2im), with the additions of
    `col2im` in its kernel-offset order."""
    n = len(spatial)
    groups, num, cg = col.shape[0], col.shape[1], col.shape[-1]
    loops = fastpath.loops(xp, col.dtype)
    if loops is not None and n == 2:
        out = workspace(np, "col2im", (groups, num) + tuple(spatial) + (cg,), col.dtype)
        out[...] = 0
        loops.col2im_rows_2d(np.ascontiguousarray(col), out, stride[0], stride[1], dilation[0], dilation[1],
                             pad[0], pad[1])
        return out.transpose(1, 0, 4, 2, 3)
    # (n, G, cg, *kernel, *out) view for the offset-by-offset slice adds
    view = col.transpose((1, 0, 2 * n + 2) + tuple(range(2 + n, 2 + 2 * n)) + tuple(range(2, 2 + n)))
    acc = accumulate_windows(xp, view, [s + 2 * p for s, p in zip(spatial, pad)], stride, dilation, axis=3)
    return crop(acc, pad, spatial, axis=3)
