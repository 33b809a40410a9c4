"""Compiled steps of LRN across channels (numba, the optional `fast` extra): the numpy code's chains of passes
over a blob (squares, a padded copy, one add per window channel, scaling; in backward eight such passes) made
image by image while its planes are in the cache.

Each loop makes the numpy fallback's floating-point operations in its order: the window's terms added first to
last with the padding's zeros included (so signed zeros come out alike), numpy's float32 constants, no FMAs; the
power scale^-beta stays numpy's. Both paths give identical bits (tests/test_layers_fastpath.py). Arrays are
C-contiguous (num, channels, positions); each call is split over parts of the images on the BLAS pool's threads
(`cpu_split`; nogil). Only imported through `fastpath.loops(xp, dtype, "lrn_loops")`.
"""
import numpy as np
from numba import njit

from . import cpu_split


@njit(cache=True, nogil=True, error_model="numpy")
def _window_add(out, src, c, pre, size, square):
    """out = the window sum over channels c - pre .. c - pre + size - 1 of src (squared when `square`), terms
    outside the channels being 0: out = t0, then out = out + t1, ... (numpy's shifted-slice order)."""
    C, M = src.shape
    zero = out.dtype.type(0)
    for k in range(size):
        j = c - pre + k
        if 0 <= j < C:
            if square:
                if k == 0:
                    for i in range(M):
                        out[i] = src[j, i] * src[j, i]
                else:
                    for i in range(M):
                        out[i] = out[i] + src[j, i] * src[j, i]
            else:
                if k == 0:
                    for i in range(M):
                        out[i] = src[j, i]
                else:
                    for i in range(M):
                        out[i] = out[i] + src[j, i]
        elif k == 0:
            for i in range(M):
                out[i] = zero
        else:
            for i in range(M):
                out[i] = out[i] + zero


@njit(cache=True, nogil=True, error_model="numpy")
def _scale(x, scale, size, alpha_n, k, lo, hi):
    """scale = k + alpha_n * (window sum of x^2 over channels), images lo..hi-1."""
    pre = (size - 1) // 2
    for n in range(lo, hi):
        for c in range(x.shape[1]):
            s = scale[n, c]
            _window_add(s, x[n], c, pre, size, True)
            for i in range(s.shape[0]):
                s[i] = k + alpha_n * s[i]


@njit(cache=True, nogil=True, error_model="numpy")
def _bottom_diff(x, g, scale, power, diff, size, coeff, lo, hi):
    """diff = g power - (coeff x) (window sum over channels of g (x power) / scale), images lo..hi-1."""
    pre = (size - 1) // 2
    C, M = x.shape[1], x.shape[2]
    t = np.empty((C, M), x.dtype)
    ratio = np.empty(M, x.dtype)
    for n in range(lo, hi):
        for c in range(C):
            for i in range(M):
                t[c, i] = g[n, c, i] * (x[n, c, i] * power[n, c, i]) / scale[n, c, i]
        for c in range(C):
            _window_add(ratio, t, c, pre, size, False)
            for i in range(M):
                diff[n, c, i] = g[n, c, i] * power[n, c, i] - (coeff * x[n, c, i]) * ratio[i]


def scale(x, out, size, alpha_n, k):
    """out = k + alpha_n * sum of x^2 over each channel's window of `size` (x, out: (num, C, positions))."""
    alpha_n, k = x.dtype.type(alpha_n), x.dtype.type(k)
    cpu_split.run(lambda lo, hi: _scale(x, out, size, alpha_n, k, lo, hi), x.shape[0], 2 * x.size)


def bottom_diff(x, g, scale, power, diff, size, coeff):
    """LRN's bottom diff across channels into `diff` (which overlaps none of the inputs)."""
    coeff = x.dtype.type(coeff)
    cpu_split.run(lambda lo, hi: _bottom_diff(x, g, scale, power, diff, size, coeff, lo, hi), x.shape[0],
                  5 * x.size)
