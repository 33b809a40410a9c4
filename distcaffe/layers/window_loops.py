"""Compiled CPU loops for col2im (two column layouts), MAX/AVE pooling and the direct convolution of small
receptive fields (numba, the optional `fast` extra).

Each loop makes the same floating-point operations in the same order as the numpy code it replaces
(im2col.accumulate_windows, PoolingLayer's offset loops, direct_conv's tap sums): sums take the kernel offsets in
row-major order (from zero; the direct convolution from its first tap's product), so the fast path and the numpy
fallback give bit-identical results. The public names run each loop over parts of its independent outputs on the
BLAS pool's threads (`cpu_split`; nogil), which changes no bit either. Only imported through
`fastpath.loops()`; compiled once per signature and cached on disk (cache=True). error_model="numpy": a
division by zero gives inf/nan as numpy does (Caffe's degenerate ceil-mode AVE windows), not an exception.
"""
import numpy as np
from numba import njit

from . import cpu_split


@njit(cache=True, nogil=True, error_model="numpy")
def _tap(o, k, stride, dilation, pad, size):
    """The input index output o reads at kernel offset k along one axis; -1 in the padding."""
    x = o * stride + k * dilation - pad
    return x if 0 <= x < size else -1


@njit(cache=True, nogil=True, error_model="numpy")
def _col2im_2d(col, out, B, sh, sw, dh, dw, ph, pw):
    """out (C, H, W * B) = the sum from zero of columns (C, kh, kw, OH, OW * B), offset by offset (each channel
    zeroed just before its adds); padding positions are dropped. With stride 1 along the width a row's valid
    outputs add onto one contiguous run of the plane (one vectorized loop per kernel offset and row)."""
    C, kh, kw, OH = col.shape[:4]
    OW = col.shape[4] // B
    H, W = out.shape[1], out.shape[2] // B
    for c in range(C):
        out[c] = 0
        for i in range(kh):
            for j in range(kw):
                lo, hi = max(0, pw - j * dw), min(OW, W + pw - j * dw)     # stride 1: taps inside the row
                for oh in range(OH):
                    h = _tap(oh, i, sh, dh, ph, H)
                    if h < 0:
                        continue
                    if sw == 1:
                        if lo < hi:
                            # the run as two views indexed from 0 (an offset index t + shift would keep numba's
                            # negative-index wraparound in the loop, which then does not vectorize: 3-6x slower)
                            shift = (j * dw - pw) * B
                            dst = out[c, h, lo * B + shift:hi * B + shift]
                            src = col[c, i, j, oh, lo * B:hi * B]
                            for t in range(dst.shape[0]):
                                dst[t] += src[t]
                        continue
                    src, dst = col[c, i, j, oh], out[c, h]
                    for ow in range(OW):
                        w = _tap(ow, j, sw, dw, pw, W)
                        if w >= 0:
                            for b in range(B):
                                dst[w * B + b] += src[ow * B + b]


@njit(cache=True, nogil=True, error_model="numpy")
def _col2im_rows_2d(col, out, C, b0, b1, sh, sw, dh, dw, ph, pw):
    """out (G, B, H, W * cg) += row columns (G, B, OH, OW, kh, kw * cg) for images b0..b1 (cg = C). Outputs
    are visited last to first, so each element takes its kernel offsets in increasing order (col2im_2d's
    order); channels run innermost over contiguous memory on both sides, and without dilation a row's taps
    inside the image are one contiguous run (whole arrays and an image range are passed, not slices of the
    image axis, which would not be contiguous; the runs are views indexed from 0 so that the adds vectorize)."""
    G, OH, OW, kh = col.shape[0], col.shape[2], col.shape[3], col.shape[4]
    kw = col.shape[5] // C
    H, W = out.shape[2], out.shape[3] // C
    for g in range(G):
        for b in range(b0, b1):
            for oh in range(OH - 1, -1, -1):
                for ow in range(OW - 1, -1, -1):
                    start = ow * sw - pw
                    lo, hi = max(0, -start), min(kw, W - start)          # taps inside the row (no dilation)
                    for i in range(kh):
                        h = _tap(oh, i, sh, dh, ph, H)
                        if h < 0:
                            continue
                        if dw == 1:
                            if lo < hi:
                                dst = out[g, b, h, (start + lo) * C:(start + hi) * C]
                                src = col[g, b, oh, ow, i, lo * C:hi * C]
                                for t in range(dst.shape[0]):
                                    dst[t] += src[t]
                            continue
                        for j in range(kw):
                            w = _tap(ow, j, sw, dw, pw, W)
                            if w >= 0:
                                dst = out[g, b, h, w * C:(w + 1) * C]
                                src = col[g, b, oh, ow, i, j * C:(j + 1) * C]
                                for t in range(C):
                                    dst[t] += src[t]


@njit(cache=True, nogil=True, error_model="numpy")
def _window(o, stride, pad, kernel, size):
    """Start of output o's window along one axis (may be negative) and its span [lo, hi) inside the image."""
    start = o * stride - pad
    return start, max(start, 0), min(start + kernel, size)


@njit(cache=True, nogil=True, error_model="numpy")
def _four_inside(ow, OW, w0, ws, sw, pw, kw, W):
    """True when windows ow..ow+3 of a row exist and lie wholly inside it (no clipping on either side)."""
    return ow + 3 < OW and ws == w0 and (ow + 3) * sw - pw + kw <= W


@njit(cache=True, nogil=True, error_model="numpy")
def _better(v, best, k, offset):
    """One step of Caffe's MAX scan: v replaces (best, k) only when strictly greater (NaN never does)."""
    take = v > best
    return (v if take else best), (offset if take else k)


@njit(cache=True, nogil=True, error_model="numpy")
def _max_pool(x, out, arg, kh, kw, sh, sw, ph, pw, lowest):
    """Caffe's MAX scan per window of x (P, H, W), row by row: strictly greater wins (first max kept, NaN
    never wins); arg is the winning kernel offset i * kw + j, -1 when none. Four neighbouring windows that
    lie wholly inside a row are scanned side by side (four independent compare chains instead of one; each
    window still takes its elements in the same order)."""
    P, H, W = x.shape
    OH, OW = out.shape[1], out.shape[2]
    for p in range(P):
        for oh in range(OH):
            h0, hs, he = _window(oh, sh, ph, kh, H)
            ow = 0
            while ow < OW:
                w0, ws, we = _window(ow, sw, pw, kw, W)
                if _four_inside(ow, OW, w0, ws, sw, pw, kw, W):
                    b0 = b1 = b2 = b3 = lowest
                    k0 = k1 = k2 = k3 = -1
                    for h in range(hs, he):
                        for j in range(kw):
                            kk = (h - h0) * kw + j
                            w = w0 + j
                            b0, k0 = _better(x[p, h, w], b0, k0, kk)
                            b1, k1 = _better(x[p, h, w + sw], b1, k1, kk)
                            b2, k2 = _better(x[p, h, w + 2 * sw], b2, k2, kk)
                            b3, k3 = _better(x[p, h, w + 3 * sw], b3, k3, kk)
                    out[p, oh, ow], out[p, oh, ow + 1], out[p, oh, ow + 2], out[p, oh, ow + 3] = b0, b1, b2, b3
                    arg[p, oh, ow], arg[p, oh, ow + 1], arg[p, oh, ow + 2], arg[p, oh, ow + 3] = k0, k1, k2, k3
                    ow += 4
                    continue
                best = lowest
                k = -1
                for h in range(hs, he):
                    for w in range(ws, we):
                        best, k = _better(x[p, h, w], best, k, (h - h0) * kw + (w - w0))
                out[p, oh, ow] = best
                arg[p, oh, ow] = k
                ow += 1


# The two backward loops visit outputs last to first: an input element then receives its contributions in
# increasing kernel offset, the order of the numpy fallback's offset-by-offset slice adds.
@njit(cache=True, nogil=True, error_model="numpy")
def _max_unpool(g, arg, dx, kh, kw, sh, sw, ph, pw):
    """dx (P, H, W) = g routed to each window's winner, summed from zero (each plane zeroed just before its
    adds, while it is in the cache)."""
    P, OH, OW = g.shape
    di = np.empty(kh * kw, np.int64)           # offset -> (row, column): no integer division per element
    dj = np.empty(kh * kw, np.int64)
    for k in range(kh * kw):
        di[k] = k // kw
        dj[k] = k % kw
    for p in range(P):
        dx[p] = 0
        for oh in range(OH - 1, -1, -1):
            for ow in range(OW - 1, -1, -1):
                k = arg[p, oh, ow]
                if k >= 0:
                    dx[p, oh * sh - ph + di[k], ow * sw - pw + dj[k]] += g[p, oh, ow]


@njit(cache=True, nogil=True, error_model="numpy")
def _max_unpool_tiled(g, arg, dx, kh, kw):
    """dx (P, OH * kh, OW * kw) = g at each window's winner, 0 elsewhere, for windows that tile dx exactly
    (kernel = stride, no padding): every element written once, no zeroing pass. A winner gets 0 + g, the
    fallback's sum (-0 becomes +0)."""
    P, OH, OW = g.shape
    zero = dx.dtype.type(0)
    for p in range(P):
        for oh in range(OH):
            for i in range(kh):
                for ow in range(OW):
                    k = arg[p, oh, ow] - i * kw
                    v = zero + g[p, oh, ow]
                    for j in range(kw):
                        dx[p, oh * kh + i, ow * kw + j] = v if k == j else zero


@njit(cache=True, nogil=True, error_model="numpy")
def _ave_pool(x, out, div, kh, kw, sh, sw, ph, pw, zero):
    """Window sums of x (P, H, W) from zero, row by row, divided by div (OH, OW). Padding adds nothing: a
    sum started at +0 is never -0, so the fallback's added padding zeros change no bit. Four neighbouring
    interior windows are summed side by side, as in max_pool."""
    P, H, W = x.shape
    OH, OW = out.shape[1], out.shape[2]
    for p in range(P):
        for oh in range(OH):
            _, hs, he = _window(oh, sh, ph, kh, H)
            ow = 0
            while ow < OW:
                w0, ws, we = _window(ow, sw, pw, kw, W)
                if _four_inside(ow, OW, w0, ws, sw, pw, kw, W):
                    s0 = s1 = s2 = s3 = zero
                    for h in range(hs, he):
                        for w in range(w0, w0 + kw):
                            s0 += x[p, h, w]
                            s1 += x[p, h, w + sw]
                            s2 += x[p, h, w + 2 * sw]
                            s3 += x[p, h, w + 3 * sw]
                    out[p, oh, ow], out[p, oh, ow + 1] = s0 / div[oh, ow], s1 / div[oh, ow + 1]
                    out[p, oh, ow + 2], out[p, oh, ow + 3] = s2 / div[oh, ow + 2], s3 / div[oh, ow + 3]
                    ow += 4
                    continue
                s = zero
                for h in range(hs, he):
                    for w in range(ws, we):
                        s += x[p, h, w]
                out[p, oh, ow] = s / div[oh, ow]
                ow += 1


@njit(cache=True, nogil=True, error_model="numpy")
def _ave_unpool(gd, dx, kh, kw, sh, sw, ph, pw):
    """dx (P, H, W) = the sum from zero of each window's already divided top diff gd (P, OH, OW) (each plane
    zeroed just before its adds)."""
    P, OH, OW = gd.shape
    H, W = dx.shape[1], dx.shape[2]
    for p in range(P):
        dx[p] = 0
        for oh in range(OH - 1, -1, -1):
            _, hs, he = _window(oh, sh, ph, kh, H)
            for ow in range(OW - 1, -1, -1):
                _, ws, we = _window(ow, sw, pw, kw, W)
                v = gd[p, oh, ow]
                for h in range(hs, he):
                    for w in range(ws, we):
                        dx[p, h, w] += v


@njit(cache=True, nogil=True, error_model="numpy")
def _conv_direct_2d(x, out, w, offsets, width, bias, add_bias):
    """out (N, O, OH, OW) = for each output channel the sum over taps (channel, ky, kx, in that order, from the
    first tap's product) of w times the zero-padded planes x (N, C, Hp * width) shifted by the tap's offset,
    then + bias: a stride-1 convolution without columns. Each plane is computed as one run of (OH - 1) * width
    + OW positions at the padded width (the positions past OW in a row are computed and dropped), so every tap
    is one vectorized loop; four taps share a pass over the run."""
    N, C = x.shape[0], x.shape[1]
    O, OH, OW = out.shape[1], out.shape[2], out.shape[3]
    K = offsets.shape[0]
    L = (OH - 1) * width + OW
    run = np.empty(L, out.dtype)
    for n in range(N):
        for o in range(O):
            first = True
            for c in range(C):
                src = x[n, c]
                k = 0
                while k < K:
                    q = c * K + k
                    if first:
                        w0, s0 = w[o, q], src[offsets[k]:offsets[k] + L]
                        for p in range(L):
                            run[p] = w0 * s0[p]
                        first = False
                        k += 1
                    elif k + 4 <= K:
                        w0, w1, w2, w3 = w[o, q], w[o, q + 1], w[o, q + 2], w[o, q + 3]
                        s0, s1 = src[offsets[k]:offsets[k] + L], src[offsets[k + 1]:offsets[k + 1] + L]
                        s2, s3 = src[offsets[k + 2]:offsets[k + 2] + L], src[offsets[k + 3]:offsets[k + 3] + L]
                        for p in range(L):
                            run[p] = (((run[p] + w0 * s0[p]) + w1 * s1[p]) + w2 * s2[p]) + w3 * s3[p]
                        k += 4
                    else:
                        w0, s0 = w[o, q], src[offsets[k]:offsets[k] + L]
                        for p in range(L):
                            run[p] = run[p] + w0 * s0[p]
                        k += 1
            b = bias[o]
            for y in range(OH):
                r, d = run[y * width:y * width + OW], out[n, o, y]
                if add_bias:
                    for i in range(OW):
                        d[i] = r[i] + b
                else:
                    for i in range(OW):
                        d[i] = r[i]


# --- the public loops: each split over its independent outputs (planes; col2im_rows_2d: images) ----------
col2im_2d = cpu_split.over_planes(_col2im_2d, 2)
max_pool = cpu_split.over_planes(_max_pool, 3)
max_unpool = cpu_split.over_planes(_max_unpool, 3)
max_unpool_tiled = cpu_split.over_planes(_max_unpool_tiled, 3)
ave_pool = cpu_split.over_planes(_ave_pool, 2)
ave_unpool = cpu_split.over_planes(_ave_unpool, 2)
conv_direct_2d = cpu_split.over_planes(_conv_direct_2d, 2)


def col2im_rows_2d(col, out, *geometry):
    """_col2im_rows_2d of col (G, B, OH, OW, kh, kw, cg) into out (G, B, H, W, cg), over parts of the images
    (axis 1 of both: each image's sums are its own)."""
    c = col.shape[6]
    col6 = col.reshape(col.shape[:5] + (col.shape[5] * c,))
    out4 = out.reshape(out.shape[:3] + (out.shape[3] * c,))
    cpu_split.run(lambda lo, hi: _col2im_rows_2d(col6, out4, c, lo, hi, *geometry), col.shape[1],
                  col.size + out.size)
