"""InnerProduct and Embed: float64 gradients, shapes, parameter layout, errors."""
import numpy as np
import pytest

from distcaffe.blob import Blob
from distcaffe.layers import inner_product
from distcaffe.errors import NetError
from layer_harness import check_gradient, make_layer

RNG = np.random.default_rng(5)
FILL = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }'


def _run(text, x):
    layer = make_layer(text)
    b, t = Blob(x.shape, np.float64), Blob(dtype=np.float64)
    b.data[...] = x
    layer.setup([b], [t])
    layer.forward([b], [t])
    return layer, b, t


@pytest.mark.parametrize("params,shape", [
    ('num_output: 4', (3, 2, 2, 2)),
    ('num_output: 3 axis: 2', (2, 3, 4)),
    ('num_output: 5 transpose: true', (3, 4)),
    ('num_output: 2 bias_term: false axis: -1', (2, 2, 3)),
])
def test_inner_product_gradient(params, shape):
    check_gradient('type: "InnerProduct" inner_product_param { %s %s }' % (params, FILL),
                   [RNG.standard_normal(shape)])


def test_inner_product_shapes_and_values():
    x = RNG.standard_normal((2, 3, 4))
    layer, _, t = _run('type: "InnerProduct" inner_product_param { num_output: 5 axis: 2 %s }' % FILL, x)
    assert t.shape == (2, 3, 5) and layer.blobs[0].shape == (5, 4) and layer.blobs[1].shape == (5,)
    np.testing.assert_allclose(t.data, x @ layer.blobs[0].data.T + layer.blobs[1].data)
    layer, _, t = _run('type: "InnerProduct" inner_product_param { num_output: 5 transpose: true %s }' % FILL, x)
    assert t.shape == (2, 5) and layer.blobs[0].shape == (12, 5)
    np.testing.assert_allclose(t.data, x.reshape(2, 12) @ layer.blobs[0].data + layer.blobs[1].data)


def test_inner_product_input_size_change_is_an_error():
    layer, b, t = _run('name: "fc" type: "InnerProduct" inner_product_param { num_output: 2 }', np.zeros((2, 6)))
    b.reshape(2, 7)
    with pytest.raises(NetError, match="fc.*Input size incompatible"):
        layer.reshape([b], [t])
    b.reshape(5, 6)          # a new batch size is fine
    layer.reshape([b], [t])
    assert t.shape == (5, 2)


def test_embed_forward_and_param_gradient():
    idx = np.array([[0, 3, 3], [2, 0, 3]], dtype=np.float64)
    text = 'type: "Embed" embed_param { input_dim: 4 num_output: 3 %s }' % FILL
    layer, b, t = _run(text, idx)
    assert t.shape == (2, 3, 3) and layer.blobs[0].shape == (4, 3) and layer.blobs[1].shape == (3,)
    np.testing.assert_allclose(t.data, layer.blobs[0].data[idx.astype(int)] + layer.blobs[1].data)
    check_gradient(text, [idx], check_bottoms=[])
    g = RNG.standard_normal(t.shape)
    t.diff[...] = g
    layer.blobs[0].diff[...] = 1.0                       # parameter diffs accumulate
    layer.param_propagate_down = [True, True]
    layer.backward([t], [False], [b])
    expect = np.ones((4, 3))
    np.add.at(expect, idx.astype(int).ravel(), g.reshape(-1, 3))
    np.testing.assert_allclose(layer.blobs[0].diff, expect)


def test_embed_errors():
    text = 'name: "emb" type: "Embed" embed_param { input_dim: 4 num_output: 2 }'
    with pytest.raises(NetError, match="emb.*not an integer in \\[0, 4\\)"):
        _run(text, np.array([1.0, 4.0]))
    with pytest.raises(NetError, match="not an integer"):
        _run(text, np.array([1.5]))
    layer, b, t = _run(text, np.array([1.0, 2.0]))
    with pytest.raises(NetError, match="Can't backpropagate to EmbedLayer input"):
        layer.backward([t], [True], [b])
    with pytest.raises(NetError, match="input_dim must be positive"):
        _run('type: "Embed" embed_param { num_output: 2 }', np.zeros(2))
    with pytest.raises(NetError, match="num_output must be positive"):
        _run('type: "Embed" embed_param { input_dim: 2 }', np.zeros(2))


@pytest.mark.parametrize("transpose", [False, True])
def test_large_weight_diff_accumulates_in_row_blocks(transpose):
    """A weight diff over the 8 MB block size (here 600 x 9216 floats, AlexNet fc6's K) is accumulated block by
    block onto a diff that already holds values: the whole product added at once, to float32 rounding (the
    bits match on OpenBLAS's SkylakeX kernels, not on its Haswell/Zen ones, whose rounding of a row depends on
    where it falls in their tiles)."""
    layer = make_layer('type: "InnerProduct" inner_product_param { num_output: 600 transpose: %s %s }'
                       % (str(transpose).lower(), FILL), dtype=np.float32)
    x = RNG.standard_normal((16, 9216)).astype(np.float32)
    b, t = Blob(x.shape, np.float32), Blob(dtype=np.float32)
    b.data[...] = x
    layer.setup([b], [t])
    layer.forward([b], [t])
    g = RNG.standard_normal(t.shape).astype(np.float32)
    t.diff[...] = g
    start = RNG.standard_normal(layer.blobs[0].shape).astype(np.float32)
    layer.blobs[0].diff[...] = start
    layer.backward([t], [True], [b])
    want = start + (x.T @ g if transpose else g.T @ x)
    assert inner_product._row_blocks(np, layer.blobs[0].diff) != [slice(None)]
    np.testing.assert_allclose(layer.blobs[0].diff, want, rtol=1e-5, atol=1e-5)
