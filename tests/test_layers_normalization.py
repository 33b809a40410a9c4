"""BatchNorm (incl. NVCaffe scale_bias), LRN, MVN: float64 gradients, running statistics, references, errors."""
import numpy as np
import pytest

from distcaffe.blob import Blob
from distcaffe.errors import NetError
from distcaffe.net import TEST, TRAIN
from layer_harness import check_gradient, make_layer

RNG = np.random.default_rng(3)


def _run(text, x, phase=TRAIN):
    layer = make_layer(text, np.float64, phase)
    b, t = Blob(x.shape, np.float64), Blob(dtype=np.float64)
    b.data[...] = x
    layer.setup([b], [t])
    layer.forward([b], [t])
    return layer, b, t


# --- BatchNorm ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 3, 2, 2), (5, 2), (3, 2, 3)])
def test_batchnorm_train_gradient(shape):
    check_gradient('type: "BatchNorm" batch_norm_param { use_global_stats: false }',
                   [RNG.standard_normal(shape)], check_params=False)


def _set_stats(layer):
    c = layer.channels
    layer.blobs[0].data[...] = RNG.standard_normal(c) * 2
    layer.blobs[1].data[...] = RNG.random(c) + 0.5
    layer.blobs[2].data[...] = 2.5


def test_batchnorm_global_gradient_and_values():
    x = RNG.standard_normal((3, 2, 2, 2))
    check_gradient('type: "BatchNorm"', [x], phase=TEST, param_init=_set_stats, check_params=False)
    layer = make_layer('type: "BatchNorm" batch_norm_param { eps: 0.01 }', np.float64, TEST)
    b, t = Blob(x.shape, np.float64), Blob(dtype=np.float64)
    b.data[...] = x
    layer.setup([b], [t])
    _set_stats(layer)
    layer.forward([b], [t])
    mean = layer.blobs[0].data / 2.5
    var = layer.blobs[1].data / 2.5
    ref = (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 0.01)
    np.testing.assert_allclose(t.data, ref)


def test_batchnorm_running_statistics():
    x = RNG.standard_normal((4, 2, 3, 1))
    layer, b, t = _run('type: "BatchNorm" batch_norm_param { moving_average_fraction: 0.9 }', x)
    m = x.size // 2
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(layer.blobs[0].data, mean)
    np.testing.assert_allclose(layer.blobs[1].data, var * m / (m - 1))
    assert layer.blobs[2].data.tolist() == [1.0]
    layer.forward([b], [t])
    np.testing.assert_allclose(layer.blobs[0].data, mean + 0.9 * mean)
    assert layer.blobs[2].data[0] == pytest.approx(1.9)
    np.testing.assert_allclose(t.data, (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5))


def test_batchnorm_reuses_its_x_norm_but_not_a_view_of_it():
    """On CPU each pass writes x_norm into the last pass's array (no fresh memory paged in), the same numbers; an
    x_norm that is a view (Large Model Support's copy of it) or of another shape gets a new array."""
    x = RNG.standard_normal((4, 3, 5, 2))
    layer, b, t = _run('type: "BatchNorm"', x)
    first, top = layer.x_norm, t.data.copy()
    layer.forward([b], [t])
    assert layer.x_norm is first
    np.testing.assert_array_equal(t.data, top)
    layer.x_norm = np.empty(2 * first.size).reshape(2, -1)[0].reshape(first.shape)      # a view
    view = layer.x_norm
    layer.forward([b], [t])
    assert layer.x_norm is not view and layer.x_norm.base is None
    np.testing.assert_array_equal(t.data, top)
    b.reshape((2, 3, 5, 2))
    t.reshape((2, 3, 5, 2))
    layer.forward([b], [t])
    assert layer.x_norm.shape == (2, 3, 10)


def test_batchnorm_zero_scale_factor_gives_zero_stats_and_phase_default():
    x = RNG.standard_normal((2, 2, 2, 2))
    layer, _, t = _run('type: "BatchNorm"', x, phase=TEST)      # TEST: global stats by default, all zero
    assert layer.use_global_stats
    np.testing.assert_allclose(t.data, x / np.sqrt(1e-5))
    assert not _run('type: "BatchNorm"', x, phase=TRAIN)[0].use_global_stats


def test_batchnorm_params_and_lr_mult():
    layer, _, _ = _run('type: "BatchNorm"', RNG.standard_normal((2, 3, 2, 2)))
    assert [p.shape for p in layer.blobs] == [(3,), (3,), (1,)]
    assert [p.lr_mult for p in layer.layer_param.param] == [0, 0, 0]
    with pytest.raises(NetError, match="Cannot configure batch normalization statistics"):
        _run('name: "bn" type: "BatchNorm" param { lr_mult: 1 }', np.zeros((2, 3)))


def test_batchnorm_scale_bias():
    text = 'type: "BatchNorm" batch_norm_param { scale_bias: true use_global_stats: false }'
    layer, _, _ = _run(text, RNG.standard_normal((2, 3, 2, 2)))
    assert [p.shape for p in layer.blobs] == [(3,), (3,), (1,), (3,), (3,)]
    assert layer.blobs[3].data.tolist() == [1, 1, 1] and layer.blobs[4].data.tolist() == [0, 0, 0]
    assert [p.lr_mult for p in layer.layer_param.param] == [0, 0, 0, 1, 1]

    def init(layer):
        layer.blobs[3].data[...] = RNG.standard_normal(3)
        layer.blobs[4].data[...] = RNG.standard_normal(3)

    x = RNG.standard_normal((3, 3, 2, 1))
    checked = check_gradient(text, [x], param_init=init)
    y = checked.x_norm.reshape(3, 3, 2) * checked.blobs[3].data[:, None] + checked.blobs[4].data[:, None]
    top = Blob(x.shape, np.float64)
    checked.forward([_blob(x)], [top])
    np.testing.assert_allclose(top.data.reshape(3, 3, 2), y)
    # a filler alone turns scale_bias on (NVCaffe)
    layer, _, _ = _run('type: "BatchNorm" batch_norm_param { scale_filler { type: "constant" value: 2 } }',
                       np.zeros((2, 2)))
    assert len(layer.blobs) == 5 and layer.blobs[3].data.tolist() == [2, 2]


def _blob(x):
    b = Blob(x.shape, np.float64)
    b.data[...] = x
    return b


def test_batchnorm_in_place():
    x = RNG.standard_normal((3, 2, 2))
    _, _, ref = _run('type: "BatchNorm"', x)
    layer = make_layer('type: "BatchNorm"', np.float64, TRAIN)
    b = _blob(x)
    layer.setup([b], [b])
    layer.forward([b], [b])
    np.testing.assert_allclose(b.data, ref.data)
    g = RNG.standard_normal(x.shape)
    b.diff[...] = g
    layer.backward([b], [True], [b])
    layer2, b2, t2 = _run('type: "BatchNorm"', x)
    t2.diff[...] = g
    layer2.backward([t2], [True], [b2])
    np.testing.assert_allclose(b.diff, b2.diff)


# --- LRN --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params", [
    'local_size: 3 alpha: 0.5 beta: 0.75 k: 2',
    'local_size: 5 alpha: 1.5 beta: 0.6',
    'local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL',
])
def test_lrn_gradient(params):
    check_gradient('type: "LRN" lrn_param { %s }' % params, [RNG.standard_normal((2, 6, 3, 3))])


def test_lrn_values():
    x = RNG.standard_normal((2, 5, 3, 4))
    _, _, t = _run('type: "LRN" lrn_param { local_size: 3 alpha: 0.3 beta: 0.7 k: 1.5 }', x)
    sq = np.pad(x ** 2, [(0, 0), (1, 1), (0, 0), (0, 0)])
    scale = 1.5 + 0.3 / 3 * (sq[:, :-2] + sq[:, 1:-1] + sq[:, 2:])
    np.testing.assert_allclose(t.data, x * scale ** -0.7)
    _, _, t = _run('type: "LRN" lrn_param { local_size: 3 alpha: 0.3 beta: 0.7 k: 9 norm_region: WITHIN_CHANNEL }', x)
    sq = np.pad(x ** 2, [(0, 0), (0, 0), (1, 1), (1, 1)])
    s = sum(sq[:, :, i:i + 3, j:j + 4] for i in range(3) for j in range(3))
    np.testing.assert_allclose(t.data, x * (1 + 0.3 / 9 * s) ** -0.7)      # k is ignored within channel


def test_lrn_errors():
    with pytest.raises(NetError, match="odd values for local_size"):
        _run('type: "LRN" lrn_param { local_size: 4 }', np.zeros((1, 2, 2, 2)))
    with pytest.raises(NetError, match="4 axes"):
        _run('type: "LRN"', np.zeros((2, 3)))


# --- MVN --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params", ['', 'across_channels: true', 'normalize_variance: false',
                                    'normalize_variance: false across_channels: true'])
def test_mvn_gradient(params):
    check_gradient('type: "MVN" mvn_param { %s }' % params, [RNG.standard_normal((2, 3, 2, 3))])


def test_mvn_values():
    x = RNG.standard_normal((2, 3, 4))
    _, _, t = _run('type: "MVN" mvn_param { eps: 0.1 }', x)
    c = x - x.mean(axis=2, keepdims=True)
    np.testing.assert_allclose(t.data, c / (np.sqrt((c ** 2).mean(axis=2, keepdims=True)) + 0.1))
    _, _, t = _run('type: "MVN" mvn_param { across_channels: true normalize_variance: false }', x)
    np.testing.assert_allclose(t.data, x - x.mean(axis=(1, 2), keepdims=True))
    with pytest.raises(NetError, match="> 4 axes"):
        _run('type: "MVN"', np.zeros((1, 1, 1, 1, 2)))


BN_SCALE_NET = """
layer { name: "target" type: "Input" top: "target" input_param { shape { dim: 4 dim: 6 dim: 3 dim: 3 } } }
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 dim: 5 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 6 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv"
        scale_param { bias_term: true filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "loss" type: "EuclideanLoss" bottom: "conv" bottom: "target" top: "loss" }
"""


def _bn_scale_pass(paired, start=None):
    from distcaffe import backend
    from distcaffe.io import parse_net_text
    from distcaffe.net import Net, TRAIN
    backend.set_random_seed(5)
    net = Net(parse_net_text(BN_SCALE_NET), TRAIN)
    scale = net.layers[net.layer_index("scale")]
    assert scale.normalized_by is net.layers[net.layer_index("bn")]
    if not paired:
        scale.normalized_by = None
    rng = np.random.default_rng(0)
    net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].shape)
    net.blobs["target"].data[...] = rng.standard_normal(net.blobs["target"].shape)
    net.forward_backward()
    if start is not None:                  # a partial pass from the Scale: the BatchNorm did not just run
        net.forward(start=start)
        net.backward(start="loss")
    return [net.blobs["conv"].data.copy(), net.blobs["data"].diff.copy()] + \
        [p.diff.copy() for layer in net.layers for p in layer.blobs]


@pytest.mark.parametrize("start", [None, "scale"])
def test_scale_paired_with_batchnorm_gives_the_same_numbers(start):
    """The in-place Scale after a BatchNorm reads the BatchNorm's normalized output instead of copying the
    blob: bit-identical tops and diffs, also when a partial forward starts at the Scale (then it copies)."""
    for a, b in zip(_bn_scale_pass(True, start), _bn_scale_pass(False, start)):
        assert np.array_equal(a, b)


def test_scale_pairs_only_with_the_batchnorm_right_before_it():
    from distcaffe.io import parse_net_text
    from distcaffe.net import Net, TRAIN
    text = BN_SCALE_NET.replace('layer { name: "scale"', 'layer { name: "relu0" type: "ReLU" bottom: "conv" '
                                'top: "conv" }\nlayer { name: "scale"')
    net = Net(parse_net_text(text), TRAIN)
    assert net.layers[net.layer_index("scale")].normalized_by is None
