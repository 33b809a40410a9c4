"""Direct convolution forward for small receptive fields on CPU (LeNet's and CIFAR-10's first layers).

A stride-1 2-D convolution over few input channels x kernel taps (LeNet conv1: 25) makes OpenBLAS run a GEMM
of K = 25 at ~30 GFLOP/s after an im2col copy. Summing the zero-padded input planes shifted tap by tap, times
each tap's weight, makes the same products with no columns, at ~37 GFLOP/s in numba's loop
(window_loops.conv_direct_2d), split over images on any number of threads with the same bits. The numpy
fallback takes the same products and sums in the same order (bit-identical, and 14-29x slower than the loop: LeNet
conv1 15-21 against 1-1.4 ms; the `fast` extra is what makes this path pay).
"""
import numpy as np

from . import fastpath
from .im2col import padded, workspace


def _taps(kernel, width):
    """Each tap's offset in a plane of padded `width`, row-major (ky, kx)."""
    return np.array([ky * width + kx for ky in range(kernel[0]) for kx in range(kernel[1])], dtype=np.int64)


def forward(x, w, bias, pad, kernel, out):
    """out (N, O, OH, OW) = x (N, C, H, W) convolved with w (O, C * kh * kw) at stride 1, zero padding `pad`,
    plus bias (O,) unless None; for each output the taps' products are summed in (channel, ky, kx) order."""
    n, c, h, wd = x.shape
    if not x.size:                 # (as every path here, and as Caffe's blob without memory)
        raise ValueError("no data to convolve: the bottom is empty")
    hp, wp = h + 2 * pad[0], wd + 2 * pad[1]
    if any(pad):
        xs = padded(np, x, pad, (hp, wp), out=workspace(np, "direct_in", (n, c, hp, wp), x.dtype))
    else:
        xs = np.ascontiguousarray(x)
    xs = xs.reshape(n, c, hp * wp)
    w = np.ascontiguousarray(w)
    offsets = _taps(kernel, wp)
    loops = fastpath.loops(np, x.dtype)
    if loops is not None:
        b = bias if bias is not None else np.zeros(out.shape[1], out.dtype)
        loops.conv_direct_2d(xs, out, w, offsets, wp, b, bias is not None)
        return
    oh, ow = out.shape[2:]
    length = (oh - 1) * wp + ow                    # each plane as one run at the padded width
    plane = workspace(np, "direct_run", (n, out.shape[1], oh * wp), out.dtype)
    run, tap = plane[:, :, :length], workspace(np, "direct_tap", (n, out.shape[1], length), out.dtype)
    for q in range(w.shape[1]):
        ci, off = divmod(q, len(offsets))
        shifted = xs[:, ci, None, offsets[off]:offsets[off] + length]
        np.multiply(w[:, q, None], shifted, out=run if q == 0 else tap)
        if q:
            np.add(run, tap, out=run)
    y = plane.reshape(out.shape[:3] + (wp,))[..., :ow]
    if bias is not None:
        np.add(y, bias[:, None, None], out=out)
    else:
        out[...] = y
