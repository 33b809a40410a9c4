"""Compiled CPU layout copies for the register-tiled convolution's weight diff (numba, the `fast` extra): x
(N, C, H, W) into a channels-last zero-padded copy and the top diff (N, O, P) into a position-major one.

numpy's strided copies for these ran serially on one core at 2-3 ms a call on CIFAR-10 quick's conv2/conv3 while
the tile kernels beside them split over the BLAS pool's threads; these loops split over images too. A copy
changes no bit. Only imported through `fastpath.loops()`; compiled once per signature and cached on disk.
"""
from numba import njit

from . import cpu_split


@njit(cache=True, nogil=True, error_model="numpy")
def _channels_last_padded(x, out, ph, pw):
    """out (N, H + 2 ph, W + 2 pw, C) = x (N, C, H, W) moved channels-last at offset (ph, pw), zeros around."""
    N, C, H, W = x.shape
    hp, wp = out.shape[1], out.shape[2]
    for n in range(N):
        for y in range(hp):
            inside = ph <= y < ph + H
            for i in range(wp):
                if not inside or i < pw or i >= pw + W:
                    for c in range(C):
                        out[n, y, i, c] = 0
        for y in range(H):
            for c in range(C):
                for i in range(W):
                    out[n, y + ph, i + pw, c] = x[n, c, y, i]


@njit(cache=True, nogil=True, error_model="numpy")
def _position_major(dy, out):
    """out (N, P, S) = dy (N, O, P) with its last two axes swapped, outputs O..S-1 zero (whole output tiles)."""
    N, O, P = dy.shape
    S = out.shape[2]
    for n in range(N):
        for p in range(P):
            for o in range(O, S):
                out[n, p, o] = 0
        for o in range(O):
            for p in range(P):
                out[n, p, o] = dy[n, o, p]


channels_last_padded = cpu_split.over_planes(_channels_last_padded, 2)
position_major = cpu_split.over_planes(_position_major, 2)
