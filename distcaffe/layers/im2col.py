"""Window views and their adjoint (im2col / col2im) shared by convolution, pooling and LRN.

`windows` is Caffe's im2col as a zero-copy strided view: (B, C, *spatial) -> (B, C, *kernel, *out).
`accumulate_windows` is col2im: it adds every window back onto the (padded) input plane, looping over
kernel offsets only (each step is one strided slice add over all images and channels), so overlapping
windows sum in Caffe's kernel-offset order without any scatter.
"""
import itertools

import numpy as np


def conv_out_size(size, kernel, stride, pad, dilation):
    """Caffe's output size of a convolution along one axis."""
    extent = dilation * (kernel - 1) + 1
    return (size + 2 * pad - extent) // stride + 1


def padded(xp, x, pad, padded_shape, value=0):
    """`x` (B, C, *spatial) placed at offset `pad` inside a (B, C, *padded_shape) array filled with `value`."""
    spatial = x.shape[2:]
    padded_shape = tuple(padded_shape)
    if not any(pad) and padded_shape == tuple(spatial):
        return x
    out = xp.full(x.shape[:2] + padded_shape, value, dtype=x.dtype)
    inner = tuple(slice(p, p + s) for p, s in zip(pad, spatial))
    out[(slice(None), slice(None)) + inner] = x
    return out


def windows(xp, xpad, kernel, stride, dilation, out_shape):
    """Strided view (B, C, *kernel, *out) of a padded (B, C, *spatial) array: element [b, c, k.., o..] is
    xpad[b, c, o*stride + k*dilation] per axis (Caffe's im2col column layout, no copy)."""
    n = len(kernel)
    lead, lead_strides = xpad.shape[:-n] if n else xpad.shape, xpad.strides[:-n] if n else xpad.strides
    sp_strides = xpad.strides[len(xpad.shape) - n:]
    shape = tuple(lead) + tuple(kernel) + tuple(out_shape)
    strides = (tuple(lead_strides) + tuple(d * s for d, s in zip(dilation, sp_strides))
               + tuple(st * s for st, s in zip(stride, sp_strides)))
    return xp.lib.stride_tricks.as_strided(xpad, shape=shape, strides=strides)


def accumulate_windows(xp, col, padded_shape, stride, dilation, dtype=None):
    """col2im onto a zeroed (B, C, *padded_shape) array: the adjoint of `windows`."""
    n = len(padded_shape)
    kernel = col.shape[2:2 + n]
    out_shape = col.shape[2 + n:]
    acc = xp.zeros(col.shape[:2] + tuple(padded_shape), dtype=dtype or col.dtype)
    lead = (slice(None), slice(None))
    for offs in itertools.product(*[range(k) for k in kernel]):
        dst = tuple(slice(k * d, k * d + (o - 1) * s + 1, s)
                    for k, d, o, s in zip(offs, dilation, out_shape, stride))
        acc[lead + dst] += col[lead + offs]
    return acc


def crop(x, pad, shape):
    """The (B, C, *shape) interior of a padded array (inverse of `padded`)."""
    inner = tuple(slice(p, p + s) for p, s in zip(pad, shape))
    return x[(slice(None), slice(None)) + inner]


def im2col(xp, x, kernel, stride, pad, dilation, out_shape):
    """Caffe's im2col of x (B, C, *spatial): a (B, C, *kernel, *out) view of the zero-padded input."""
    spatial = x.shape[2:]
    xpad = padded(xp, x, pad, [s + 2 * p for s, p in zip(spatial, pad)])
    return windows(xp, xpad, kernel, stride, dilation, out_shape)


def col2im(xp, col, spatial, stride, pad, dilation):
    """Caffe's col2im: sum the (B, C, *kernel, *out) columns back into a (B, C, *spatial) array."""
    acc = accumulate_windows(xp, col, [s + 2 * p for s, p in zip(spatial, pad)], stride, dilation)
    return crop(acc, pad, spatial)


def prod(values):
    return int(np.prod(values, dtype=np.int64)) if len(values) else 1
