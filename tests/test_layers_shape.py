"""Concat, Slice, Flatten, Reshape, Crop, Tile, Filter, BatchReindex, Silence, Reduction: float64 gradient checks,
Caffe's shape rules, memory sharing, bad parameters."""
import numpy as np
import pytest

from distcaffe.blob import Blob
from distcaffe.errors import NetError
from layer_harness import check_gradient, make_layer
from test_layers_neuron import assert_gpu_matches_cpu, needs_gpu, run_layer

RNG = np.random.default_rng(5)
X = RNG.standard_normal((2, 3, 4, 5))


@pytest.mark.parametrize("text,arrays", [
    ('type: "Concat"', [X, X[:, :2]]),
    ('type: "Concat" concat_param { axis: 0 }', [X, X[:1], X]),
    ('type: "Concat" concat_param { axis: -1 }', [X, X[..., :2]]),
    ('type: "Concat" concat_param { concat_dim: 2 }', [X, X[:, :, :1]]),
])
def test_concat_gradient(text, arrays):
    check_gradient(text, arrays)


def test_concat_values_and_single_bottom_shares():
    _, _, top = run_layer('type: "Concat" concat_param { axis: 2 }', X, X[:, :, :1] + 1)
    np.testing.assert_array_equal(top[0].data, np.concatenate([X, X[:, :, :1] + 1], axis=2))
    _, bottom, top = run_layer('type: "Concat"', X)
    assert top[0].shares_data_with(bottom[0]) and top[0].shape == X.shape


@pytest.mark.parametrize("text,num_top", [
    ('type: "Slice" slice_param { axis: 1 slice_point: 1 slice_point: 3 }', 3),
    ('type: "Slice" slice_param { axis: 3 }', 5),
    ('type: "Slice" slice_param { axis: -2 slice_point: 3 }', 2),
    ('type: "Slice" slice_param { slice_dim: 0 }', 2),
])
def test_slice_gradient(text, num_top):
    check_gradient(text, [X], num_top=num_top)


def test_slice_shapes_and_single_top_shares():
    _, _, top = run_layer('type: "Slice" slice_param { axis: 2 slice_point: 1 slice_point: 3 }', X, num_top=3)
    assert [t.shape for t in top] == [(2, 3, 1, 5), (2, 3, 2, 5), (2, 3, 1, 5)]
    np.testing.assert_array_equal(top[1].data, X[:, :, 1:3])
    _, _, top = run_layer('type: "Slice" slice_param { axis: 1 slice_point: 3 }', X, num_top=2)
    assert top[1].shape == (2, 0, 4, 5)  # Caffe allows an empty last slice
    _, bottom, top = run_layer('type: "Slice"', X)
    assert top[0].shares_data_with(bottom[0])


@pytest.mark.parametrize("params,shape", [
    ("", (2, 60)),
    ("axis: 2", (2, 3, 20)),
    ("axis: 0 end_axis: 1", (6, 4, 5)),
    ("axis: -3 end_axis: -2", (2, 12, 5)),
])
def test_flatten_shapes_share_memory(params, shape):
    layer, bottom, top = run_layer('type: "Flatten" flatten_param { %s }' % params, X)
    assert top[0].shape == shape
    np.testing.assert_array_equal(top[0].data, X.reshape(shape))
    top[0].diff[...] = 7
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 7)


@pytest.mark.parametrize("params,shape", [
    ("shape { dim: 0 dim: -1 }", (2, 60)),
    ("shape { dim: 0 dim: 2 dim: -1 dim: 5 }", (2, 2, 6, 5)),
    ("shape { dim: -1 }", (120,)),
    ("shape { dim: 0 dim: 1 } axis: 1 num_axes: 1", (2, 3, 1, 4, 5)),
    ("shape { dim: 1 dim: 3 } axis: 1 num_axes: 1", (2, 1, 3, 4, 5)),
    ("shape { dim: 1 dim: 1 } axis: -1", (2, 3, 4, 5, 1, 1)),
    ("shape { dim: 5 dim: 1 } axis: -2", (2, 3, 4, 5, 1)),
    ("shape { } axis: 1 num_axes: 0", (2, 3, 4, 5)),
    ("shape { dim: 4 dim: -1 } axis: 2", (2, 3, 4, 5)),
    ("shape { dim: -1 } axis: 1 num_axes: 2", (2, 12, 5)),
])
def test_reshape_shapes(params, shape):
    _, bottom, top = run_layer('type: "Reshape" reshape_param { %s }' % params, X)
    assert top[0].shape == shape
    assert top[0].shares_data_with(bottom[0])


def test_reshape_0_copies_axis_values():
    _, _, top = run_layer('type: "Reshape" reshape_param { shape { dim: 0 dim: 0 dim: -1 } }', X)
    assert top[0].shape == (2, 3, 20)
    np.testing.assert_array_equal(top[0].data, X.reshape(2, 3, 20))


@pytest.mark.parametrize("params,ref_shape", [
    ("axis: 2 offset: 1", (2, 3, 2, 3)),
    ("axis: 1 offset: 0 offset: 1 offset: 2", (2, 2, 2, 3)),
    ("axis: -1 offset: 2", (2, 3, 4, 2)),
    ("axis: 0", (1, 2, 3, 4)),
])
def test_crop_gradient(params, ref_shape):
    layer = check_gradient('type: "Crop" crop_param { %s }' % params, [X, np.zeros(ref_shape)], check_bottoms=[0])
    assert layer.index


def test_crop_values():
    _, _, top = run_layer('type: "Crop" crop_param { axis: 2 offset: 1 offset: 2 }', X, np.zeros((2, 3, 2, 2)))
    np.testing.assert_array_equal(top[0].data, X[:, :, 1:3, 2:4])


@pytest.mark.parametrize("params", ["tiles: 3", "axis: 0 tiles: 2", "axis: -1 tiles: 2", "axis: 2 tiles: 1"])
def test_tile_gradient(params):
    check_gradient('type: "Tile" tile_param { %s }' % params, [X[:, :2, :3, :2]])


def test_tile_values():
    x = np.arange(6.0).reshape(2, 3)
    _, _, top = run_layer('type: "Tile" tile_param { axis: 1 tiles: 2 }', x)
    np.testing.assert_array_equal(top[0].data, np.tile(x, (1, 2)))
    _, _, top = run_layer('type: "Tile" tile_param { axis: 0 tiles: 2 }', x)
    np.testing.assert_array_equal(top[0].data, np.tile(x, (2, 1)))


def test_filter_gradient_and_values():
    sel = np.array([[1.0], [0.0], [1.0], [1.0]])
    x = RNG.standard_normal((4, 3, 2))
    check_gradient('type: "Filter"', [x, sel], check_bottoms=[0])
    layer, bottom, top = run_layer('type: "Filter"', x, x[:, :1, 0] * 2, sel, num_top=2)
    np.testing.assert_array_equal(top[0].data, x[[0, 2, 3]])
    np.testing.assert_array_equal(top[1].data, x[[0, 2, 3], :1, 0] * 2)
    with pytest.raises(NetError, match="cannot backpropagate to the index input"):
        layer.backward(top, [True, True, True], bottom)
    bottom[2].data[...] = 0
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    assert top[0].shape == (0, 3, 2)
    layer.backward(top, [True, False, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 0)


def test_filter_first_reshape_keeps_full_batch():
    layer = make_layer('type: "Filter"')
    bottom = [Blob((4, 3), np.float64), Blob((4,), np.float64)]
    top = [Blob(dtype=np.float64)]
    layer.setup(bottom, top)  # the selector is not filled yet at setup: Caffe sizes the top for the whole batch
    assert top[0].shape == (4, 3)
    layer.reshape(bottom, top)
    assert top[0].shape == (0, 3)


def test_batch_reindex_gradient_and_values():
    x = RNG.standard_normal((4, 3, 2))
    perm = np.array([2.0, 0.0, 2.0, 3.0, 2.0, 1.0])
    check_gradient('type: "BatchReindex"', [x, perm], check_bottoms=[0])
    layer, bottom, top = run_layer('type: "BatchReindex"', x, perm)
    np.testing.assert_array_equal(top[0].data, x[perm.astype(int)])
    with pytest.raises(NetError, match="cannot backpropagate to the index input"):
        layer.backward(top, [True, True], bottom)
    assert not layer.allow_force_backward(1)


@pytest.mark.parametrize("perm,msg", [([0.0, -1.0], "negative"), ([4.0], "greater than batch size")])
def test_batch_reindex_bad_index(perm, msg):
    with pytest.raises(NetError, match=msg):
        run_layer('type: "BatchReindex"', np.ones((4, 2)), np.array(perm))


def test_silence_zeroes_diffs():
    layer = make_layer('type: "Silence"')
    bottom = [Blob((2, 3), np.float64), Blob((4,), np.float64)]
    for b in bottom:
        b.diff[...] = 5
    layer.setup(bottom, [])
    layer.forward(bottom, [])
    layer.backward([], [True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 0)
    np.testing.assert_array_equal(bottom[1].diff, 5)


@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("params", ["", "axis: 1 coeff: 2", "axis: -1 coeff: -0.5", "axis: 3"])
def test_reduction_gradient(op, params):
    x = X[:, :2, :2] + np.sign(X[:, :2, :2]) * 0.1
    check_gradient('type: "Reduction" reduction_param { operation: %s %s }' % (op, params), [x])


def test_reduction_values():
    reducers = {"SUM": np.sum, "ASUM": lambda a, axis: np.abs(a).sum(axis),
                "SUMSQ": lambda a, axis: (a * a).sum(axis), "MEAN": np.mean}
    for op, f in reducers.items():
        _, _, top = run_layer('type: "Reduction" reduction_param { operation: %s axis: 2 coeff: 3 }' % op, X)
        assert top[0].shape == (2, 3)
        np.testing.assert_allclose(top[0].data, 3 * f(X.reshape(2, 3, -1), axis=2), rtol=1e-12)
    _, _, top = run_layer('type: "Reduction"', X)
    assert top[0].shape == () and np.isclose(float(top[0].data), X.sum())


@pytest.mark.parametrize("text,arrays,num_top,msg", [
    ('type: "Concat" concat_param { axis: 1 concat_dim: 1 }', [X, X], 1, "either axis or concat_dim"),
    ('type: "Concat"', [X, X[:, :, :2]], 1, "same shape except at concat axis 1"),
    ('type: "Concat"', [X, X[0]], 1, "same number of axes"),
    ('type: "Concat" concat_param { axis: 4 }', [X, X], 1, "axis 4 out of range"),
    ('type: "Slice" slice_param { slice_point: 1 }', [X], 3, "one slice_point per top"),
    ('type: "Slice" slice_param { slice_point: 2 slice_point: 1 }', [X], 3, "strictly increasing"),
    ('type: "Slice" slice_param { slice_point: 4 }', [X], 2, "past the end of axis 1"),
    ('type: "Slice"', [X], 2, "should evenly divide"),
    ('type: "Slice" slice_param { axis: 1 slice_dim: 1 }', [X], 1, "either axis or slice_dim"),
    ('type: "Flatten" flatten_param { axis: 2 end_axis: 1 }', [X], 1, "comes before axis"),
    ('type: "Reshape" reshape_param { shape { dim: -1 dim: -1 } }', [X], 1, "multiple -1 dims"),
    ('type: "Reshape" reshape_param { shape { dim: 7 dim: -1 } }', [X], 1, "must be divisible"),
    ('type: "Reshape" reshape_param { shape { dim: 7 } }', [X], 1, "must match input count"),
    ('type: "Reshape" reshape_param { shape { dim: 0 dim: 0 } axis: 3 }', [X], 1, "no corresponding bottom axis"),
    ('type: "Reshape" reshape_param { shape { dim: 1 } axis: 5 }', [X], 1, "axis 5 out of range"),
    ('type: "Crop" crop_param { axis: 1 offset: 1 offset: 2 }', [X, X], 1, "number of crop offsets"),
    ('type: "Crop" crop_param { offset: 3 }', [X, X[:, :, :2, :2]], 1, "invalid crop parameters in dimension 2"),
    ('type: "Tile"', [X], 1, "number of tiles must be specified"),
    ('type: "Tile" tile_param { tiles: 0 }', [X], 1, "must be positive"),
    ('type: "Filter"', [X, np.ones((2, 2))], 1, "must be singletons"),
    ('type: "Filter"', [X, np.ones(3)], 1, "same 0th dimension"),
    ('type: "Filter"', [X, np.ones(2)], 2, "one top per filtered bottom"),
    ('type: "BatchReindex"', [X, np.ones((2, 1))], 1, "must be 1-D"),
    ('type: "Reduction" reduction_param { axis: 4 }', [X], 1, "axis 4 out of range"),
])
def test_bad_parameters(text, arrays, num_top, msg):
    with pytest.raises(NetError, match=msg) as e:
        run_layer('name: "bad" ' + text, *arrays, num_top=num_top)
    assert "layer 'bad'" in str(e.value)


@pytest.mark.parametrize("kind", ["Flatten", "Reshape"])
def test_view_layers_refuse_in_place(kind):
    with pytest.raises(NetError, match="does not allow in-place"):
        run_layer('type: "%s"' % kind, X, in_place=True)


@needs_gpu
@pytest.mark.parametrize("text,arrays,num_top,down", [
    ('type: "Concat" concat_param { axis: -1 }', [X, X[..., :2]], 1, None),
    ('type: "Slice" slice_param { axis: 1 slice_point: 1 }', [X], 2, None),
    ('type: "Flatten"', [X], 1, None),
    ('type: "Reshape" reshape_param { shape { dim: 0 dim: -1 } }', [X], 1, None),
    ('type: "Crop" crop_param { axis: 2 offset: 1 }', [X, np.zeros((2, 3, 2, 3))], 1, [True, False]),
    ('type: "Tile" tile_param { tiles: 3 }', [X], 1, None),
    ('type: "Filter"', [X, np.array([0.0, 1.0])], 1, [True, False]),
    ('type: "BatchReindex"', [X, np.array([1.0, 1.0, 0.0])], 1, [True, False]),
    ('type: "Reduction" reduction_param { operation: SUMSQ axis: 1 coeff: 2 }', [X], 1, None),
    ('type: "Reduction" reduction_param { operation: ASUM axis: -1 }', [X], 1, None),
    ('type: "Reduction" reduction_param { operation: MEAN }', [X], 1, None),
])
def test_gpu_matches_cpu(text, arrays, num_top, down):
    assert_gpu_matches_cpu(text, arrays, num_top=num_top, down=down)

