"""RNN and LSTM: float64 BPTT gradient checks (cont gating, static input, exposed states), Caffe's parameter
layout, state carried between forwards, and error messages."""
import numpy as np
import pytest

from distcaffe.errors import NetError
from layer_harness import check_gradient, setup_layer

rng = np.random.default_rng(11)
FILL = 'weight_filler { type: "uniform" min: -0.5 max: 0.5 } bias_filler { type: "uniform" min: -0.2 max: 0.2 }'
T, N = 4, 3
CONT = np.array([[0, 0, 0], [1, 1, 0], [1, 0, 1], [1, 1, 1]], float)   # every stream starts (or restarts)


def layer_text(kind, extra=""):
    return 'type: "%s" recurrent_param { num_output: 3 %s %s }' % (kind, FILL, extra)


def setup(text, arrays, num_top=1):
    return setup_layer(text, arrays, num_top)


def forward(layer, bottom, top):
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return [t.data.copy() for t in top]


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_gradient_plain(kind):
    check_gradient(layer_text(kind), [rng.standard_normal((T, N, 2)), CONT], check_bottoms=[0])


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_gradient_static_input(kind):
    check_gradient(layer_text(kind), [rng.standard_normal((T, N, 2, 1)), CONT, rng.standard_normal((N, 2))],
                   check_bottoms=[0, 2])


@pytest.mark.parametrize("kind,states", [("LSTM", 2), ("RNN", 1)])
def test_gradient_expose_hidden(kind, states):
    """BPTT to x and the weights from the output top; as in Caffe, diffs on the exposed final-state tops are not
    propagated and the initial-state bottoms get no gradient (zero diff)."""
    arrays = [rng.standard_normal((T, N, 2)), np.ones((T, N))] + [rng.standard_normal((1, N, 3))] * states
    layer, bottom, top = setup(layer_text(kind, "expose_hidden: true"), arrays, num_top=1 + states)
    forward(layer, bottom, top)
    R = rng.standard_normal(top[0].shape)
    top[0].diff[...] = R
    for t in top[1:]:
        t.diff[...] = rng.standard_normal(t.shape)     # ignored
    layer.param_propagate_down = [True] * len(layer.blobs)
    propagate = [True, False] + [True] * states
    layer.backward(top, propagate, bottom)
    for b in bottom[2:]:
        assert not b.diff.any()
    for blob in [bottom[0]] + layer.blobs:
        analytic = blob.diff.copy().ravel()
        flat = blob.data.reshape(-1)
        for k in range(flat.size):
            orig = flat[k]
            vals = []
            for v in (orig + 1e-6, orig - 1e-6):
                flat[k] = v
                vals.append(float((forward(layer, bottom, top)[0] * R).sum()))
            flat[k] = orig
            assert abs((vals[0] - vals[1]) / 2e-6 - analytic[k]) < 1e-6 * max(1, abs(analytic[k]))


@pytest.mark.parametrize("kind,shapes", [
    ("LSTM", [(12, 2), (12,), (12, 5), (12, 3)]),
    ("RNN", [(3, 2), (3,), (3, 5), (3, 3), (3, 3), (3,)])])
def test_param_layout_is_caffes(kind, shapes):
    layer, _, top = setup(layer_text(kind), [np.zeros((T, N, 2)), CONT, np.zeros((N, 5))])
    assert [b.shape for b in layer.blobs] == shapes
    assert top[0].shape == (T, N, 3)


def test_lstm_matches_reference_equations():
    x = rng.standard_normal((T, N, 2))
    layer, bottom, top = setup(layer_text("LSTM"), [x, CONT])
    Wx, b, Wh = (p.data for p in layer.blobs)
    (out,) = forward(layer, bottom, top)
    h = c = np.zeros((N, 3))
    sig = lambda v: 1 / (1 + np.exp(-v))
    for t in range(T):
        g = x[t] @ Wx.T + b + (CONT[t][:, None] * h) @ Wh.T
        i, f, o, gg = sig(g[:, :3]), sig(g[:, 3:6]) * CONT[t][:, None], sig(g[:, 6:9]), np.tanh(g[:, 9:])
        c = f * c + i * gg
        h = o * np.tanh(c)
        assert np.allclose(out[t], h)


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_state_carries_over_between_forwards(kind):
    """Without expose_hidden, a forward starts where the previous one ended (Caffe copies h_T into h_0)."""
    x = rng.standard_normal((4, N, 2))
    cont = np.ones((4, N))
    cont[0] = 0
    whole, wb, wt = setup(layer_text(kind), [x, cont])
    half, hb, ht = setup(layer_text(kind), [x[:2], cont[:2]])
    for p, q in zip(half.blobs, whole.blobs):
        p.data[...] = q.data
    (full,) = forward(whole, wb, wt)
    (first,) = forward(half, hb, ht)
    hb[0].data[...], hb[1].data[...] = x[2:], cont[2:]
    (second,) = forward(half, hb, ht)
    assert np.allclose(np.concatenate([first, second]), full)


def test_lstm_exposed_states_round_trip():
    """Feeding the exposed final states back as the next initial states continues the sequence."""
    x = rng.standard_normal((2 * T, N, 2))
    cont = np.ones((2 * T, N))
    cont[0] = 0
    whole, wb, wt = setup(layer_text("LSTM"), [x, cont])
    (full,) = forward(whole, wb, wt)
    layer, bottom, top = setup(layer_text("LSTM", "expose_hidden: true"),
                               [x[:T], cont[:T], np.zeros((1, N, 3)), np.zeros((1, N, 3))], num_top=3)
    for p, q in zip(layer.blobs, whole.blobs):
        p.data[...] = q.data
    first, h_T, c_T = forward(layer, bottom, top)
    assert np.allclose(h_T[0], first[-1])
    for b, v in zip(bottom, (x[T:], cont[T:], h_T, c_T)):
        b.data[...] = v
    second = forward(layer, bottom, top)[0]
    assert np.allclose(np.concatenate([first, second]), full)


def test_errors():
    with pytest.raises(NetError, match=r"layer 'layer' \(LSTM\): num_output must be positive"):
        setup('type: "LSTM"', [np.zeros((T, N, 2)), CONT])
    with pytest.raises(NetError, match="bottom\\[1\\] \\(cont\\) must have exactly 2 axes"):
        setup(layer_text("RNN"), [np.zeros((T, N, 2)), np.zeros((T, N, 1))])
    with pytest.raises(NetError, match="at least 2 axes"):
        setup(layer_text("RNN"), [np.zeros(T), CONT])
    with pytest.raises(NetError, match="takes at least 4 bottom"):
        setup(layer_text("LSTM", "expose_hidden: true"), [np.zeros((T, N, 2)), CONT, np.zeros((1, N, 3))],
              num_top=3)
    with pytest.raises(NetError, match="hidden state input shape: 1 3 3"):
        setup(layer_text("RNN", "expose_hidden: true"), [np.zeros((T, N, 2)), CONT, np.zeros((1, N, 4))],
              num_top=2)
    layer, bottom, top = setup(layer_text("RNN"), [np.zeros((T, N, 2)), CONT])
    bottom[0].reshape(T + 1, N, 2)
    with pytest.raises(NetError, match="number of timesteps changed"):
        layer.reshape(bottom, top)
