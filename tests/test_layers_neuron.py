"""Neuron layers: float64 gradient checks over parameter settings, in-place behaviour, Dropout, bad parameters."""
import numpy as np
import pytest

from distcaffe import backend
from distcaffe.blob import Blob
from distcaffe.errors import NetError
from distcaffe.net import TEST, TRAIN
from layer_harness import check_gradient, make_layer, setup_layer


def run_layer(layer_text, *arrays, num_top=1, phase=TRAIN, in_place=False):
    """Set up and run forward on float64 blobs; returns (layer, bottom, top). in_place: top 0 is bottom 0."""
    layer, bottom, top = setup_layer(layer_text, arrays, num_top, phase, in_place=in_place)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return layer, bottom, top


def forward_backward(text, arrays, num_top=1, down=None, gpu=False, phase=TRAIN):
    """float32 forward + backward with seeded top diffs, on CPU or GPU; returns host copies of the tops,
    bottom diffs (where `down`, default all) and parameter diffs, to compare the two modes."""
    if gpu:
        backend.set_mode_gpu()
    try:
        backend.set_random_seed(0)  # the same filler draws in both modes
        layer = make_layer(text, np.float32, phase)
        bottom = []
        for a in arrays:
            b = Blob(np.shape(a), np.float32)
            b.data[...] = a
            bottom.append(b)
        top = [Blob(dtype=np.float32) for _ in range(num_top)]
        layer.setup(bottom, top)
        layer.reshape(bottom, top)
        layer.forward(bottom, top)
        rng = np.random.default_rng(0)
        for t in top:
            t.diff[...] = rng.standard_normal(t.shape)
        for p in layer.blobs:
            p.diff[...] = 0
        down = [True] * len(bottom) if down is None else down
        layer.param_propagate_down = [True] * len(layer.blobs)
        layer.backward(top, down, bottom)
        return ([t.data.copy() for t in top] + [b.diff.copy() for b, d in zip(bottom, down) if d]
                + [p.diff.copy() for p in layer.blobs])
    finally:
        backend.set_mode_cpu()


def assert_gpu_matches_cpu(text, arrays, **kwargs):
    cpu = forward_backward(text, arrays, **kwargs)
    gpu = forward_backward(text, arrays, gpu=True, **kwargs)
    assert len(cpu) == len(gpu)
    for i, (c, g) in enumerate(zip(cpu, gpu)):
        np.testing.assert_allclose(g, c, rtol=1e-5, atol=1e-5, err_msg="%s: output %d" % (text, i))


needs_gpu = pytest.mark.skipif(not backend.gpu_available(), reason="no GPU (cupy with a CUDA device)")


def away_from(x, points, gap=0.05):
    """x nudged so that no element lies within `gap` of a kink in `points` (finite differences straddle none)."""
    x = x.copy()
    for p in points:
        near = np.abs(x - p) < gap
        x[near] = p + np.where(x[near] >= p, gap, -gap) * 2
    return x


RNG = np.random.default_rng(7)
X = RNG.standard_normal((2, 3, 2, 3))
XPOS = np.abs(X) + 0.5

GRADIENT_CASES = [
    ('type: "AbsVal"', away_from(X, [0])),
    ('type: "BNLL"', X * 3),
    ('type: "Clip" clip_param { min: -0.5 max: 0.8 }', away_from(X, [-0.5, 0.8])),
    ('type: "ELU"', away_from(X, [0])),
    ('type: "ELU" elu_param { alpha: 0.5 }', away_from(X, [0])),
    ('type: "ELU" elu_param { alpha: 1.6733 lambda: 1.0507 }', away_from(X, [0])),
    ('type: "Exp"', X),
    ('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 0.1 }', X),
    ('type: "Exp" exp_param { shift: -0.3 scale: -1 }', X),
    ('type: "Log"', XPOS),
    ('type: "Log" log_param { base: 10 scale: 2 shift: 0.5 }', XPOS),
    ('type: "Power"', X),
    ('type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }', X),
    ('type: "Power" power_param { power: 3 scale: 1.5 }', away_from(X, [0])),
    ('type: "Power" power_param { power: 0.5 scale: 2 shift: 3 }', XPOS),
    ('type: "Power" power_param { power: 1 scale: -2 shift: 1 }', X),
    ('type: "Power" power_param { power: 2 scale: 0 shift: 3 }', X),
    ('type: "ReLU"', away_from(X, [0])),
    ('type: "ReLU" relu_param { negative_slope: 0.1 }', away_from(X, [0])),
    ('type: "Sigmoid"', X * 2),
    ('type: "Swish"', X * 2),
    ('type: "Swish" swish_param { beta: 2.5 }', X),
    ('type: "TanH"', X),
    ('type: "PReLU"', away_from(X, [0])),
    ('type: "PReLU" prelu_param { channel_shared: true }', away_from(X, [0])),
    ('type: "PReLU" prelu_param { filler { type: "gaussian" std: 0.5 } }', away_from(X, [0])),
    ('type: "PReLU"', away_from(X[:, :, 0, 0], [0])),
    ('type: "Dropout" dropout_param { dropout_ratio: 0.4 }', X, TEST),
]


@pytest.mark.parametrize("case", GRADIENT_CASES, ids=[c[0] for c in GRADIENT_CASES])
def test_gradient(case):
    text, x = case[0], case[1]
    phase = case[2] if len(case) > 2 else TRAIN
    check_gradient(text, [x], phase=phase, seed=3)


def test_cpu_forward_backward_is_deterministic():
    for case in GRADIENT_CASES:
        a, b = forward_backward(case[0], [case[1]]), forward_backward(case[0], [case[1]])
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


@needs_gpu
@pytest.mark.parametrize("case", GRADIENT_CASES + [('type: "Dropout"', X, TEST)], ids=[c[0] for c in GRADIENT_CASES]
                         + ["Dropout TEST"])
def test_gpu_matches_cpu(case):
    assert_gpu_matches_cpu(case[0], [case[1]], phase=case[2] if len(case) > 2 else TRAIN)


def test_forward_values():
    x = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]])
    cases = [
        ('type: "ReLU" relu_param { negative_slope: 0.1 }', [-0.2, -0.05, 0, 0.5, 3]),
        ('type: "Clip" clip_param { min: -1 max: 1 }', [-1, -0.5, 0, 0.5, 1]),
        ('type: "Threshold" threshold_param { threshold: 0.5 }', [0, 0, 0, 0, 1]),
        ('type: "AbsVal"', [2, 0.5, 0, 0.5, 3]),
        ('type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }', (1 + 0.5 * x[0]) ** 2),
        ('type: "Power" power_param { power: 0 }', [1] * 5),
        ('type: "Exp" exp_param { base: 2 shift: 1 }', 2 ** (x[0] + 1)),
        ('type: "Log" log_param { base: 2 shift: 3 }', np.log2(x[0] + 3)),
        ('type: "BNLL"', np.log1p(np.exp(x[0]))),
        ('type: "Sigmoid"', 1 / (1 + np.exp(-x[0]))),
        ('type: "Swish" swish_param { beta: 2 }', x[0] / (1 + np.exp(-2 * x[0]))),
        ('type: "ELU" elu_param { alpha: 1.6732632 lambda: 1.0507010 }',
         1.0507010 * np.where(x[0] > 0, x[0], 1.6732632 * np.expm1(x[0]))),
        ('type: "PReLU"', [-0.5, -0.125, 0, 0.5, 3]),
    ]
    for text, want in cases:
        _, _, top = run_layer(text, x)
        np.testing.assert_allclose(top[0].data[0], want, rtol=1e-6, atol=1e-7, err_msg=text)  # float32 params


def test_bnll_large_inputs_are_finite():
    _, _, top = run_layer('type: "BNLL"', np.array([[-800.0, 800.0]]))
    np.testing.assert_allclose(top[0].data, [[0.0, 800.0]])


@pytest.mark.parametrize("text", ['type: "ReLU"', 'type: "ReLU" relu_param { negative_slope: 0.2 }',
                                  'type: "Sigmoid"', 'type: "TanH"', 'type: "ELU"', 'type: "Exp"',
                                  'type: "Swish"', 'type: "PReLU"', 'type: "Dropout"'])
def test_in_place_matches_out_of_place(text):
    def seeded_run(in_place):
        backend.set_random_seed(11)
        return run_layer(text, away_from(X, [0]), in_place=in_place)
    assert_in_place_matches(seeded_run, RNG.standard_normal(X.shape))


def assert_in_place_matches(run, dy, param_diff=0.0):
    """`run(in_place)` -> (layer, bottom, top) after forward; in place and out of place must give the same top,
    bottom diff and parameter diffs (which start at `param_diff`); returns the out-of-place parameter diffs."""
    results = []
    for in_place in (False, True):
        layer, bottom, top = run(in_place)
        y = top[0].data.copy()
        top[0].diff[...] = dy
        for p in layer.blobs:
            p.diff[...] = param_diff
        layer.backward(top, [True], bottom)
        results.append((y, bottom[0].diff.copy(), [p.diff.copy() for p in layer.blobs]))
    (y0, d0, p0), (y1, d1, p1) = results
    np.testing.assert_allclose(y1, y0, rtol=1e-12)
    np.testing.assert_allclose(d1, d0, rtol=1e-12)
    for a, b in zip(p1, p0):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    return p0


def test_prelu_param_diff_accumulates_and_shapes():
    x = away_from(X, [0])
    layer, bottom, top = run_layer('type: "PReLU"', x)
    assert layer.blobs[0].shape == (3,)
    np.testing.assert_allclose(layer.blobs[0].data, 0.25)
    top[0].diff[...] = 1
    layer.blobs[0].diff[...] = 5
    layer.backward(top, [False], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, 5 + (x * (x <= 0)).sum(axis=(0, 2, 3)))
    shared, _, _ = run_layer('type: "PReLU" prelu_param { channel_shared: true }', x)
    assert shared.blobs[0].shape == () and shared.blobs[0].count == 1


def test_dropout_train_masks_scales_and_is_seeded():
    x = np.ones((50, 40))
    backend.set_random_seed(5)
    layer, bottom, top = run_layer('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', x)
    y = top[0].data.copy()
    assert np.all((y == 0) | np.isclose(y, 1 / 0.7, rtol=1e-6))  # dropout_ratio is a float32 field
    assert abs((y == 0).mean() - 0.3) < 0.05
    top[0].diff[...] = 2
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, 2 * y)
    backend.set_random_seed(5)
    _, _, top2 = run_layer('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', x)
    np.testing.assert_array_equal(top2[0].data, y)
    _, _, test_top = run_layer('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', x, phase=TEST)
    np.testing.assert_array_equal(test_top[0].data, x)


def test_threshold_refuses_backward():
    layer, bottom, top = run_layer('type: "Threshold"', X)
    with pytest.raises(NetError, match="cannot backpropagate"):
        layer.backward(top, [True], bottom)
    layer.backward(top, [False], bottom)


@pytest.mark.parametrize("text,arrays,in_place,msg", [
    ('type: "Exp" exp_param { base: -2 }', [X], False, "base must be strictly positive"),
    ('type: "Log" log_param { base: 0 }', [XPOS], False, "base must be strictly positive"),
    ('type: "Log" log_param { base: 1 }', [XPOS], False, "base 1"),
    ('type: "Dropout" dropout_param { dropout_ratio: 1 }', [X], False, r"dropout_ratio must be in \[0, 1\)"),
    ('type: "PReLU"', [np.ones(4)], False, "number of axes of bottom blob must be >= 2"),
    ('type: "AbsVal"', [X], True, "does not allow in-place"),
    ('type: "ReLU"', [X, X], False, "exactly 1 bottom"),
])
def test_bad_parameters(text, arrays, in_place, msg):
    with pytest.raises(NetError, match=msg) as e:
        run_layer('name: "bad" ' + text, *arrays, in_place=in_place)
    assert "layer 'bad'" in str(e.value)


def test_prelu_rejects_slope_count_mismatch():
    layer = make_layer('name: "p" type: "PReLU"')
    layer.blobs = [Blob((4,), np.float64)]
    with pytest.raises(NetError, match="negative slope size is inconsistent"):
        layer.setup([Blob(X.shape, np.float64)], [Blob(dtype=np.float64)])
