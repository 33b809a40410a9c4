"""Convolution, Deconvolution, Im2col, Pooling, SPP: float64 gradients, naive references, shapes, errors."""
import itertools

import numpy as np
import pytest

from distcaffe.blob import Blob
from distcaffe.errors import NetError
from distcaffe.net import TEST, TRAIN
from layer_harness import check_gradient, make_layer

RNG = np.random.default_rng(0)


def _run(text, *arrays, phase=TRAIN, num_top=1, dtype=np.float64):
    layer = make_layer(text, dtype, phase)
    bottom = []
    for a in arrays:
        b = Blob(a.shape, dtype)
        b.data[...] = a
        bottom.append(b)
    top = [Blob(dtype=dtype) for _ in range(num_top)]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    return layer, bottom, top


def _naive_conv(x, w, b, stride, pad, dilation, group):
    """Direct N-D convolution by loops (reference only)."""
    n, c = x.shape[:2]
    nd = x.ndim - 2
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    k = w.shape[2:]
    out = [(x.shape[2 + i] + 2 * pad[i] - dilation[i] * (k[i] - 1) - 1) // stride[i] + 1 for i in range(nd)]
    o = w.shape[0]
    y = np.zeros((n, o) + tuple(out))
    cg, og = c // group, o // group
    for oc in range(o):
        g = oc // og
        for pos in itertools.product(*[range(s) for s in out]):
            for koff in itertools.product(*[range(s) for s in k]):
                idx = tuple(pos[i] * stride[i] + koff[i] * dilation[i] for i in range(nd))
                patch = xp[(slice(None), slice(g * cg, (g + 1) * cg)) + idx]
                y[(slice(None), oc) + pos] += patch @ w[(oc, slice(None)) + koff]
        if b is not None:
            y[:, oc] += b[oc]
    return y


CONV_CASES = [
    ('num_output: 3 kernel_size: 3', (2, 2, 5, 5)),
    ('num_output: 4 kernel_size: 3 group: 2 stride: 2 pad: 1', (2, 4, 5, 6)),
    ('num_output: 2 kernel_size: 2 dilation: 2 bias_term: false', (1, 2, 6, 5)),
    ('num_output: 2 kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 2', (2, 1, 5, 4)),
    ('num_output: 2 kernel_size: 1', (2, 3, 3, 3)),
    ('num_output: 4 kernel_size: 1 stride: 2 group: 2', (2, 4, 5, 4)),       # windows apart: a strided scatter
    ('num_output: 2 kernel_size: 2 kernel_size: 1 kernel_size: 2 stride: 1 stride: 2 stride: 1 pad: 1', (1, 2, 3, 4, 3)),
    ('num_output: 3 kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 2 bias_term: false', (2, 2, 4, 5)),    # direct-sized
    ('num_output: 2 kernel_size: 5 pad: 2', (2, 1, 3, 6)),                       # the padding wider than the input
]


@pytest.fixture(params=["batched", "chunked", "per_image", "per_image_t", "batched_rows", "chunked_rows", "batched_wide",
                        "chunked_wide", "batched_straight", "chunked_straight", "direct"])
def conv_layout(request, monkeypatch):
    """Run a convolution test with each GEMM layout: batched columns (whole batch, or runs of one image),
    and Caffe's per-image GEMMs (which the layer picks on CPU for large output planes); `_rows`: the data
    gradient as receptive-field rows (col2im_rows), which the layer picks for few outputs and long kernels;
    `_wide`: image-major columns (the layer's choice for wide output rows); `_straight`: weight-diff products
    as (outputs, kernel_dim), the layer's choice for large products over few columns (else transposed);
    `direct`: the forward as tap sums (direct_conv) wherever the geometry allows it, the backward batched;
    `per_image_t`: per-image weight products as (kernel_dim, outputs), added transposed."""
    from distcaffe.layers.vision import ConvolutionLayer
    direct = request.param == "direct"
    per_image = request.param.startswith("per_image")
    monkeypatch.setattr(ConvolutionLayer, "PER_IMAGE_POSITIONS", 1 if per_image else 1 << 60)
    monkeypatch.setattr(ConvolutionLayer, "_per_image_transposed", lambda self: request.param == "per_image_t")
    monkeypatch.setattr(ConvolutionLayer, "PER_IMAGE_MACS", 1 << 60 if direct else 1)
    monkeypatch.setattr(ConvolutionLayer, "DIRECT_WEIGHTS", 1 << 30 if direct else 0)
    if request.param.startswith("chunked"):
        monkeypatch.setattr(ConvolutionLayer, "COLUMN_BYTES", 1)
        monkeypatch.setattr(ConvolutionLayer, "COLUMN_BYTES_PER_THREAD", 1)
    rows = request.param.endswith("_rows")
    monkeypatch.setattr(ConvolutionLayer, "ROWS_OUTPUTS", 1 << 30 if rows else 0)
    monkeypatch.setattr(ConvolutionLayer, "ROWS_KERNEL_DIM", 1)
    monkeypatch.setattr(ConvolutionLayer, "IMAGE_MAJOR_WIDTH", 1 if request.param.endswith("_wide") else 1 << 30)
    straight = request.param.endswith("_straight")
    monkeypatch.setattr(ConvolutionLayer, "STRAIGHT_PRODUCT_BYTES", 1 if straight else 1 << 60)
    return request.param


@pytest.mark.parametrize("params,shape", CONV_CASES)
def test_convolution_gradient(params, shape, conv_layout):
    text = 'type: "Convolution" convolution_param { %s weight_filler { type: "gaussian" std: 0.5 } ' \
           'bias_filler { type: "gaussian" std: 0.5 } }' % params
    check_gradient(text, [RNG.standard_normal(shape)])


def test_convolution_column_runs_follow_blas_threads():
    """T BLAS threads: cache-sized runs of T x COLUMN_BYTES_PER_THREAD where they hold T x MIN_RUN_PER_THREAD
    images; else the larger COLUMN_BYTES runs (ROWS_COLUMN_BYTES for im2row rows). With T > 1, cache-sized one-thread runs go to the threads."""
    from threadpoolctl import threadpool_limits
    from distcaffe import backend
    text = 'type: "Convolution" convolution_param { num_output: 32 kernel_size: 5 pad: 2 }'
    layer, _, _ = _run(text, RNG.standard_normal((100, 32, 16, 16)), dtype=np.float32)
    with threadpool_limits(limits=1, user_api="blas"):
        assert backend.blas_threads() == 1
        assert [z - a for a, z in layer._chunks()][:2] == [5, 5]          # 4 MB / (800 x 256 x 4 bytes)
    with threadpool_limits(limits=2, user_api="blas"):
        assert [z - a for a, z in layer._chunks()][:2] == [10, 10]        # 8 MB: 10 images >= 8
        runs, threads = layer._thread_runs(want_w=True)                   # the 1-thread runs, over 2 threads
        assert threads == 2 and runs == layer._chunks(threads=1)
        layer.RUN_PRODUCT_BYTES = 1
        assert layer._thread_runs(want_w=True) is None                    # products too large to keep
        assert layer._thread_runs() is not None
    with threadpool_limits(limits=1, user_api="blas"):
        assert layer._thread_runs() is None
    layer.COLUMN_BYTES_PER_THREAD = 3 << 20
    with threadpool_limits(limits=2, user_api="blas"):
        assert layer._thread_runs() is None                               # 32 MB runs: one GEMM, 2 threads
    with threadpool_limits(limits=1, user_api="blas"):
        assert [z - a for a, z in layer._chunks()] == [10] * 10           # 3 images: too few, 8 MB runs of rows
    with threadpool_limits(limits=2, user_api="blas"):
        assert [z - a for a, z in layer._chunks()] == [10] * 10           # 7 images, fewer than 8
    layer.ROWS_OUTPUTS = 0                                                # columns: 32 MB runs
    with threadpool_limits(limits=1, user_api="blas"):
        assert [z - a for a, z in layer._chunks()] == [40, 40, 20]


def test_convolution_rows_for_few_outputs_and_long_kernels():
    """im2row rows (receptive field per row) for few outputs per group, long kernels and windows larger than
    one element (CIFAR-10 quick conv2/conv3, LeNet conv2); columns otherwise; never for Deconvolution."""
    def layer(params, shape, kind="Convolution"):
        return _run('type: "%s" convolution_param { %s }' % (kind, params), RNG.standard_normal(shape),
                    dtype=np.float32)[0]
    assert layer("num_output: 32 kernel_size: 5 pad: 2", (4, 32, 16, 16))._rows()
    assert layer("num_output: 64 kernel_size: 5 pad: 2", (4, 32, 8, 8))._rows()
    assert layer("num_output: 50 kernel_size: 5", (4, 20, 12, 12))._rows()
    assert layer("num_output: 64 kernel_size: 5 group: 2", (4, 40, 12, 12))._rows()       # 32 per group, K 500
    assert not layer("num_output: 32 kernel_size: 5 pad: 2", (4, 3, 32, 32))._rows()      # K 75
    assert not layer("num_output: 16 kernel_size: 1", (4, 480, 7, 7))._rows()             # 1x1
    assert not layer("num_output: 128 kernel_size: 3 pad: 1", (4, 64, 7, 7))._rows()      # 128 outputs
    assert not layer("num_output: 32 kernel_size: 5 pad: 2", (4, 32, 8, 8), "Deconvolution")._rows()


def test_convolution_per_image_products_put_the_larger_dimension_first():
    """Per-image weight products are (kernel_dim, outputs) when kernel_dim is the larger (ResNet-50's 256 -> 64
    1x1 layers), else (outputs, kernel_dim); per group."""
    def layer(params, shape):
        return _run('type: "Convolution" convolution_param { %s }' % params, RNG.standard_normal(shape),
                    dtype=np.float32)[0]
    assert layer("num_output: 64 kernel_size: 1", (2, 256, 8, 8))._per_image_transposed()
    assert not layer("num_output: 256 kernel_size: 1", (2, 64, 8, 8))._per_image_transposed()
    assert not layer("num_output: 64 kernel_size: 1 group: 2", (2, 64, 8, 8))._per_image_transposed()  # 32 = 32
    assert layer("num_output: 64 kernel_size: 3", (2, 64, 8, 8))._per_image_transposed()               # 576


def test_convolution_straight_weight_products():
    """Large weight-diff products (1 MB and more) are computed as (outputs, kernel_dim), sparing their
    transposed add; small ones keep the transposed product."""
    def layer(params, shape):
        return _run('type: "Convolution" convolution_param { %s }' % params, RNG.standard_normal(shape),
                    dtype=np.float32)[0]
    assert layer("num_output: 512 kernel_size: 3 pad: 1", (8, 512, 7, 7))._straight_product()
    assert layer("num_output: 2048 kernel_size: 1", (8, 512, 7, 7))._straight_product()
    assert not layer("num_output: 32 kernel_size: 5 pad: 2", (100, 32, 16, 16))._straight_product()   # 100 KB
    assert layer("num_output: 256 kernel_size: 3 pad: 1", (8, 256, 28, 28))._straight_product()      # 6272 cols
    assert not layer("num_output: 64 kernel_size: 3 pad: 1", (8, 64, 28, 28))._straight_product()    # 576 KB


@pytest.mark.parametrize("params,shape", CONV_CASES)
def test_convolution_weight_gradient_alone(params, shape, conv_layout):
    """No bottom diff wanted (a net's first convolution): the weight and bias diffs take their own path."""
    text = 'type: "Convolution" convolution_param { %s weight_filler { type: "gaussian" std: 0.5 } ' \
           'bias_filler { type: "gaussian" std: 0.5 } }' % params
    check_gradient(text, [RNG.standard_normal(shape)], check_bottoms=[])


@pytest.mark.parametrize("params,shape", CONV_CASES)
def test_convolution_matches_direct_loops(params, shape, conv_layout):
    text = 'type: "Convolution" convolution_param { %s weight_filler { type: "gaussian" std: 0.5 } ' \
           'bias_filler { type: "gaussian" std: 0.5 } }' % params
    x = RNG.standard_normal(shape)
    layer, _, top = _run(text, x)
    cp = layer.layer_param.convolution_param
    bias = layer.blobs[1].data if cp.bias_term else None
    ref = _naive_conv(x, layer.blobs[0].data, bias, layer.stride, layer.pad, layer.dilation, cp.group)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-10, atol=1e-10)


def _conv_layer(params, shape, dtype=np.float32, layer="Convolution"):
    """A set-up layer with its bottom and top blob lists (data not filled)."""
    layer = make_layer('type: "%s" convolution_param { %s }' % (layer, params), dtype, TRAIN)
    bottom, top = [Blob(shape, dtype)], [Blob(dtype=dtype)]
    layer.setup(bottom, top)
    return layer, bottom, top


@pytest.mark.parametrize("params,shape,direct", [
    ("num_output: 20 kernel_size: 5", (64, 1, 28, 28), True),                        # LeNet conv1
    ("num_output: 32 kernel_size: 5 pad: 2", (100, 3, 32, 32), True),                # CIFAR-10 quick conv1
    ("num_output: 64 kernel_size: 3 pad: 1", (8, 3, 32, 32), True),
    ("num_output: 20 kernel_size: 5 stride: 2", (4, 1, 28, 28), False),
    ("num_output: 20 kernel_size: 5 dilation: 2", (4, 1, 28, 28), False),
    ("num_output: 20 kernel_size: 5 group: 2", (4, 2, 28, 28), False),
    ("num_output: 20 kernel_size: 1", (4, 16, 28, 28), False),
    ("num_output: 16 kernel_size: 3 pad: 1", (4, 32, 16, 16), False),                # 4608 weights
    ("num_output: 64 kernel_size: 3 pad: 1", (4, 3, 112, 112), False),               # a per-image plane
    ("num_output: 2 kernel_size: 2 kernel_size: 2 kernel_size: 2", (2, 1, 4, 4, 4), False),
])
def test_convolution_direct_forward_where_it_pays(params, shape, direct):
    """The direct forward takes small stride-1 2-D layers (the measured cases in vision.py), nothing else; no
    Deconvolution and no float16."""
    layer, _, top = _conv_layer(params, shape)
    assert layer._direct(top[0]) is direct
    assert not _conv_layer(params, shape, np.float16)[0]._direct(top[0])
    if len(shape) == 4:
        layer, _, top = _conv_layer(params, shape, layer="Deconvolution")
        assert not layer._direct(top[0])


def test_convolution_direct_forward_matches_the_columns(monkeypatch):
    """In float32 the tap sums are the GEMM's products in another order: within 16 ulps of the largest value
    (LeNet conv1's 25 taps, and CIFAR-10 quick conv1's 75 with padding)."""
    from distcaffe.layers.vision import ConvolutionLayer
    rng = np.random.default_rng(3)
    for params, shape in [("num_output: 20 kernel_size: 5", (4, 1, 28, 28)),
                          ("num_output: 32 kernel_size: 5 pad: 2", (2, 3, 32, 32))]:
        x = rng.standard_normal(shape)
        tops = []
        for weights in (ConvolutionLayer.DIRECT_WEIGHTS, 0):
            monkeypatch.setattr(ConvolutionLayer, "DIRECT_WEIGHTS", weights)
            layer, bottom, top = _conv_layer(params, shape)
            assert layer._direct(top[0]) is (weights > 0)
            bottom[0].data[...] = x
            layer.blobs[0].data[...] = np.random.default_rng(4).standard_normal(layer.blobs[0].shape)
            layer.blobs[1].data[...] = np.random.default_rng(5).standard_normal(layer.blobs[1].shape)
            layer.forward(bottom, top)
            tops.append(top[0].data.copy())
        scale = float(np.abs(tops[1]).max())
        np.testing.assert_allclose(tops[0], tops[1], rtol=0, atol=16 * np.finfo(np.float32).eps * scale)


def test_convolution_axis_and_two_bottoms(conv_layout):
    """`axis: 2` treats axis 0-1 as batch; two bottoms share the weights and sum their gradients."""
    text = 'type: "Convolution" convolution_param { num_output: 2 kernel_size: 2 axis: 2 ' \
           'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } }'
    a, b = RNG.standard_normal((2, 2, 3, 4, 4)), RNG.standard_normal((2, 2, 3, 4, 4))
    layer = check_gradient(text, [a, b], num_top=2)
    assert layer.blobs[0].shape == (2, 3, 2, 2)
    _, _, top = _run('name: "c" ' + text, a)
    assert top[0].shape == (2, 2, 2, 3, 3)


@pytest.mark.parametrize("params,shape", [
    ('num_output: 3 kernel_size: 3 stride: 2 pad: 1', (2, 2, 3, 3)),
    ('num_output: 4 kernel_size: 2 group: 2 stride: 1', (1, 4, 3, 2)),
    ('num_output: 2 kernel_h: 3 kernel_w: 2 stride: 2 dilation: 2 bias_term: false', (2, 1, 2, 3)),
])
def test_deconvolution_gradient(params, shape):
    text = 'type: "Deconvolution" convolution_param { %s weight_filler { type: "gaussian" std: 0.5 } ' \
           'bias_filler { type: "gaussian" std: 0.5 } }' % params
    check_gradient(text, [RNG.standard_normal(shape)])


def test_deconvolution_is_adjoint_of_convolution():
    """Deconv(x) with weight W satisfies <deconv(x), y> == <x, conv_nobias(y)> (Caffe's formulation)."""
    params = 'num_output: 3 kernel_size: 3 stride: 2 pad: 1 group: 1 bias_term: false ' \
             'weight_filler { type: "gaussian" std: 0.5 }'
    x = RNG.standard_normal((2, 4, 3, 3))
    dec, _, dtop = _run('type: "Deconvolution" convolution_param { %s }' % params, x)
    assert dtop[0].shape == (2, 3, 5, 5) and dec.blobs[0].shape == (4, 3, 3, 3)
    y = RNG.standard_normal(dtop[0].shape)
    conv_text = 'type: "Convolution" convolution_param { %s }' % params.replace("num_output: 3", "num_output: 4")
    conv = make_layer(conv_text)
    yb, ct = Blob(y.shape, np.float64), Blob(dtype=np.float64)
    yb.data[...] = y
    conv.setup([yb], [ct])
    conv.blobs[0].data[...] = dec.blobs[0].data
    conv.forward([yb], [ct])
    assert np.isclose((dtop[0].data * y).sum(), (x * ct.data).sum())


def test_im2col_layer():
    x = RNG.standard_normal((2, 3, 4, 5))
    _, _, top = _run('type: "Im2col" convolution_param { kernel_size: 2 stride: 1 pad: 1 }', x)
    assert top[0].shape == (2, 12, 5, 6)
    xp = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)])
    # channel index c*4 + ki*2 + kj holds x[c, h + ki, w + kj]
    np.testing.assert_array_equal(top[0].data[:, 1 * 4 + 1 * 2 + 0], xp[:, 1, 1:6, 0:6])
    check_gradient('type: "Im2col" convolution_param { kernel_size: 3 stride: 2 pad: 1 dilation: 1 }',
                   [RNG.standard_normal((1, 2, 5, 4))])


@pytest.mark.parametrize("params,bad", [
    ('num_output: 2', "kernel_size must be specified"),
    ('num_output: 2 kernel_size: 0', "Filter dimensions must be nonzero"),
    ('num_output: 2 kernel_size: 3 kernel_h: 2 kernel_w: 2', "not both"),
    ('num_output: 2 kernel_h: 2', "both kernel_h and kernel_w"),
    ('num_output: 3 kernel_size: 1 group: 2', "group"),
    ('num_output: 2 kernel_size: 1 group: 3', "group"),
    ('num_output: 2 kernel_size: 1 kernel_size: 1 kernel_size: 1', "once per spatial dimension"),
    ('num_output: 2 kernel_size: 9', "empty"),
    ('kernel_size: 2', "num_output"),
])
def test_convolution_bad_parameters(params, bad):
    with pytest.raises(NetError, match=bad) as e:
        _run('name: "c1" type: "Convolution" convolution_param { %s }' % params, np.zeros((1, 4, 4, 4)))
    assert "c1" in str(e.value) and "Convolution" in str(e.value)


def test_convolution_kernel_hw_only_2d():
    with pytest.raises(NetError, match="2D convolution"):
        _run('type: "Convolution" convolution_param { num_output: 1 kernel_h: 1 kernel_w: 1 }',
             np.zeros((1, 1, 2, 2, 2)))


# --- pooling ------------------------------------------------------------------------------------------

def _pool(text, x, phase=TRAIN, num_top=1):
    return _run('type: "Pooling" pooling_param { %s }' % text, x, phase=phase, num_top=num_top)


@pytest.mark.parametrize("params", [
    'pool: MAX kernel_size: 3 stride: 2',
    'pool: MAX kernel_size: 3 stride: 2 pad: 1',
    'pool: MAX kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 0',
    'pool: AVE kernel_size: 3 stride: 2',
    'pool: AVE kernel_size: 3 stride: 2 pad: 2',
    'pool: AVE global_pooling: true',
    'pool: MAX global_pooling: true',
    'pool: AVE kernel_size: 2 stride: 3 round_mode: FLOOR',
    'pool: MAX kernel_size: 2 stride: 3 torch_pooling: true',
])
def test_pooling_gradient(params):
    x = RNG.permutation(2 * 2 * 6 * 7).reshape(2, 2, 6, 7) / 10.0   # distinct values: no max ties
    check_gradient('type: "Pooling" pooling_param { %s }' % params, [x])


def test_pooling_output_sizes():
    x = np.zeros((1, 1, 6, 6))
    assert _pool('kernel_size: 3 stride: 2', x)[2][0].shape == (1, 1, 3, 3)             # ceil
    assert _pool('kernel_size: 3 stride: 2 round_mode: FLOOR', x)[2][0].shape == (1, 1, 2, 2)
    assert _pool('kernel_size: 3 stride: 2 torch_pooling: true', x)[2][0].shape == (1, 1, 2, 2)   # NVCaffe
    assert _pool('kernel_size: 3 stride: 2 pad: 1', x)[2][0].shape == (1, 1, 4, 4)
    assert _pool('kernel_size: 3 stride: 2 pad: 1 torch_pooling: true', x)[2][0].shape == (1, 1, 3, 3)
    # ceil gives 4, but the 4th window would start in the padding: clipped to 3
    assert _pool('kernel_size: 3 stride: 3 pad: 2', x)[2][0].shape == (1, 1, 3, 3)
    assert _pool('pool: AVE global_pooling: true', np.zeros((2, 3, 4, 5)))[2][0].shape == (2, 3, 1, 1)


def test_max_pooling_values_and_mask():
    x = RNG.standard_normal((2, 3, 5, 5))
    _, _, top = _pool('pool: MAX kernel_size: 2 stride: 2 pad: 1', x, num_top=2)
    y, mask = top[0].data, top[1].data
    for n, c, ph, pw in itertools.product(range(2), range(3), range(3), range(3)):
        h0, w0 = max(ph * 2 - 1, 0), max(pw * 2 - 1, 0)
        win = x[n, c, h0:ph * 2 + 1, w0:pw * 2 + 1]
        i = np.argmax(win)
        assert y[n, c, ph, pw] == win.flat[i]
        assert mask[n, c, ph, pw] == (h0 + i // win.shape[1]) * 5 + w0 + i % win.shape[1]


def test_max_pooling_ties_take_first_and_backward_routes_there():
    x = np.ones((1, 1, 2, 2))
    layer, bottom, top = _pool('pool: MAX kernel_size: 2', x, num_top=2)
    assert top[1].data.ravel().tolist() == [0.0]
    top[0].diff[...] = 3.0
    layer.backward(top, [True], bottom)
    assert bottom[0].diff.ravel().tolist() == [3.0, 0.0, 0.0, 0.0]


def test_ave_pooling_padded_divisor():
    x = np.ones((1, 1, 3, 3))
    _, _, top = _pool('pool: AVE kernel_size: 3 stride: 2 pad: 1', x)
    # corner window covers rows -1..1 (all inside H + pad), 4 real ones out of 9
    np.testing.assert_allclose(top[0].data[0, 0], [[4 / 9, 4 / 9], [4 / 9, 4 / 9]])


def test_stochastic_pooling():
    x = RNG.random((2, 2, 4, 4)) + 0.1
    _, _, top = _pool('pool: STOCHASTIC kernel_size: 2 stride: 2', x, phase=TEST)
    win = x.reshape(2, 2, 2, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 2, 2, 2, 4)
    np.testing.assert_allclose(top[0].data, (win ** 2).sum(-1) / win.sum(-1))
    layer, bottom, top = _pool('pool: STOCHASTIC kernel_size: 2 stride: 2', x, phase=TRAIN)
    assert all(top[0].data[idx] in win[idx] for idx in np.ndindex(2, 2, 2, 2))
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    picked = bottom[0].diff.reshape(2, 2, 2, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 2, 2, 2, 4)
    assert (picked.sum(-1) == 1).all()
    np.testing.assert_array_equal((picked * win).sum(-1), top[0].data)


@pytest.mark.parametrize("params,bad", [
    ('kernel_size: 2 kernel_h: 2 kernel_w: 2', "not both"),
    ('kernel_h: 2', "kernel_size OR kernel_h and kernel_w"),
    ('global_pooling: true kernel_size: 2', "Global_pooling"),
    ('kernel_size: 2 pad: 2', "smaller than the kernel"),
    ('pool: STOCHASTIC kernel_size: 2 pad: 1', "Padding implemented only"),
    ('kernel_size: 2 pad: 1 pad_h: 1 pad_w: 1', "pad is pad OR"),
    ('pool: AVE kernel_size: 2', "mask"),
])
def test_pooling_bad_parameters(params, bad):
    with pytest.raises(NetError, match=bad):
        _pool(params, np.zeros((1, 1, 4, 4)), num_top=2 if "AVE" in params else 1)


def test_pooling_needs_4_axes():
    with pytest.raises(NetError, match="4 axes"):
        _pool('kernel_size: 2', np.zeros((1, 4, 4)))


# --- SPP ------------------------------------------------------------------------------------------------

def test_spp_shapes_and_values():
    x = RNG.standard_normal((2, 3, 8, 7))
    _, _, top = _run('type: "SPP" spp_param { pyramid_height: 3 pool: MAX }', x)
    assert top[0].shape == (2, 3 * (1 + 4 + 16))
    np.testing.assert_allclose(top[0].data[:, :3], x.max(axis=(2, 3)))
    _, _, top = _run('type: "SPP" spp_param { pyramid_height: 1 pool: AVE }', x)
    assert top[0].shape == (2, 3, 1, 1)
    np.testing.assert_allclose(top[0].data[:, :, 0, 0], x.mean(axis=(2, 3)))


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_spp_gradient(pool):
    x = RNG.permutation(2 * 2 * 5 * 4).reshape(2, 2, 5, 4) / 10.0
    check_gradient('type: "SPP" spp_param { pyramid_height: 2 pool: %s }' % pool, [x])


GPU_PATH_NET = """force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 20 dim: 26 dim: 26 } } }
layer { name: "rows" type: "Convolution" bottom: "data" top: "rows" convolution_param { num_output: 8
  kernel_size: 5 pad: 1 weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "grouped" type: "Convolution" bottom: "rows" top: "grouped" convolution_param { num_output: 64
  kernel_size: 3 stride: 2 group: 2 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "pool" type: "Pooling" bottom: "grouped" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "point" type: "Convolution" bottom: "pool" top: "point" convolution_param { num_output: 4
  kernel_size: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "point" top: "ip" inner_product_param { num_output: 3
  weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "gaussian" std: 0.1 } } }
"""


def test_convolution_layouts_on_the_gpu_path_match_the_cpu(monkeypatch):
    """The GPU code path (tests/hostcupy: numpy standing in for cupy, whole batch in one run, numpy col2im and
    pooling) gives the CPU path's numbers for the layouts the CPU picks: wide image-major columns, groups,
    pooling, 1x1, InnerProduct; to 1e-6 against the CPU on columns, which sum as the GPU does. The CPU's own
    choice, im2row rows for layer `rows`, takes the kernel offsets first: held to the columns at float32's
    reordering bound."""
    import hostcupy
    from distcaffe import backend
    from distcaffe.io import parse_net_text
    from distcaffe.layers.vision import ConvolutionLayer
    from distcaffe.net import Net
    rows_outputs = ConvolutionLayer.ROWS_OUTPUTS
    monkeypatch.setattr(ConvolutionLayer, "TILED_KERNEL_DIM", 1 << 30)    # (the CPU's GEMM layouts)

    def run(gpu, rows=False):
        monkeypatch.setattr(ConvolutionLayer, "ROWS_OUTPUTS", rows_outputs if rows else 0)
        if gpu:
            hostcupy.install()
            backend.set_mode_gpu()
        try:
            net = Net(parse_net_text(GPU_PATH_NET), TRAIN)
            assert net.layers[list(net._layer_names).index("rows")]._rows() is rows
            rng = np.random.default_rng(5)
            for name in net.params:
                for p in net.params[name]:
                    p.data[...] = rng.standard_normal(p.data.shape) * 0.1
            net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].shape)
            net.forward()
            net.blobs["ip"].diff[...] = rng.standard_normal(net.blobs["ip"].shape)
            net.clear_param_diffs()
            net.backward()
            out = {"top": np.array(net.blobs["ip"].data), "data_diff": np.array(net.blobs["data"].diff)}
            out.update(("%s/%d" % (k, i), np.array(p.diff)) for k, ps in net.params.items() for i, p in enumerate(ps))
            return out
        finally:
            if gpu:
                hostcupy.uninstall()

    cpu, gpu, cpu_rows = run(False), run(True), run(False, rows=True)
    assert cpu.keys() == gpu.keys() == cpu_rows.keys()
    for k in cpu:
        np.testing.assert_allclose(gpu[k], cpu[k], rtol=1e-5, atol=1e-6, err_msg=k)
        # float32 sums of up to 500 products in another order: within 16 ulps of the array's largest value
        # (seen: at most ~5 ulps, layer rows' weight diff 1.5e-6 at 2.2; the GPU path against columns: identical)
        scale = max(float(np.abs(cpu[k]).max()), 1.0)
        np.testing.assert_allclose(cpu_rows[k], cpu[k], rtol=0, atol=16 * np.finfo(np.float32).eps * scale,
                                   err_msg=k)


@pytest.mark.parametrize("params,shape", [
    ("num_output: 4 kernel_size: 3 pad: 1 stride: 2 group: 2", (3, 4, 9, 8)),
    ("num_output: 5 kernel_size: 5 pad: 2", (2, 3, 7, 7)),
    ("num_output: 2 kernel_h: 3 kernel_w: 1 dilation: 2", (2, 3, 8, 6)),
])
@pytest.mark.parametrize("transposed", [False, True])
def test_convolution_weights_only_backward_per_image(params, shape, transposed, monkeypatch):
    """Without a bottom diff (a net's first convolution) any kernel takes the per-image weight products: the same
    weight and bias diffs as the batched backward, the bottom diff left alone."""
    from distcaffe.layers.vision import ConvolutionLayer
    text = 'type: "Convolution" convolution_param { %s weight_filler { type: "gaussian" } }' % params
    x = RNG.standard_normal(shape)
    g = None
    diffs, used = [], []
    real = ConvolutionLayer._backward_per_image
    monkeypatch.setattr(ConvolutionLayer, "_backward_per_image", lambda self, *a: used.append(1) or real(self, *a))
    monkeypatch.setattr(ConvolutionLayer, "_per_image_transposed", lambda self: transposed)
    monkeypatch.setattr(ConvolutionLayer, "PER_IMAGE_MACS", 1)
    monkeypatch.setattr(ConvolutionLayer, "TILED_KERNEL_DIM", 1 << 30)    # (the GEMM paths)
    for positions in (1, 1 << 60):                      # per image, then batched
        monkeypatch.setattr(ConvolutionLayer, "PER_IMAGE_POSITIONS", positions)
        layer, bottom, top = _run(text, x)
        if g is None:
            g = RNG.standard_normal(top[0].shape)
        top[0].diff[...] = g
        bottom[0].diff[...] = 7.0
        layer.backward(top, [False], bottom)
        assert np.all(bottom[0].diff == 7.0)
        diffs.append([p.diff.copy() for p in layer.blobs])
    assert used == [1]
    for a, b in zip(*diffs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
