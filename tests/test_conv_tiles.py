"""The register-tiled direct convolution (layers/conv_tiles.py, numba): bit for bit the sequential sums of numpy
references, forward and data gradient in (channel, ky, kx) order in every tile layout (AVX2's and AVX-512's),
the weight diff in position order across chunks, float64 rounded twice a product and float32 fused (FMA); the
Convolution layer takes it where it applies (numba on) and matches its own im2col + GEMM path (numba off) to
float32 rounding; the generated kernels are written and cached once. (1 and 3 threads: test_layers_fastpath.py's
split test.)"""
import os
import subprocess
import sys

import numpy as np
import pytest

from distcaffe.blob import Blob
from distcaffe.layers import conv_tiles, fastpath
from distcaffe.net import TRAIN
from layer_harness import fast_pass, make_layer

RNG = np.random.default_rng(11)


def _multiply_add(acc, a, b):
    """acc + a * b as the kernels compute it: in float64 a rounded product and a rounded sum; in float32 fused,
    one rounding (emulated in float64: the product exact, the sum rounded twice, which differs from once only at a
    float32 tie that these data never meet)."""
    if acc.dtype == np.float32:
        return (acc.astype(np.float64) + a.astype(np.float64) * b.astype(np.float64)).astype(np.float32)
    return acc + a * b


def _reference(x, w, bias, pad, kernel):
    """Each output the sum of its products from the first, in (channel, ky, kx) order, then + bias (0 if none)."""
    n, c, h, wd = x.shape
    kh, kw = kernel
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh, ow = h + 2 * pad[0] - kh + 1, wd + 2 * pad[1] - kw + 1
    acc, r = None, 0
    for ci in range(c):
        for ky in range(kh):
            for kx in range(kw):
                wr, xr = w[:, r][None, :, None, None], xp[:, ci, None, ky:ky + oh, kx:kx + ow]
                acc = wr * xr if acc is None else _multiply_add(acc, wr, xr)
                r += 1
    b = np.zeros(w.shape[0], x.dtype) if bias is None else bias
    return acc + b[None, :, None, None]


GEOMETRIES = [            # (N, C, H, W), outputs, kernel, pad: both layouts, partial tiles and blocks
    ((3, 4, 9, 13), 11, (3, 2), (1, 0)),
    ((2, 3, 8, 8), 16, (5, 5), (2, 2)),
    ((2, 2, 7, 20), 9, (3, 3), (1, 1)),
    ((1, 5, 6, 30), 3, (2, 4), (0, 1)),
    ((2, 3, 4, 61), 10, (3, 3), (1, 1)),
    ((2, 1, 12, 12), 20, (5, 5), (0, 0)),
]


@pytest.fixture(params=[False, True], ids=["ymm_tiles", "zmm_tiles"])
def wide(request, monkeypatch):
    """Both sets of forward tile layouts (AVX2's and AVX-512's), whichever this CPU has."""
    monkeypatch.setattr(fastpath, "full_width_vectors", lambda: request.param)
    return request.param


def test_every_output_row_has_a_layout(wide):
    runs = {conv_tiles._layout(width) for width in range(6, 80)}
    assert runs == ({(32, 1), (16, 2), (8, 4)} if wide else {(16, 1), (8, 2)})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,outputs,kernel,pad", GEOMETRIES)
def test_tiled_forward_is_the_sequential_sum_bit_for_bit(shape, outputs, kernel, pad, dtype, wide):
    x = RNG.standard_normal(shape).astype(dtype)
    w = RNG.standard_normal((outputs, shape[1] * kernel[0] * kernel[1])).astype(dtype)
    for bias in (RNG.standard_normal(outputs).astype(dtype), None):
        want = _reference(x, w, bias, pad, kernel)
        got = np.full(want.shape, np.nan, dtype)
        conv_tiles.forward(x, w, bias, pad, kernel, got)
        assert np.array_equal(got, want)


@pytest.mark.parametrize("shape,outputs,kernel,pad", GEOMETRIES)
def test_tiled_data_gradient_is_the_flipped_convolution(shape, outputs, kernel, pad, wide):
    """The data gradient's sums are the reference's on the top diff padded kernel - 1 - pad with flipped,
    transposed weights, and equal the adjoint of the forward: <dy, conv(x)> = <data_gradient(dy), x>."""
    x = RNG.standard_normal(shape)
    w = RNG.standard_normal((outputs, shape[1]) + kernel)
    top = np.empty((shape[0], outputs, shape[2] + 2 * pad[0] - kernel[0] + 1, shape[3] + 2 * pad[1] - kernel[1] + 1))
    conv_tiles.forward(x, w.reshape(outputs, -1), None, pad, kernel, top)
    dy = RNG.standard_normal(top.shape)
    dx = np.full(shape, np.nan)
    conv_tiles.data_gradient(dy, w, pad, kernel, dx)
    flipped = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(shape[1], -1)
    assert np.array_equal(dx, _reference(dy, flipped, None, [k - 1 - p for k, p in zip(kernel, pad)], kernel))
    assert np.isclose(np.vdot(dy, top), np.vdot(dx, x), rtol=1e-12)


def _weight_reference(x, dy, pad, kernel):
    """Each weight's products summed over the positions (image, row, column) from the first."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    acc = None
    for n in range(dy.shape[0]):
        for y in range(dy.shape[2]):
            for col in range(dy.shape[3]):
                g, xw = dy[n, :, y, col][:, None, None, None], xp[n, None, :, y:y + kernel[0], col:col + kernel[1]]
                acc = g * xw if acc is None else _multiply_add(acc, g, xw)
    return acc


@pytest.mark.parametrize("lanes", [16, 32])                        # a tile's window-row values
@pytest.mark.parametrize("major_taps", [0, 1 << 30])               # the top diff position-major, as held
@pytest.mark.parametrize("chunk_bytes", [1, 1 << 12, 1 << 30])     # a chunk a position, a few, one
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,outputs,kernel,pad", GEOMETRIES)
def test_tiled_weight_diff_is_the_sum_over_positions_bit_for_bit(shape, outputs, kernel, pad, dtype, chunk_bytes,
                                                               major_taps, lanes, monkeypatch):
    monkeypatch.setattr(fastpath, "full_width_vectors", lambda: lanes == 32)
    monkeypatch.setattr(conv_tiles, "WIDE_WEIGHT_ROW", 1)
    monkeypatch.setattr(conv_tiles, "WEIGHT_CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(conv_tiles, "POSITION_MAJOR_TAPS", major_taps)
    x = RNG.standard_normal(shape).astype(dtype)
    dy = RNG.standard_normal((shape[0], outputs, shape[2] + 2 * pad[0] - kernel[0] + 1,
                              shape[3] + 2 * pad[1] - kernel[1] + 1)).astype(dtype)
    got = conv_tiles.weight_gradient(x, dy, pad, kernel)
    assert got.dtype == dtype
    assert np.array_equal(got, _weight_reference(x, dy, pad, kernel))


CONVS = [                   # (parameters, bottom shape, taps a channel)
    ('num_output: 32 kernel_size: 5 pad: 2', (3, 32, 16, 16), 25),       # CIFAR-10 quick's conv2
    ('num_output: 12 kernel_size: 5 pad: 2', (2, 4, 8, 8), 25),           # its conv3's row length
    ('num_output: 20 kernel_h: 3 kernel_w: 5 pad_h: 1 pad_w: 1 bias_term: false', (2, 4, 10, 14), 15),
]


@pytest.mark.parametrize("params,shape,taps", CONVS)
def test_layer_takes_the_tiles_and_matches_its_gemm_path(params, shape, taps, monkeypatch):
    calls = []
    for name in ("forward", "data_gradient", "weight_gradient"):
        real = getattr(conv_tiles, name)
        monkeypatch.setattr(conv_tiles, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    text = 'type: "Convolution" convolution_param { %s weight_filler { type: "gaussian" } }' % params
    x = RNG.standard_normal(shape).astype(np.float32)
    fast = fast_pass(text, x, np.float32, True)
    assert calls == ["forward", "weight_gradient", "data_gradient", "forward"]   # (the data gradient: a forward)
    del calls[:]
    gemm = fast_pass(text, x, np.float32, False)
    assert calls == []
    for name, a, b in zip(["top", "bottom diff", "weight diff", "bias diff"], fast, gemm):
        scale = np.abs(b).max()
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-6 * scale * (shape[1] * taps) ** 0.5, err_msg=name)


@pytest.mark.parametrize("params,shape,why", [
    ('num_output: 8 kernel_size: 3 stride: 2', (2, 3, 13, 13), "stride"),
    ('num_output: 8 kernel_size: 3 group: 2', (2, 4, 13, 13), "groups"),
    ('num_output: 264 kernel_size: 5 pad: 2', (2, 8, 13, 13), "outputs"),
    ('num_output: 8 kernel_size: 5', (2, 1, 13, 13), "taps"),
])
def test_layer_keeps_the_gemm_path_where_tiles_do_not_apply(params, shape, why, monkeypatch):
    monkeypatch.setattr(conv_tiles, "forward", lambda *a: pytest.fail("tiled forward for " + why))
    monkeypatch.setattr(conv_tiles, "data_gradient", lambda *a: pytest.fail("tiled gradient for " + why))
    monkeypatch.setattr(conv_tiles, "weight_gradient", lambda *a: pytest.fail("tiled weight diff for " + why))
    fast_pass('type: "Convolution" convolution_param { %s }' % params, RNG.standard_normal(shape), np.float32, True)


def _tiled_calls(monkeypatch, params, shape, absent, present):
    """Calls of the tiled `present` in one layer pass, failing on any call of the tiled `absent`."""
    calls = []
    monkeypatch.setattr(conv_tiles, absent, lambda *a: pytest.fail("tiled %s for %s" % (absent, params)))
    real = getattr(conv_tiles, present)
    monkeypatch.setattr(conv_tiles, present, lambda *a: calls.append(1) or real(*a))
    fast_pass('type: "Convolution" convolution_param { %s }' % params, RNG.standard_normal(shape), np.float32, True)
    return len(calls)


def test_short_rows_keep_the_gemm_forward(monkeypatch):
    """Rows of 4 positions would leave most of a forward tile unused; the weight diff, whose tiles run along
    window rows (kernel columns x channels), is still tiled."""
    assert _tiled_calls(monkeypatch, "num_output: 8 kernel_size: 3 pad: 1", (2, 8, 4, 4), "forward",
                        "weight_gradient") == 1


@pytest.mark.parametrize("wide", [False, True])
def test_more_outputs_are_tiled_where_vectors_are_512_bits(wide, monkeypatch):
    """136 outputs: im2col + GEMM with 256-bit vectors (up to TILED_OUTPUTS, 128), tiles with 512-bit ones (up
    to WIDE_TILED_OUTPUTS, 256)."""
    monkeypatch.setattr(fastpath, "full_width_vectors", lambda: wide)
    calls = []
    for name in ("forward", "weight_gradient"):
        real = getattr(conv_tiles, name)
        monkeypatch.setattr(conv_tiles, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    fast_pass('type: "Convolution" convolution_param { num_output: 136 kernel_size: 5 pad: 2 }',
              RNG.standard_normal((2, 8, 13, 13)), np.float32, True)
    assert set(calls) == ({"forward", "weight_gradient"} if wide else set())


def test_first_layer_takes_the_tiled_weight_diff_only(monkeypatch):
    """A net's first convolution (no bottom diff wanted, 3 channels: window rows of 15) gets the tiled weight
    diff, as the GEMM path's to float32 rounding."""
    calls = []
    real = conv_tiles.weight_gradient
    monkeypatch.setattr(conv_tiles, "weight_gradient", lambda *a: calls.append(1) or real(*a))
    text = 'type: "Convolution" convolution_param { num_output: 32 kernel_size: 5 pad: 2 }'
    x = RNG.standard_normal((2, 3, 12, 12)).astype(np.float32)
    diffs = []
    for fast in (True, False):
        before = fastpath.set_enabled(fast)
        try:
            layer = make_layer(text, np.float32, TRAIN)
            bottom, top = Blob(x.shape, np.float32), Blob(dtype=np.float32)
            bottom.data[...] = x
            layer.setup([bottom], [top])
            top.diff[...] = np.random.default_rng(2).standard_normal(top.shape)
            layer.blobs[0].diff[...] = 1                         # (Caffe accumulates into the diff)
            layer.backward([top], [False], [bottom])
            diffs.append(layer.blobs[0].diff.copy())
        finally:
            fastpath.set_enabled(before)
    assert calls == [1]
    np.testing.assert_allclose(diffs[0], diffs[1], rtol=1e-5, atol=1e-4)


def test_an_unpadded_layer_on_small_planes_keeps_the_gemm_data_gradient(monkeypatch):
    """LeNet's conv2 (5x5, no padding, 12x12 -> 8x8): the flipped convolution would sum 2.25x the useful
    products, so its data gradient stays im2row's; its forward is tiled."""
    assert _tiled_calls(monkeypatch, "num_output: 50 kernel_size: 5", (2, 20, 12, 12), "data_gradient",
                        "forward") == 1


def test_padding_past_the_kernel_keeps_the_gemm_data_gradient(monkeypatch):
    """pad >= kernel has no flipped convolution (its padding would be negative): the forward is tiled, the
    data gradient is col2im's."""
    assert _tiled_calls(monkeypatch, "num_output: 8 kernel_size: 3 pad: 3", (2, 8, 7, 7), "data_gradient",
                        "forward") == 1


def test_generated_kernels_are_written_once_and_cached(tmp_path):
    """A fresh process writes each layout's source into DISTCAFFE_CACHE and numba caches its compilation (a
    function a dtype) beside it; a second process finds both and compiles nothing."""
    code = ("import numpy as np, sys; from distcaffe.layers import conv_tiles\n"
            "for w in (8, 16):\n"
            "    x = np.ones((1, 2, 5, w), np.float32); out = np.empty((1, 3, 5, w), np.float32)\n"
            "    conv_tiles.forward(x, np.ones((3, 18), np.float32), None, [1, 1], [3, 3], out)\n"
            "    assert out[0, 0, 2, 2] == 18\n"
            "print(sum(k.stats.cache_misses.get(s, 0) for ks in conv_tiles._kernels.values() for k in ks.values()\n"
            "          for s in k.signatures))")
    env = dict(os.environ, DISTCAFFE_CACHE=str(tmp_path))
    env.pop("NUMBA_CACHE_DIR", None)                  # (numba would cache there instead)
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    sources = sorted(p.name for p in tmp_path.glob("distcaffe_conv_tiles_*.py"))
    assert len(sources) == 2
    assert len(list(tmp_path.glob("__pycache__/distcaffe_conv_tiles_*.nbi"))) == 2 * len(conv_tiles.FUSED)
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert second.stdout.split()[-1] == "0"
    assert sorted(p.name for p in tmp_path.glob("distcaffe_conv_tiles_*.py")) == sources
    assert not list(tmp_path.glob("*.tmp"))


def test_unwritable_cache_falls_back_to_a_private_temporary_directory(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("DISTCAFFE_CACHE", str(blocked / "cache"))
    monkeypatch.setattr(conv_tiles, "_private", None)
    import tempfile
    where = conv_tiles._cache_dir()
    assert os.path.dirname(where) == tempfile.gettempdir() and os.path.basename(where).startswith("distcaffe-")
    assert os.stat(where).st_mode & 0o077 == 0                  # (mkdtemp: this user's alone)
    assert conv_tiles._cache_dir() == where


def test_a_damaged_kernel_file_is_written_again(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTCAFFE_CACHE", str(tmp_path))
    monkeypatch.setattr(conv_tiles, "_kernels", {})
    monkeypatch.setattr(conv_tiles, "POSITION_MAJOR_TAPS", 1 << 30)
    source = conv_tiles._source("wtiles", "planes", 16)
    conv_tiles._kernel("wtiles", "planes", 16)
    (path,) = tmp_path.glob("distcaffe_conv_wtiles_*.py")
    path.write_text(source[:100])                              # cut short
    monkeypatch.setattr(conv_tiles, "_kernels", {})
    kernel = conv_tiles._kernel("wtiles", "planes", 16)
    assert path.read_text() == source
    x = np.ones((1, 2, 4, 6), np.float32)
    np.testing.assert_array_equal(conv_tiles.weight_gradient(x, np.ones((1, 3, 4, 6), np.float32), [1, 1], [1, 2]),
                                  _weight_reference(x, np.ones((1, 3, 4, 6), np.float32), [1, 1], [1, 2]))
    assert kernel is conv_tiles._kernels[("wtiles", "planes", 16)]


@pytest.mark.parametrize("pad", [(0, 0), (1, 0), (0, 2), (2, 3)])
def test_padded_into_a_dirty_workspace_equals_np_pad(pad):
    """The kernels pad into reused workspaces, writing only the border and the interior: nothing of what the
    buffer held before (another layer's data) may survive, channels-first or channels-last."""
    from distcaffe.layers.im2col import padded
    x = RNG.standard_normal((2, 3, 5, 4)).astype(np.float32)
    expect = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    out = np.full(expect.shape, np.nan, np.float32)
    assert padded(np, x, pad, expect.shape[2:], out=out) is out
    np.testing.assert_array_equal(out, expect)
    layout = fastpath.loops(np, np.float32, "layout_loops")
    last = np.full(np.moveaxis(expect, 1, -1).shape, np.nan, np.float32)
    layout.channels_last_padded(x, last, *pad)
    np.testing.assert_array_equal(last, np.moveaxis(expect, 1, -1))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layout_copies_into_dirty_workspaces_equal_numpy(dtype, threads, monkeypatch):
    """The weight diff's compiled copies (channels-last padded x, position-major top diff with its outputs
    padded to whole tiles), split over images, equal numpy's transposes bit for bit and leave nothing of the
    buffer's earlier contents."""
    from distcaffe.layers import cpu_split
    monkeypatch.setattr(cpu_split, "MIN_PART", 1)
    monkeypatch.setattr(cpu_split.backend, "blas_threads", lambda: threads)
    layout = fastpath.loops(np, dtype, "layout_loops")
    x = RNG.standard_normal((5, 7, 6, 9)).astype(dtype)
    x[0, 0, 0, 0] = -0.0
    last = np.full((5, 6 + 4, 9 + 2, 7), np.nan, dtype)
    layout.channels_last_padded(x, last, 2, 1)
    np.testing.assert_array_equal(last, np.pad(np.moveaxis(x, 1, -1), ((0, 0), (2, 2), (1, 1), (0, 0))))
    assert np.signbit(last[0, 2, 1, 0])
    dy = RNG.standard_normal((5, 11, 30)).astype(dtype)
    major = np.full((5, 30, 16), np.nan, dtype)
    layout.position_major(dy, major)
    np.testing.assert_array_equal(major, np.pad(dy.transpose(0, 2, 1), ((0, 0), (0, 0), (0, 5))))
