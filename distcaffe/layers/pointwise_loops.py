"""Compiled elementwise steps of BatchNorm, Scale and ReLU (numba, the optional `fast` extra): several numpy passes
over a blob fused into one, for the memory bandwidth they would each take.

Each loop makes the numpy fallback's floating-point operations in its order (numba rounds every float32 step as
numpy does and contracts nothing into FMAs), so both give identical bits. Arrays are C-contiguous (outer,
channels, inner) blobs, taken as (outer * channels, inner) rows (ReLU's: flat), each loop split over blocks of
them on the BLAS pool's threads (`cpu_split`; nogil). Only imported through
`fastpath.loops(xp, dtype, "pointwise_loops")`; compiled once per signature and cached on disk.
"""
from numba import njit

from . import cpu_split


# Every loop updates one array in place and reads the others: with an output that may be an input, LLVM's
# runtime overlap check fails and it runs scalar code (measured 2.3x slower on BatchNorm's normalize).
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
def _relu_diff(d, x, lo, hi):
    """d[lo:hi] *= (x > 0) of flat arrays, d holding the top diff: ReLU's bottom diff (numpy's bool factor is
    1 or 0 in d's dtype, so the products, -0 and NaN included, are the same)."""
    one, zero = d.dtype.type(1), d.dtype.type(0)
    for i in range(lo, hi):
        d[i] = d[i] * (one if x[i] > 0 else zero)


def relu_diff(d, x):
    """_relu_diff over parts of the flat elements."""
    cpu_split.run(lambda lo, hi: _relu_diff(d, x, lo, hi), d.shape[0], 2 * d.shape[0])


def _over_rows(loop, spec):
    """`loop` over parts of the (outer * C) rows of its (outer, C, inner) arrays (letter a in `spec`; anything
    else passed whole): each part a block of whole rows, C-contiguous, so that the loops vectorize."""
    def call(*args):
        rows = [a.reshape(-1, a.shape[2]) if k == "a" else a for k, a in zip(spec, args)]

        def part(lo, hi):
            loop(lo, *[a[lo:hi] if k == "a" else a for k, a in zip(spec, rows)])
        cpu_split.run(part, rows[0].shape[0], sum(a.size for k, a in zip(spec, args) if k == "a"))
    call.__name__, call.__doc__ = loop.__name__.lstrip("_"), loop.__doc__
    return call


bn_normalize = _over_rows(_bn_normalize, "avav")
bn_input_diff = _over_rows(_bn_input_diff, "aavvv")
scale_bias = _over_rows(_scale_bias, "avv")
