"""The compiled CPU loops (numba, the `fast` extra) against the numpy fallback: bit-identical tops and diffs
for pooling (MAX with mask, AVE), convolution / deconvolution / Im2col (col2im) on random shapes, including odd
strides, padding and ceil-mode edge windows, the direct convolution forward, BatchNorm / Scale (pointwise loops)
in place and not, and LRN across channels; and the loops split over 2 threads (cpu_split) against one thread.
`make test` installs the extra, so numba must be there. (The tiled convolution, which has no numpy twin, is
held to its numpy reference in tests/test_conv_tiles.py; the cases here keep the GEMM paths.)"""
import numpy as np
import pytest

from distcaffe.layers import fastpath
from distcaffe.net import TEST
from layer_harness import fast_pass

RNG = np.random.default_rng(7)


def test_compiled_loops_are_installed():
    assert fastpath.enabled(), "numba is missing: install the 'fast' extra (make test does)"


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64) if a.dtype.kind == "f" else a


def _same(text, shape, dtype=np.float32, num_top=1, ties=False, **how):
    x = RNG.standard_normal(shape).astype(dtype)
    if ties:                                   # repeated values and signed zeros: first-max and -0 rules
        x = np.round(x).astype(dtype)
        x[x == 0] = np.where(RNG.random((x == 0).sum()) < 0.5, -0.0, 0.0)
    fast = fast_pass(text, x, dtype, True, num_top, **how)
    slow = fast_pass(text, x, dtype, False, num_top, **how)
    assert len(fast) == len(slow)
    for i, (a, b) in enumerate(zip(fast, slow)):
        assert a.shape == b.shape
        assert np.array_equal(_bits(a), _bits(b)), "output %d differs (%s)" % (i, text)


def _pool_cases():
    rng = np.random.default_rng(3)
    cases = []
    for _ in range(24):
        k = [int(rng.integers(1, 5)), int(rng.integers(1, 5))]
        s = [int(rng.integers(1, 4)), int(rng.integers(1, 4))]
        p = [int(rng.integers(0, k[0])), int(rng.integers(0, k[1]))]
        hw = [int(rng.integers(k[0], 13)), int(rng.integers(k[1], 13))]
        cases.append((k, s, p, (int(rng.integers(1, 3)), int(rng.integers(1, 4))) + tuple(hw)))
    return cases


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("k,s,p,shape", _pool_cases())
def test_pooling_fast_path_is_bit_identical(method, k, s, p, shape):
    text = ('type: "Pooling" pooling_param { pool: %s kernel_h: %d kernel_w: %d stride_h: %d stride_w: %d '
            'pad_h: %d pad_w: %d }' % ((method,) + tuple(k) + tuple(s) + tuple(p)))
    _same(text, shape, num_top=2 if method == "MAX" else 1)
    _same(text, shape, np.float64)
    _same(text, shape, ties=True)


@pytest.mark.parametrize("text,shape", [
    ('pool: MAX kernel_size: 3 stride: 2', (2, 3, 8, 8)),          # ceil mode: the last window hangs over
    ('pool: AVE kernel_size: 3 stride: 2', (2, 3, 8, 8)),
    ('pool: MAX kernel_size: 3 stride: 2 pad: 1', (1, 2, 6, 7)),   # clipped last window (starts in the pad)
    ('pool: AVE kernel_size: 3 stride: 2 pad: 2', (1, 2, 5, 5)),
    ('pool: AVE global_pooling: true', (2, 4, 7, 7)),
    ('pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR', (2, 2, 7, 9)),
    ('pool: MAX kernel_size: 2 stride: 2', (2, 3, 8, 6)),             # windows tile the input: no zeroing
    ('pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 3 stride_w: 2', (1, 2, 9, 4)),
])
def test_pooling_edge_windows_are_bit_identical(text, shape):
    _same('type: "Pooling" pooling_param { %s }' % text, shape, ties=True)
    _same('type: "Pooling" pooling_param { %s }' % text, shape)


@pytest.mark.parametrize("layer,params,shape", [
    ("Convolution", "num_output: 4 kernel_size: 3 pad: 1", (2, 3, 7, 6)),
    ("Convolution", "num_output: 6 kernel_size: 3 stride: 2 pad: 2 group: 3", (2, 6, 9, 8)),
    ("Convolution", "num_output: 2 kernel_h: 5 kernel_w: 2 stride_h: 3 stride_w: 1 pad_h: 1 pad_w: 1", (3, 2, 11, 5)),
    ("Convolution", "num_output: 3 kernel_size: 2 dilation: 2 stride: 1", (2, 2, 7, 7)),
    ("Convolution", "num_output: 3 kernel_size: 11 stride: 4", (2, 3, 27, 27)),
    ("Deconvolution", "num_output: 3 kernel_size: 4 stride: 2 pad: 1", (2, 2, 5, 4)),
    ("Im2col", "kernel_size: 3 stride: 2 pad: 1", (2, 3, 7, 6)),
])
@pytest.mark.parametrize("per_image,column_bytes,row_outputs", [
    (1, 1 << 30, 0), (1 << 60, 1 << 30, 0), (1 << 60, 1, 0), (1 << 60, 1 << 30, 1 << 30), (1 << 60, 1, 1 << 30)])
def test_col2im_fast_path_is_bit_identical(layer, params, shape, per_image, column_bytes, row_outputs,
                                           monkeypatch):
    from distcaffe.layers.vision import ConvolutionLayer
    monkeypatch.setattr(ConvolutionLayer, "PER_IMAGE_POSITIONS", per_image)     # every GEMM layout
    monkeypatch.setattr(ConvolutionLayer, "COLUMN_BYTES", column_bytes)
    monkeypatch.setattr(ConvolutionLayer, "COLUMN_BYTES_PER_THREAD", column_bytes)
    monkeypatch.setattr(ConvolutionLayer, "PER_IMAGE_MACS", 1)
    monkeypatch.setattr(ConvolutionLayer, "ROWS_OUTPUTS", row_outputs)  # columns and im2row rows
    monkeypatch.setattr(ConvolutionLayer, "ROWS_KERNEL_DIM", 1)
    monkeypatch.setattr(ConvolutionLayer, "TILED_KERNEL_DIM", 1 << 30)    # (tiles: no numpy twin, own tests)
    text = 'type: "%s" convolution_param { %s }' % (layer, params)
    _same(text, shape)
    _same(text, shape, np.float64)


@pytest.mark.parametrize("params,shape", [
    ("num_output: 4 kernel_size: 3 pad: 1", (2, 3, 7, 6)),
    ("num_output: 5 kernel_h: 5 kernel_w: 2 pad_h: 2", (2, 2, 9, 5)),     # 10 taps a channel: 4 + 4 + 1 + 1
    ("num_output: 3 kernel_size: 2 bias_term: false", (3, 1, 6, 6)),
    ("num_output: 20 kernel_size: 5", (4, 1, 12, 12)),                   # LeNet conv1's geometry
    ("num_output: 2 kernel_size: 3 pad: 2", (1, 3, 2, 2)),               # more padding than input
    ("num_output: 2 kernel_size: 3", (2, 2, 3, 8)),                      # one output row
])
def test_direct_convolution_fast_path_is_bit_identical(params, shape, monkeypatch):
    """The direct forward (window_loops.conv_direct_2d against direct_conv's numpy sums), signed zeros too."""
    from distcaffe.layers import direct_conv
    calls = []
    real = direct_conv.forward
    monkeypatch.setattr(direct_conv, "forward", lambda *args: calls.append(1) or real(*args))
    text = 'type: "Convolution" convolution_param { %s }' % params
    _same(text, shape)
    _same(text, shape, np.float64)
    _same(text, shape, ties=True)
    assert len(calls) == 6                       # every pass, fast and fallback, took the direct forward


@pytest.mark.parametrize("params,shape", [
    ("num_output: 3 kernel_size: 3 pad: 1", (5, 2, 9, 8)),              # direct_conv's loop
    ("num_output: 16 kernel_size: 3 pad: 1", (5, 6, 9, 14)),            # conv_tiles: forward and both diffs
])
def test_direct_convolution_split_over_threads_gives_the_same_bits(params, shape, monkeypatch):
    """The direct forward (and the tiled convolution's three kernels) cut into parts for 3 threads give one
    thread's bits."""
    from threadpoolctl import threadpool_limits
    from distcaffe.layers import cpu_split
    monkeypatch.setattr(cpu_split, "MIN_PART", 1)
    seen = []
    real = cpu_split.run
    monkeypatch.setattr(cpu_split, "run", lambda fn, n, work, threads=None, **kw: seen.append(
        len(cpu_split.parts(n, work, threads))) or real(fn, n, work, threads, **kw))
    text = 'type: "Convolution" convolution_param { %s }' % params
    x = RNG.standard_normal(shape).astype(np.float32)
    results = []
    for threads in (1, 3):
        with threadpool_limits(threads):
            results.append(fast_pass(text, x, np.float32, True))
    assert max(seen) == 3
    for i, (a, b) in enumerate(zip(*results)):
        assert np.array_equal(_bits(a), _bits(b)), "output %d differs between 1 and 3 threads" % i


POINTWISE = [
    'type: "ReLU"',
    'type: "BatchNorm"',
    'type: "BatchNorm" batch_norm_param { eps: 0.001 }',
    'type: "Scale" scale_param { bias_term: true }',
    'type: "Scale" scale_param { bias_term: true axis: 1 num_axes: 1 }',
]


@pytest.mark.parametrize("text", POINTWISE)
@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (2, 16, 9), (3, 7)])
@pytest.mark.parametrize("in_place", [False, True])
def test_pointwise_fast_path_is_bit_identical(text, shape, in_place):
    _same(text, shape, in_place=in_place)
    _same(text, shape, np.float64, in_place=in_place)
    _same(text, shape, ties=True, in_place=in_place)             # signed zeros


LRN = [
    'type: "LRN" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }',        # AlexNet's, GoogLeNet's
    'type: "LRN" lrn_param { local_size: 3 alpha: 0.5 beta: 0.6 k: 2 }',
    'type: "LRN" lrn_param { local_size: 1 alpha: 1 beta: 1 }',
    'type: "LRN" lrn_param { local_size: 7 alpha: 3 beta: 0.75 }',             # wider than some inputs' channels
]


@pytest.mark.parametrize("text", LRN)
@pytest.mark.parametrize("shape", [(2, 9, 5, 6), (3, 2, 4, 4), (1, 16, 1, 3)])
def test_lrn_fast_path_is_bit_identical(text, shape, monkeypatch):
    """LRN across channels: the compiled window sums and bottom diff against numpy's passes, signed zeros
    included; the compiled steps really ran (once each per fast pass)."""
    from distcaffe.layers import lrn_loops
    calls = []
    for name in ("scale", "bottom_diff"):
        real = getattr(lrn_loops, name)
        monkeypatch.setattr(lrn_loops, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    _same(text, shape)
    _same(text, shape, np.float64)
    _same(text, shape, ties=True)
    assert calls == ["scale", "bottom_diff"] * 3


def test_lrn_within_channel_and_in_place_stay_on_numpy(monkeypatch):
    """WITHIN_CHANNEL windows and a bottom diff that is the top diff (in place) take the numpy steps."""
    from distcaffe.layers import lrn_loops
    calls = []
    monkeypatch.setattr(lrn_loops, "bottom_diff", lambda *a: calls.append(a))
    _same('type: "LRN" lrn_param { local_size: 3 norm_region: WITHIN_CHANNEL }', (2, 3, 6, 5))
    _same(LRN[0], (2, 9, 5, 6), in_place=True)
    assert calls == []


def test_batchnorm_global_stats_fast_path_is_bit_identical():
    text = 'type: "BatchNorm" batch_norm_param { use_global_stats: true }'
    for in_place in (False, True):
        _same(text, (3, 4, 5, 5), in_place=in_place, phase=TEST)


@pytest.mark.parametrize("text,shape", [
    ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }', (3, 5, 13, 11)),
    ('type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 }', (3, 5, 13, 11)),
    ('type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 }', (3, 5, 12, 10)),
    ('type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 pad: 1 }', (5, 3, 9, 8)),
    ('type: "Convolution" convolution_param { num_output: 8 kernel_size: 5 pad: 2 }', (5, 32, 8, 8)),
    ('type: "Convolution" convolution_param { num_output: 6 kernel_size: 1 }', (4, 5, 9, 8)),    # per image
    ('type: "Convolution" convolution_param { num_output: 3 kernel_size: 1 }', (4, 5, 9, 8)),    # (k, m) products
    ('type: "Convolution" convolution_param { num_output: 6 kernel_size: 1 stride: 2 }', (4, 5, 9, 8)),
    ('type: "Convolution" convolution_param { num_output: 6 kernel_size: 3 group: 2 }', (4, 4, 9, 8)),
    ('type: "BatchNorm"', (4, 6, 7, 5)),
    ('type: "Scale" scale_param { bias_term: true }', (4, 6, 7, 5)),
    ('type: "ReLU"', (4, 6, 7, 5)),
    ('type: "LRN" lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 }', (4, 7, 5, 6)),
    ('type: "Bias"', (4, 6, 7, 5)),                                     # einsum's per-channel sums
])
def test_loops_split_over_threads_give_the_same_bits(text, shape, monkeypatch):
    """cpu_split cuts every compiled loop into parts for the BLAS pool's threads, and a convolution's runs of
    images go to the threads: 1 and 3 threads (parts of every size, down to one plane, row or image: MIN_PART 1)
    give the same bits, and the parts really ran apart; a convolution with both weight-product layouts."""
    from threadpoolctl import threadpool_limits
    from distcaffe.layers import cpu_split
    from distcaffe.layers.vision import ConvolutionLayer
    monkeypatch.setattr(cpu_split, "MIN_PART", 1)
    monkeypatch.setattr(ConvolutionLayer, "ROWS_OUTPUTS", 1 << 30)       # col2im_rows_2d too
    monkeypatch.setattr(ConvolutionLayer, "ROWS_KERNEL_DIM", 1)
    monkeypatch.setattr(ConvolutionLayer, "_image_bytes", lambda self: 1)   # cache-sized runs of one image,
    monkeypatch.setattr(ConvolutionLayer, "COLUMN_BYTES_PER_THREAD", 1)     # over the threads (_thread_runs)
    monkeypatch.setattr(ConvolutionLayer, "MIN_RUN_PER_THREAD", 1)
    monkeypatch.setattr(ConvolutionLayer, "TILED_KERNEL_DIM", 1 << 30)    # (GEMM runs; tests/test_conv_tiles.py)
    per_image = "kernel_size: 1 " in text
    monkeypatch.setattr(ConvolutionLayer, "PER_IMAGE_POSITIONS", 1 if per_image else 1 << 60)
    monkeypatch.setattr(ConvolutionLayer, "PER_IMAGE_MACS", 1)
    over_runs = []
    real_each_run = ConvolutionLayer._each_run

    def counted(self, body, split, runs=None):
        if split:
            over_runs.append((len(split[0]), split[1]))
        real_each_run(self, body, split, runs)
    monkeypatch.setattr(ConvolutionLayer, "_each_run", counted)
    seen = []
    real = cpu_split.run

    def run(fn, n, work, threads=None, **kw):
        seen.append(len(cpu_split.parts(n, work, threads)))
        real(fn, n, work, threads, **kw)
    monkeypatch.setattr(cpu_split, "run", run)
    x = RNG.standard_normal(shape).astype(np.float32)
    conv = text.startswith('type: "Convolution"')
    for straight in (False, True) if conv else (False,):
        monkeypatch.setattr(ConvolutionLayer, "STRAIGHT_PRODUCT_BYTES", 1 if straight else 1 << 60)
        del seen[:], over_runs[:]
        results = []
        for threads in (1, 3):
            with threadpool_limits(threads):
                results.append(fast_pass(text, x, np.float32, True,
                                     in_place=not text.startswith(('type: "Pooling"', 'type: "LRN"'))
                                     and not conv))
        assert max(seen) == 3
        if conv:                                         # forward and backward went run by run on 3 threads
            assert over_runs == [(shape[0], 3)] * (3 if per_image else 2), over_runs
        for i, (a, b) in enumerate(zip(*results)):
            assert np.array_equal(_bits(a), _bits(b)), "output %d differs between 1 and 3 threads (%s)" % (i, text)


@pytest.mark.parametrize("shape", [(4, 6, 35), (3, 7, 1), (1, 5, 300), (2, 1, 40)])
def test_numpy_passes_split_over_threads_give_the_same_bits(shape, monkeypatch):
    """Per-channel sums and dot products (einsum) and elementwise numpy calls cut into parts for 3 threads, down
    to one channel or element a part, give one whole call's bits, and the parts ran apart."""
    from threadpoolctl import threadpool_limits
    from distcaffe.layers import cpu_split
    from distcaffe.layers.elementwise import dot_outer_inner, mean_outer_inner, sum_outer_inner
    monkeypatch.setattr(cpu_split, "MIN_PART", 1)
    a, b = RNG.standard_normal((2,) + shape).astype(np.float32)
    whole = [np.einsum("ijk->j", a), np.einsum("ijk,ijk->j", a, b), np.einsum("ijk->j", a) / (a.size // a.shape[1]),
             a + b + b, np.maximum(a, 0), a]
    seen = []
    real = cpu_split.run
    monkeypatch.setattr(cpu_split, "run", lambda fn, n, work, threads=None, **kw: seen.append(
        len(cpu_split.parts(n, work, threads))) or real(fn, n, work, threads, **kw))
    with threadpool_limits(3):
        added, relu, copied = np.empty_like(a), np.empty_like(a), np.full_like(a, np.nan)
        cpu_split.sum_into(np, added, a, b, b)
        cpu_split.elementwise(lambda x, o: np.maximum(x, 0, out=o), a, relu)
        cpu_split.copy(copied, a)
        split = [sum_outer_inner(a), dot_outer_inner(np, a, b), mean_outer_inner(a), added, relu, copied]
    for w, got in zip(whole, split):
        assert np.array_equal(_bits(w), _bits(got))
    assert max(seen) == 3


def test_per_channel_sums_of_fp16_accumulate_in_fp32():
    """fp16 per-channel sums and means accumulate in fp32 and come back as fp16 (an fp16 running sum of 64,000
    values near 0.5 stalls where fp16's spacing passes the addend)."""
    from distcaffe.layers.elementwise import dot_outer_inner, mean_outer_inner, sum_outer_inner
    a = RNG.random((64, 3, 1000)).astype(np.float16)
    exact = a.astype(np.float64).sum(axis=(0, 2))
    for got, want in [(sum_outer_inner(a), exact), (mean_outer_inner(a), exact / 64000),
                      (dot_outer_inner(np, a, np.ones_like(a)), exact)]:
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got, want.astype(np.float32).astype(np.float16))


def test_split_pieces_go_to_whichever_thread_is_free():
    """The pieces of a split are taken as threads come free: while the caller sits on a slow first piece, the
    pool thread does the rest; each piece runs once, and every index is covered once."""
    import threading
    import time
    from distcaffe.layers import cpu_split
    done, main = [], threading.get_ident()

    def fn(lo, hi):
        if lo == 0:
            time.sleep(0.3)
        done.append((lo, hi, threading.get_ident() == main))
    cpu_split.run(fn, 16, 1 << 30, threads=2, pieces=8)
    assert sorted(i for lo, hi, _ in done for i in range(lo, hi)) == list(range(16))
    assert len(done) == 8 and [lo for lo, _, by_main in done if by_main] == [0], done
    done[:] = []
    cpu_split.run(fn, 100, cpu_split.MIN_PART * 100, threads=2)       # pieces by default: PIECES_PER_THREAD a thread
    assert len(done) == 2 * cpu_split.PIECES_PER_THREAD and sum(hi - lo for lo, hi, _ in done) == 100


def test_split_pool_grows_and_is_kept():
    """Calls with fewer parts reuse the pool a larger call made (no thread churn between layers)."""
    from distcaffe.layers import cpu_split
    big = cpu_split._executor(3)
    assert cpu_split._executor(1) is big and cpu_split._executor(3) is big
    assert sorted(big.map(lambda v: v * v, range(4))) == [0, 1, 4, 9]


def test_split_pool_is_rebuilt_after_fork():
    """A forked child (data workers, the start-up supervisor) must not wait on its parent's pool threads."""
    import os
    from distcaffe.layers import cpu_split
    done = []
    cpu_split._executor(1).submit(done.append, 1).result()
    pid = os.fork()
    if pid == 0:
        try:
            cpu_split._executor(1).submit(int).result(timeout=10)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and done == [1]


def test_numba_loads_only_when_a_loop_runs():
    """`import distcaffe` and building a net stay light: numba (and LLVM) load on the first compiled loop."""
    import subprocess
    import sys
    code = ("import sys, numpy as np, distcaffe.net\n"
            "from distcaffe.layers import fastpath\n"
            "assert 'numba' not in sys.modules\n"
            "assert fastpath.enabled() and 'numba' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_numba_fills_512_bit_registers_on_avx512_unless_the_user_chose():
    """On an AVX-512 CPU the compiled loops are built for 512-bit vectors (LLVM's tuning would prefer 256); a
    NUMBA_CPU_FEATURES the user set is kept as it is."""
    import os
    import subprocess
    import sys
    import llvmlite.binding as llvm
    host = llvm.get_host_cpu_features()
    code = ("from distcaffe.layers import fastpath; from numba.core import config\n"
            "print(fastpath.full_width_vectors()); print(config.CPU_FEATURES)")

    def ask(**env):
        base = {k: v for k, v in os.environ.items() if k != "NUMBA_CPU_FEATURES"}
        out = subprocess.run([sys.executable, "-c", code], env=dict(base, **env), capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        wide, features = out.stdout.split("\n")[:2]
        return wide == "True", features
    wide, features = ask()
    assert wide == bool(host.get("avx512f"))
    assert features == (host.flatten() + ",-prefer-256-bit" if wide else "None")
    assert ask(NUMBA_CPU_FEATURES=host.flatten()) == (False, host.flatten())
