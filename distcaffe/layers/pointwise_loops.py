"""Compiled elementwise steps of BatchNorm, Scale and ReLU (numba, the optional `fast` extra): several numpy passes
over a blob fused into one, for the memory bandwidth they would each take.

Each loop makes the numpy fallback's floating-point operations in its order (numba rounds every float32 step as
numpy does and contracts nothing into FMAs), so both give identical bits. Arrays are C-contiguous (outer,
channels, inner) blobs, taken as (outer * channels, inner) rows (ReLU's: flat), each loop split over blocks of
them on the BLAS pool's threads (`cpu_split`; nogil). Only imported through
`fastpath.loops(xp, dtype, "pointwise_loops")`; compiled once per signature and cached on disk.
"""
import numpy as np
from numba import njit

from . import cpu_split


# Every loop updates one array in place and reads the others (the public calls below first copy the input into
# that array unless it already is it): with an output that may be an input, LLVM's runtime overlap check fails
# and it runs scalar code (measured 2.3x slower on BatchNorm's normalize). BatchNorm's centring writes a fresh
# array, never its input, and vectorizes as it is.
@njit(cache=True, nogil=True, error_model="numpy")
def _bn_center(r0, x, mean, xc):
    """xc = x - mean per channel (BatchNorm's centring; xc is never x here, so the loop vectorizes: 2.3 against
    numpy's 4.4 ms on 6.4M elements)."""
    C = mean.shape[0]
    for r in range(x.shape[0]):
        m = mean[(r0 + r) % C]
        for i in range(x.shape[1]):
            xc[r, i] = x[r, i] - m


@njit(cache=True, nogil=True, error_model="numpy")
def _bn_normalize(r0, a, std, top, copy):
    """a /= std per channel, then top = a when `copy` (row by row, while the row is in the cache)."""
    C = std.shape[0]
    for r in range(a.shape[0]):
        sc = std[(r0 + r) % C]
        for i in range(a.shape[1]):
            a[r, i] = a[r, i] / sc
        if copy:
            for i in range(a.shape[1]):
                top[r, i] = a[r, i]


@njit(cache=True, nogil=True, error_model="numpy")
def _bn_input_diff(r0, d, y, mean_g, mean_gy, std):
    """d = ((d - mean(g)) - mean(g y) y) / std per channel, d holding the top diff g: BatchNorm's bottom diff on
    batch statistics."""
    C = std.shape[0]
    for r in range(d.shape[0]):
        c = (r0 + r) % C
        mg, mgy, sc = mean_g[c], mean_gy[c], std[c]
        for i in range(d.shape[1]):
            d[r, i] = ((d[r, i] - mg) - mgy * y[r, i]) / sc


@njit(cache=True, nogil=True, error_model="numpy")
def _scale_bias(r0, a, s, b):
    """a = a * s + b per channel: Scale with its bias term."""
    C = s.shape[0]
    for r in range(a.shape[0]):
        c = (r0 + r) % C
        sc, bc = s[c], b[c]
        for i in range(a.shape[1]):
            a[r, i] = a[r, i] * sc + bc


@njit(cache=True, nogil=True, error_model="numpy")
def _relu_diff(d, x):
    """d *= (x > 0) of flat arrays, d holding the top diff: ReLU's bottom diff (numpy's bool factor is 1 or 0 in
    d's dtype, so the products, -0 and NaN included, are the same). Called on a part's views, not on (lo, hi)
    bounds of the whole arrays: a loop from lo to hi did not vectorize (6.4M elements, 1 thread: 11.9 ms against
    1.8, and numpy's 3.1)."""
    one, zero = d.dtype.type(1), d.dtype.type(0)
    for i in range(d.shape[0]):
        d[i] = d[i] * (one if x[i] > 0 else zero)


def _onto(dst, src):
    """dst holding src's values (copied unless they are one array): every loop here works in place."""
    if not np.may_share_memory(dst, src):
        dst[...] = src
    return dst


def _over_rows(loop, spec, *args):
    """`loop` over parts of the (outer * C) rows of its (outer, C, inner) arrays (letter a in `spec`; anything
    else passed whole): each part a block of whole rows, C-contiguous, so that the loops vectorize."""
    rows = [a.reshape(-1, a.shape[2]) if k == "a" else a for k, a in zip(spec, args)]

    def part(lo, hi):
        loop(lo, *[a[lo:hi] if k == "a" else a for k, a in zip(spec, rows)])
    cpu_split.run(part, rows[0].shape[0], sum(a.size for k, a in zip(spec, args) if k == "a"))


def bn_center(x, mean, xc):
    """xc = x - mean per channel, xc a fresh array (not x)."""
    _over_rows(_bn_center, "ava", x, mean, xc)


def bn_normalize(xc, std, top):
    """xc /= std per channel, then top = xc unless top is xc."""
    _over_rows(_bn_normalize, "avav", xc, std, top, top is not xc)


def bn_input_diff(g, y, mean_g, mean_gy, std, d):
    """d = ((g - mean_g) - mean_gy y) / std per channel (d may be g)."""
    _over_rows(_bn_input_diff, "aavvv", _onto(d, g), y, mean_g, mean_gy, std)


def scale_bias(x, s, b, out):
    """out = x * s + b per channel (out may be x)."""
    _over_rows(_scale_bias, "avv", _onto(out, x), s, b)


def relu_diff(dy, x, dx):
    """dx = dy * (x > 0) of flat arrays (dx may be dy), over parts of the elements."""
    _onto(dx, dy)
    cpu_split.run(lambda lo, hi: _relu_diff(dx[lo:hi], x[lo:hi]), dx.shape[0], 2 * dx.shape[0])
