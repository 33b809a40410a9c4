"""Eltwise, Bias, Scale: float64 gradient checks over their settings, parameter layouts, in place, errors."""
import numpy as np
import pytest

from distcaffe.errors import NetError
from layer_harness import check_gradient
from test_layers_neuron import assert_gpu_matches_cpu, assert_in_place_matches, needs_gpu, run_layer

RNG = np.random.default_rng(3)
A, B, C = (RNG.standard_normal((2, 3, 4)) for _ in range(3))


def randomize_params(layer):
    for p in layer.blobs:
        p.data[...] = np.random.default_rng(9).standard_normal(p.shape)


@pytest.mark.parametrize("text,arrays", [
    ('type: "Eltwise" eltwise_param { operation: PROD }', [A, B]),
    ('type: "Eltwise" eltwise_param { operation: PROD }', [A, B, C]),
    ('type: "Eltwise" eltwise_param { operation: PROD stable_prod_grad: false }', [A, B, C]),
    ('type: "Eltwise"', [A, B, C]),
    ('type: "Eltwise" eltwise_param { operation: SUM coeff: 0.5 coeff: -2 coeff: 3 }', [A, B, C]),
    ('type: "Eltwise" eltwise_param { operation: MAX }', [A, B]),
    ('type: "Eltwise" eltwise_param { operation: MAX }', [A, B, C]),
])
def test_eltwise_gradient(text, arrays):
    check_gradient(text, arrays)


def test_eltwise_max_ties_follow_caffe():
    a = np.array([[1.0, 2.0, 5.0]])
    b = np.array([[1.0, 3.0, 5.0]])
    c = np.array([[1.0, 3.0, 0.0]])
    layer, bottom, top = run_layer('type: "Eltwise" eltwise_param { operation: MAX }', a, b, c)
    np.testing.assert_array_equal(top[0].data, [[1, 3, 5]])
    top[0].diff[...] = 1
    layer.backward(top, [True] * 3, bottom)
    # a tie between bottoms 0 and 1 goes to 1; a later bottom must be strictly greater to win
    np.testing.assert_array_equal([b_.diff[0] for b_ in bottom], [[0, 0, 0], [1, 1, 1], [0, 0, 0]])


BIAS_SCALE_CASES = [
    ("", [A]),
    ("axis: 1 num_axes: 2", [A]),
    ("axis: 0 num_axes: -1", [A]),
    ("num_axes: 0", [A]),
    ("axis: -1", [A]),
    ("axis: 0", [A]),
    ("", [A, RNG.standard_normal(3)]),
    ("axis: 0", [A, RNG.standard_normal((2, 3))]),
]


@pytest.mark.parametrize("kind", ["Bias", "Scale"])
@pytest.mark.parametrize("case", BIAS_SCALE_CASES, ids=[c[0] + "/%d" % len(c[1]) for c in BIAS_SCALE_CASES])
def test_bias_scale_gradient(kind, case):
    params, arrays = case
    text = 'type: "%s" %s_param { %s }' % (kind, kind.lower(), params)
    check_gradient(text, arrays, param_init=randomize_params)


@pytest.mark.parametrize("params,arrays", [
    ("bias_term: true", [A]),
    ("bias_term: true axis: 1 num_axes: 2", [A]),
    ("bias_term: true num_axes: 0", [A]),
    ("bias_term: true", [A, RNG.standard_normal(3)]),
])
def test_scale_bias_term_gradient(params, arrays):
    layer = check_gradient('type: "Scale" scale_param { %s }' % params, arrays, param_init=randomize_params)
    assert len(layer.blobs) == (2 if len(arrays) == 1 else 1)


def test_param_layouts_and_default_fillers():
    layer, _, _ = run_layer('type: "Scale" scale_param { bias_term: true axis: 1 num_axes: 2 }', A)
    assert [p.shape for p in layer.blobs] == [(3, 4), (3, 4)]
    np.testing.assert_array_equal(layer.blobs[0].data, 1)
    np.testing.assert_array_equal(layer.blobs[1].data, 0)
    layer, _, _ = run_layer('type: "Scale" scale_param { num_axes: 0 filler { type: "constant" value: 3 } '
                            'bias_term: true bias_filler { type: "constant" value: 2 } }', A)
    assert [p.shape for p in layer.blobs] == [(), ()]
    np.testing.assert_allclose(layer.blobs[0].data, 3)
    np.testing.assert_allclose(layer.blobs[1].data, 2)
    layer, _, top = run_layer('type: "Bias" bias_param { axis: 0 num_axes: -1 }', A)
    assert layer.blobs[0].shape == A.shape
    np.testing.assert_array_equal(top[0].data, A)
    layer, _, _ = run_layer('type: "Bias"', A, RNG.standard_normal(3))
    assert layer.blobs == []


@pytest.mark.parametrize("text", ['type: "Scale" scale_param { bias_term: true }', 'type: "Bias"'])
def test_in_place_and_param_diff_accumulation(text):
    def run(in_place):
        layer, bottom, top = run_layer(text, A, in_place=in_place)
        randomize_params(layer)
        layer.forward(bottom, top)
        return layer, bottom, top
    dy = RNG.standard_normal(A.shape)
    p0 = assert_in_place_matches(run, dy, param_diff=1.0)
    # parameter diffs accumulate onto what was there (1): the bias gradient is 1 + sum of dy over N and H
    np.testing.assert_allclose(p0[-1], 1 + dy.sum(axis=(0, 2)))


@pytest.mark.parametrize("text,arrays,msg", [
    ('type: "Eltwise" eltwise_param { coeff: 1 }', [A, B], "one coefficient per bottom"),
    ('type: "Eltwise" eltwise_param { operation: PROD coeff: 1 coeff: 2 }', [A, B], "only takes coefficients"),
    ('type: "Eltwise"', [A, B[:, :2]], "all bottoms must have the same shape"),
    ('type: "Eltwise"', [A], "at least 2 bottom"),
    ('type: "Bias"', [A, np.ones(4)], "dimension mismatch"),
    ('type: "Scale"', [A, np.ones((3, 4, 5))], "extends past"),
    ('type: "Scale" scale_param { num_axes: -2 }', [A], "num_axes must be non-negative"),
    ('type: "Bias" bias_param { axis: 2 num_axes: 2 }', [A], "extends past"),
    ('type: "Scale" scale_param { axis: 3 }', [A], "axis 3 out of range"),
    ('type: "Bias"', [A, A, A], "at most 2 bottom"),
])
def test_bad_parameters(text, arrays, msg):
    with pytest.raises(NetError, match=msg) as e:
        run_layer('name: "bad" ' + text, *arrays)
    assert "layer 'bad'" in str(e.value)


@needs_gpu
@pytest.mark.parametrize("text,arrays", [
    ('type: "Eltwise" eltwise_param { operation: PROD }', [A, B, C]),
    ('type: "Eltwise" eltwise_param { operation: SUM coeff: 0.5 coeff: -2 coeff: 3 }', [A, B, C]),
    ('type: "Eltwise" eltwise_param { operation: MAX }', [A, B, C]),
    ('type: "Bias" bias_param { axis: 1 num_axes: 2 }', [A]),
    ('type: "Bias"', [A, RNG.standard_normal(3)]),
    ('type: "Scale" scale_param { bias_term: true }', [A]),
    ('type: "Scale" scale_param { num_axes: 0 }', [A]),
    ('type: "Scale" scale_param { axis: 0 }', [A, RNG.standard_normal((2, 3))]),
])
def test_gpu_matches_cpu(text, arrays):
    assert_gpu_matches_cpu(text, arrays)
