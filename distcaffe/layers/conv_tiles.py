"""Register-tiled direct convolution on CPU (numba, the `fast` extra): a stride-1 2-D convolution whose sums run
in CPU registers, 8 outputs x 16 (or 32) positions at a time, with no columns and no GEMM.

OpenBLAS runs the GEMMs of im2col convolutions with 32-64 outputs (CIFAR-10 quick, LeNet) at 55-85 GFLOP/s plus
the column copies; oneDNN's direct convolution runs them at ~100. This kernel takes each output's products in
(channel, ky, kx) order from the first, for 8 outputs at 16 positions of an output row (or 8 positions of two
rows; 32 positions where AVX-512 is, `_LAYOUTS`) held as scalars that LLVM's SLP vectorizer packs into vector
registers: ~98 GFLOP/s on CIFAR-10 quick's conv2 forward (Zen 4, 1 thread, unfused), bit for bit the sequential
sums of tests/test_conv_tiles.py's numpy reference. In float32 each product is fused into its sum (FMA, one
rounding instead of two; the order unchanged): CIFAR-10 quick forward+backward at 2 threads 70.8 -> 59.3 ms on a
Xeon with two 512-bit FMA ports, whose multiplies and adds issued apart took both ports for one product-add.
Float64's stay a rounded multiply and a rounded add, which numpy's references reproduce bit for bit (the
gradient checks run in float64). The data gradient of such a layer is the same kernel on the top diff with the
weights flipped and transposed (`data_gradient`); the weight diff's tiles are 8 outputs x 16 (or 32) consecutive
(kernel column, channel) values of a window row (`weight_gradient`), reading the top diff as the layer holds it
or, for many taps, a position-major copy where a tile's 8 outputs are adjacent.

The kernel's source is written out of a template (128-256 accumulators are no hand-written code) into this user's
cache directory and imported from there, so that numba caches its compilation like the other loops'. There is no
numpy twin of it: no numpy formulation of these sums in this order is within 10x of the GEMM, so with numba off
(or missing) the layer keeps its im2col + GEMM path, whose sums round differently (as cuDNN's do).
"""
import functools
import hashlib
import importlib.util
import os
import sys
import tempfile

import numpy as np

from . import cpu_split, fastpath
from .im2col import workspace

OUTPUTS = 8              # outputs of a tile (8 x 16 float32 accumulators: 8 AVX-512 or 16 AVX2 vectors)
POSITIONS = 16           # lanes of a weight-diff tile: 16 consecutive (kernel column, channel) values of a window row
# ... or twice as many where numba fills 512-bit registers and a window row has WIDE_WEIGHT_ROW values or more: 8 x
# 32 accumulators load each top diff value once for 32 products (2 threads, 12-04 Xeon, weight diff ms 16 -> 32
# lanes: ResNet-50 3x3 of 64 channels 13.6 -> 10.4, of 128 12.1 -> 8.8, CIFAR-10 quick conv2 8.5 -> 6.2, conv3
# 4.4 -> 3.2); below, half a tile idles (CIFAR-10 quick conv1, 15 values: 3.2 -> 4.3).
WIDE_WEIGHT_ROW = 24
# (least output row length, (run length, runs a tile)) of the forward tiles, the first that fits, by whether numba
# fills 512-bit registers (fastpath.full_width_vectors): 8 x 16 accumulators are the 16 ymm registers of AVX2;
# AVX-512's 32 zmm hold 8 x 32, which loads each weight once for twice the products (2 threads, 12-04 Xeon, ms
# from 16-position tiles: ResNet-50 3x3 of 64 channels on 56x56 8.5 -> 7.3, of 128 on 28x28 8.6 -> 6.3 with
# runs of 32; CIFAR-10 quick conv2 (16 wide) 4.8 -> 4.2 with two runs of 16, where one of 32 ran 6.7).
# Each output's sum is the same whatever its tile, so the layout moves no numbers.
_LAYOUTS = {False: ((12, (16, 1)), (0, (8, 2))), True: ((24, (32, 1)), (12, (16, 2)), (0, (8, 4)))}
# Bytes of input and top diff a chunk of the weight diff's positions spans (interleaved, 1 thread, CIFAR-10 quick
# conv2: 32 KB - 1 MB 15.4-17.0 ms, 4 MB 20.1, unchunked 20.8; conv3 8.3-8.7 / 11.2 / 11.7).
WEIGHT_CHUNK_BYTES = 512 << 10
# Taps (C x kh x kw) from which the weight diff reads a position-major copy of the top diff, whose 8 outputs of a
# tile are one vector load (interleaved in one process, 12-03, ms at 1 / 2 threads, planes -> positions: CIFAR-10
# quick conv2 (800 taps) 22.6 -> 20.1 / 14.6 -> 13.2, ResNet-50 3x3 128 (1152) 36.1 -> 32.2 / 22.8 -> 20.2,
# GoogLeNet 3x3 96 (864) 25.3 -> 20.1 / 15.9 -> 15.1; LeNet conv2 (500) level). Below, the copy costs more than
# it saves: CIFAR-10 quick conv1 (75 taps, its 4 KB planes a strided copy's worst case) 7.8 -> 17.0 ms.
POSITION_MAJOR_TAPS = 256


_HEADER = ["import numpy as np", "from numba import njit"]
_JIT = "@njit(cache=True, nogil=True, error_model='numpy', boundscheck=False%s)"
FUSED = {"float32": True, "float64": False}     # dtype: its multiply-adds contracted into FMAs (module docstring)


def _forward_source(run, runs):
    """Source of `tiles(x, ph, pw, wb, toff, segs, bias, out, lo, hi)` for tiles of OUTPUTS x (runs x run)
    positions."""
    acc = [(i, s, j) for i in range(OUTPUTS) for s in range(runs) for j in range(run)]
    lines = [
        "def tiles(x, ph, pw, wb, toff, segs, bias, out, lo, hi):",
        "    # x (N, C, H, W) images, each copied in turn into xn, its flat planes padded by (ph, pw); wb (B, R, %d)"
        % OUTPUTS,
        "    # weights by output block; toff (R,) tap offsets in xn; segs (S, %d, 3) (input offset, output offset," % runs,
        "    # valid positions) of each run; out (N, O, P); images lo..hi-1",
        "    R, O = toff.shape[0], out.shape[1]",
        "    C, H, W = x.shape[1], x.shape[2], x.shape[3]",
        "    wp = W + 2 * pw",
        "    plane = (H + 2 * ph) * wp",
        "    xn = np.zeros(C * plane + %d, x.dtype)" % run,
        "    tile = np.empty((%d, %d), out.dtype)" % (OUTPUTS, runs * run),
    ] + ["    u%d = np.uint64(%d)" % (j, j) for j in range(run)] + [
        "    for n in range(lo, hi):",
        "        for c in range(C):",
        "            for y in range(H):",
        "                row = c * plane + (y + ph) * wp + pw",
        "                for i in range(W):",
        "                    xn[row + i] = x[n, c, y, i]",
        "        on = out[n]",
        "        for b in range(wb.shape[0]):",
        "            w, o0 = wb[b], b * %d" % OUTPUTS,
        "            for s in range(segs.shape[0]):",
    ] + ["                p%d = segs[s, %d, 0]" % (s, s) for s in range(runs)] + [
        "                t = toff[0]",
    ] + ["                w%d = w[0, %d]" % (i, i) for i in range(OUTPUTS)] + [
        "                a%d_%d_%d = w%d * xn[p%d + t + u%d]" % (i, s, j, i, s, j) for i, s, j in acc] + [
        "                for r in range(1, R):",
        "                    t = toff[r]",
    ] + ["                    w%d = w[r, %d]" % (i, i) for i in range(OUTPUTS)] + [
        "                    x%d_%d = xn[p%d + t + u%d]" % (s, j, s, j) for s in range(runs) for j in range(run)] + [
        "                    a%d_%d_%d = a%d_%d_%d + w%d * x%d_%d" % (i, s, j, i, s, j, i, s, j) for i, s, j in acc] + [
        "                tile[%d, %d] = a%d_%d_%d" % (i, s * run + j, i, s, j) for i, s, j in acc] + [
        "                for i in range(min(%d, O - o0)):" % OUTPUTS,
        "                    bi = bias[o0 + i]",
        "                    for s2 in range(%d):" % runs,
        "                        q = np.int64(segs[s, s2, 1])",
        "                        for j in range(np.int64(segs[s, s2, 2])):",
        "                            on[o0 + i, q + j] = tile[i, s2 * %d + j] + bi" % run,
        "",
    ]
    return "\n".join(lines)


def _weight_source(major, lanes):
    """Source of `wtiles(x, dy, xoff, doff, out, row, step, chunk, lo, hi)`: weight-diff tiles of OUTPUTS
    outputs x `lanes` consecutive values of a window row (kernel column, channel), each summed over every
    position in order; the positions go in chunks (each tile's partial sums kept between them) so that a chunk's
    input and top diff stay in the cache while all the tiles run over it. `major` is the top diff's layout:
    "planes", as the layer holds it (a tile's 8 outputs a plane apart, `step`), or "positions", a copy (N * P,
    `step`) with the outputs padded to whole tiles, where a tile's 8 outputs are one contiguous vector."""
    acc = [(i, j) for i in range(OUTPUTS) for j in range(lanes)]
    if major == "planes":
        tile_outputs = ["            d%d = np.uint64(min(o0 + %d, O - 1) * step)" % (i, i) for i in range(OUTPUTS)]
        first, at, output = "doff[0]", "doff[p]", "d%d"
    else:
        tile_outputs = ["            ob = np.uint64(o0)"]
        first, at, output = "ob", "np.uint64(p * step) + ob", "u%d"
    lines = [
        "def wtiles(x, dy, xoff, doff, out, row, step, chunk, lo, hi):",
        "    # x flat channels-last padded input; dy flat top diff; xoff / doff (N * plane,) each position's offset",
        "    # in them (doff: %s); out (O, KH, KW * C); row: a padded input row's length; tiles lo..hi-1"
        % ("read" if major == "planes" else "unread, p * step"),
        "    O, KH, RUN = out.shape",
        "    Q = (RUN + %d) // %d" % (lanes - 1, lanes),
        "    NP = xoff.shape[0]",
        "    part = np.empty((hi - lo, %d, %d), out.dtype)" % (OUTPUTS, lanes),
    ] + ["    u%d = np.uint64(%d)" % (j, j) for j in range(lanes)] + [
        "    for c0 in range(0, NP, chunk):",
        "        for t in range(lo, hi):",
        "            o0, ky, q = (t // (KH * Q)) * %d, (t // Q) %% KH, t %% Q" % OUTPUTS,
        "            xb = np.uint64(ky * row + q * %d)" % lanes,
        "            pt = part[t - lo]",
    ] + tile_outputs + [
        "            if c0 == 0:",
        "                xa, da = xoff[0] + xb, %s" % first,
    ] + ["                a%d_%d = dy[da + %s] * x[xa + u%d]" % (i, j, output % i, j) for i, j in acc] + [
        "            else:",
    ] + ["                a%d_%d = pt[%d, %d]" % (i, j, i, j) for i, j in acc] + [
        "            for p in range(max(c0, 1), min(c0 + chunk, NP)):",
        "                xa, da = xoff[p] + xb, %s" % at,
    ] + ["                g%d = dy[da + %s]" % (i, output % i) for i in range(OUTPUTS)] + [
        "                x%d = x[xa + u%d]" % (j, j) for j in range(lanes)] + [
        "                a%d_%d = a%d_%d + g%d * x%d" % (i, j, i, j, i, j) for i, j in acc] + [
        "            pt[%d, %d] = a%d_%d" % (i, j, i, j) for i, j in acc] + [
        "    for t in range(lo, hi):",
        "        o0, ky, q = (t // (KH * Q)) * %d, (t // Q) %% KH, t %% Q" % OUTPUTS,
        "        for i in range(min(%d, O - o0)):" % OUTPUTS,
        "            for j in range(min(%d, RUN - q * %d)):" % (lanes, lanes),
        "                out[o0 + i, ky, q * %d + j] = part[t - lo, i, j]" % lanes,
        "",
    ]
    return "\n".join(lines)


def _cache_dir():
    """Where the generated kernels live: $DISTCAFFE_CACHE, else $XDG_CACHE_HOME or ~/.cache, /distcaffe; when that
    cannot be made, a private temporary directory of this process (never a shared one: its modules are imported)."""
    base = os.environ.get("DISTCAFFE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "distcaffe")
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
        return base
    except OSError:
        global _private
        if _private is None:
            _private = tempfile.mkdtemp(prefix="distcaffe-kernels-")
        return _private


_private = None
_kernels = {}
_SIGNATURES = {
    "tiles": "(%s[:, :, :, ::1], int64, int64, %s[:, :, ::1], uint64[::1], uint64[:, :, ::1], %s[::1], %s[:, :, ::1], "
             "int64, int64)",
    "wtiles": "(%s[::1], %s[::1], uint64[::1], uint64[::1], %s[:, :, ::1], int64, int64, int64, int64, int64)",
}


def _holds(path, source):
    """True when the file at `path` is exactly `source` (a file cut short or edited is written again)."""
    try:
        with open(path) as f:
            return f.read() == source
    except OSError:
        return False


def _source(function, *layout):
    """The module source of `function`'s kernels of `layout` ("tiles": forward tiles (run, runs); "wtiles":
    weight-diff tiles (major, lanes): the top diff's layout and the tile's width): one function a dtype,
    `<function>_<dtype>`, compiled with its multiply-adds fused where FUSED says."""
    body = {"tiles": _forward_source, "wtiles": _weight_source}[function](*layout)
    lines = list(_HEADER)
    for dtype, fused in FUSED.items():
        lines += ["", "", _JIT % (", fastmath={'contract'}" if fused else ""),
                  body.replace("def %s(" % function, "def %s_%s(" % (function, dtype), 1)]
    return "\n".join(lines)


def _kernel(function, *layout):
    """{dtype name: compiled kernel} of `_source(function, *layout)`: written (atomically, when the file does not
    hold it) into the cache directory and imported, compiled with numba's SLP vectorizer on (off by default; it
    packs the scalar sums into vectors and reassociates nothing). Once a process."""
    key = (function,) + layout
    if key not in _kernels:
        source = _source(function, *layout)
        name = "distcaffe_conv_%s_%s" % (function, hashlib.sha1(source.encode()).hexdigest()[:12])
        path = os.path.join(_cache_dir(), name + ".py")
        if not _holds(path, source):
            tmp = "%s.%d.tmp" % (path, os.getpid())
            with open(tmp, "w") as f:
                f.write(source)
            os.replace(tmp, path)
        from numba.core import config
        fastpath.full_width_vectors()
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        kernels = {dtype: getattr(module, "%s_%s" % (function, dtype)) for dtype in FUSED}
        before, config.SLP_VECTORIZE = config.SLP_VECTORIZE, 1
        try:
            for dtype, kernel in kernels.items():
                kernel.compile(_SIGNATURES[function].replace("%s", dtype))
        finally:
            config.SLP_VECTORIZE = before
        _kernels[key] = kernels
    return _kernels[key]


def applies(kernel, out_width):
    """True for the geometry the kernel computes well: output rows of 6+ positions (shorter rows leave most of a
    tile's positions unused) and more than one tap."""
    return out_width >= 6 and kernel[0] * kernel[1] > 1


def weights_apply(kernel, channels):
    """True where a window row (kernel columns x channels) fills most of a weight tile's POSITIONS lanes."""
    return kernel[1] * channels >= 12 and kernel[0] * kernel[1] > 1


def _layout(out_width):
    """(run length, runs a tile) of the forward tiles of an output row `out_width` long (_LAYOUTS)."""
    return next(layout for least, layout in _LAYOUTS[fastpath.full_width_vectors()] if out_width >= least)


@functools.lru_cache(maxsize=256)
def _forward_offsets(channels, plane, width, kernel, oh, ow, run, runs):
    """(toff, segs) of a geometry (kept, never written: a layer asks every pass): each tap's offset (channel,
    ky, kx) in the flat padded planes of `width`, and each tile's runs as (input offset, output offset, valid
    positions) along output rows, a last tile short of runs given empty ones."""
    taps = [ky * width + kx for ky in range(kernel[0]) for kx in range(kernel[1])]
    toff = np.array([ci * plane + t for ci in range(channels) for t in taps], dtype=np.uint64)
    flat = [(y * width + x, y * ow + x, min(run, ow - x)) for y in range(oh) for x in range(0, ow, run)]
    flat += [(0, 0, 0)] * (-len(flat) % runs)
    return toff, np.array(flat, dtype=np.uint64).reshape(-1, runs, 3)


@functools.lru_cache(maxsize=256)
def _weight_offsets(n, hp, wp, c, o, oh, ow):
    """(xoff, doff), kept and never written: each position's (image, row, column) offset in the flat
    channels-last padded input and in the flat top diff."""
    positions = np.arange(oh, dtype=np.uint64)[:, None] * np.uint64(wp * c) + \
        np.arange(ow, dtype=np.uint64) * np.uint64(c)
    xoff = (np.arange(n, dtype=np.uint64)[:, None, None] * np.uint64(hp * wp * c) + positions).reshape(-1)
    doff = (np.arange(n, dtype=np.uint64)[:, None] * np.uint64(o * oh * ow)
            + np.arange(oh * ow, dtype=np.uint64)).reshape(-1)
    return xoff, doff


def forward(x, w, bias, pad, kernel, out):
    """out (N, O, OH, OW) = x (N, C, H, W) convolved with w (O, C * kh * kw) at stride 1, zero padding `pad`
    (per axis, >= 0), plus bias (O,) unless None: each output the sum of its products in (channel, ky, kx)
    order from the first (float32's fused: FMA), then + bias. Split over images on the BLAS pool's threads (the
    same bits)."""
    n, c, h, wd = x.shape
    o, (oh, ow) = w.shape[0], out.shape[2:]
    hp, wp = h + 2 * pad[0], wd + 2 * pad[1]
    run, runs = _layout(ow)
    plane = hp * wp
    blocks = -(-o // OUTPUTS)
    wb = np.zeros((blocks * OUTPUTS, w.shape[1]), x.dtype)
    wb[:o] = w
    wb = np.ascontiguousarray(wb.reshape(blocks, OUTPUTS, -1).transpose(0, 2, 1))
    toff, segs = _forward_offsets(c, plane, wp, tuple(kernel), oh, ow, run, runs)
    b = np.zeros(o, x.dtype) if bias is None else np.ascontiguousarray(bias, dtype=x.dtype)
    dst = out.reshape(n, o, oh * ow)
    tiles = _kernel("tiles", run, runs)[x.dtype.name]
    x = np.ascontiguousarray(x)
    cpu_split.run(lambda lo, hi: tiles(x, pad[0], pad[1], wb, toff, segs, b, dst, lo, hi), n, x.size + out.size)


def data_gradient(dy, w, pad, kernel, dx):
    """dx (N, C, H, W) of a stride-1 convolution with weights w (O, C, kh, kw) and padding `pad` (each at most
    its kernel size - 1), from the top diff dy (N, O, OH, OW): the forward kernel on dy padded kernel - 1 - pad,
    with the weights flipped and transposed (C, O * kh * kw); each element's products summed in (output, ky,
    kx) order."""
    flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(w.shape[1], -1)
    forward(dy, flipped, None, [k - 1 - p for k, p in zip(kernel, pad)], kernel, dx)


def weight_gradient(x, dy, pad, kernel):
    """The weight diff (O, C, kh, kw) of a stride-1 convolution of x (N, C, H, W) with padding `pad`, from its
    top diff dy (N, O, OH, OW): each weight's products summed over the positions (image, row, column) in order
    from the first. Tiles of OUTPUTS outputs x POSITIONS (or twice: WIDE_WEIGHT_ROW) consecutive (kernel
    column, channel) values of a window row, read from a channels-last padded copy of x (and, from
    POSITION_MAJOR_TAPS taps, a position-major copy of dy: the same products in the same order), split over the
    BLAS pool's threads (the same bits)."""
    n, c, h, wd = x.shape
    o, oh, ow = dy.shape[1:]
    hp, wp = h + 2 * pad[0], wd + 2 * pad[1]
    layout = fastpath.loops(np, x.dtype, "layout_loops")
    lanes = 2 * POSITIONS if fastpath.full_width_vectors() and kernel[1] * c >= WIDE_WEIGHT_ROW else POSITIONS
    xs = workspace(np, "tiles_rows_in", (n * hp * wp * c + lanes,), x.dtype)       # (+: a last tile's reads)
    xs[n * hp * wp * c:] = 0
    layout.channels_last_padded(np.ascontiguousarray(x), xs[:n * hp * wp * c].reshape(n, hp, wp, c), *pad)
    xoff, doff = _weight_offsets(n, hp, wp, c, o, oh, ow)
    out = np.empty((o, kernel[0], kernel[1] * c), x.dtype)
    blocks = -(-o // OUTPUTS)
    count = blocks * kernel[0] * -(-kernel[1] * c // lanes)
    if c * kernel[0] * kernel[1] >= POSITION_MAJOR_TAPS:
        major, step = "positions", blocks * OUTPUTS
        flat = workspace(np, "tiles_rows_dy", (n, oh * ow, step), x.dtype)
        layout.position_major(np.ascontiguousarray(dy, dtype=x.dtype).reshape(n, o, -1), flat)
        flat = flat.reshape(-1)
    else:
        major, step = "planes", oh * ow
        flat = np.ascontiguousarray(dy, dtype=x.dtype).reshape(-1)
    chunk = max(1, WEIGHT_CHUNK_BYTES // (x.dtype.itemsize * (c * hp * wp + o * oh * ow) // (oh * ow)))
    wtiles = _kernel("wtiles", major, lanes)[x.dtype.name]
    cpu_split.run(lambda lo, hi: wtiles(xs, flat, xoff, doff, out, wp * c, step, chunk, lo, hi), count,
                  count * xoff.shape[0])
    return np.moveaxis(out.reshape(o, kernel[0], kernel[1], c), -1, 1)
