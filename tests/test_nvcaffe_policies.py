"""NVCaffe solver features against their formulas: momentum/weight-decay policies, LARC, global gradient
scale (fixed, adaptive), solver_data_type FLOAT16 (master weights + history in fp16)."""

import numpy as np
import pytest

from distcaffe import caffe_pb2
from distcaffe.solvers import larc, lr_policy
from solver_helpers import NET, Capture, make_solver, weights


def test_momentum_policies():
    p = caffe_pb2.SolverParameter(momentum=0.5, momentum_policy="poly", max_momentum=0.9, momentum_power=2.0,
                                  max_iter=10)
    assert [lr_policy.momentum(p, it, 0.1) for it in (0, 5, 10)] == pytest.approx(
        [0.5, 0.5 + 0.4 * 0.25, 0.9])
    p = caffe_pb2.SolverParameter(momentum=0.5, momentum_policy="opt")
    assert lr_policy.momentum(p, 3, 0.04) == pytest.approx((1 - 0.5 * 0.2) ** 2)
    p.max_momentum = 0.7
    assert lr_policy.momentum(p, 3, 0.04) == pytest.approx(0.7)
    p = caffe_pb2.SolverParameter(momentum=0.5)
    assert lr_policy.momentum(p, 7, 0.1) == 0.5


def test_weight_decay_poly():
    p = caffe_pb2.SolverParameter(weight_decay=0.01, weight_decay_policy="poly", weight_decay_power=0.5,
                                  max_weight_decay=0.05, max_iter=100)
    assert [lr_policy.weight_decay(p, it) for it in (0, 25, 100)] == pytest.approx([0.01, 0.03, 0.05])
    # NVCaffe's defaults (power 1, max_weight_decay 0): a linear decay from weight_decay to 0.
    p = caffe_pb2.SolverParameter(weight_decay=0.01, weight_decay_policy="poly", max_iter=100)
    assert [lr_policy.weight_decay(p, it) for it in (0, 25, 100)] == pytest.approx([0.01, 0.0075, 0])
    assert lr_policy.weight_decay(caffe_pb2.SolverParameter(weight_decay=0.01), 50) == pytest.approx(0.01)


def test_larc_rate_and_policies():
    f = np.float32
    assert larc.larc_local_rate(np, 0.002, f(16.0), f(4.0)) == pytest.approx(0.002 * 4 / 2)
    assert larc.larc_local_rate(np, 0.002, f(0.0), f(4.0)) == 1.0
    assert larc.larc_local_rate(np, 0.002, f(4.0), f(0.0)) == 1.0
    assert larc.larc_local_rate(np, 0.002, f(4.0), f("nan")) == 1.0
    assert larc.larc_local_rate(np, 0.002, f(16.0), f(4.0)).dtype == np.float32   # stays a device scalar
    assert larc.combine(np, "scale", 0.1, 0.5) == pytest.approx(0.05)
    assert larc.combine(np, "clip", 0.1, 0.5) == pytest.approx(0.1)
    assert larc.combine(np, "clip", 0.1, 0.01) == pytest.approx(0.01)


@pytest.mark.parametrize("policy", ["scale", "clip"])
def test_larc_update_per_param(policy):
    s = make_solver(larc=True, larc_policy=policy, larc_eta=0.01, base_lr=0.5)
    cap = Capture()
    s.add_callback(cap)
    s.step(1)
    lr_mults = s.net.params_lr
    for g, w, w1, mult in zip(cap.grads[0], cap.weights[0], weights(s), lr_mults):
        if mult == 0:
            assert np.array_equal(w1, w)
            continue
        local = 0.01 * np.linalg.norm(w) / np.linalg.norm(g) if np.linalg.norm(w) and np.linalg.norm(g) else 1.0
        rate = 0.5 * local if policy == "scale" else min(0.5, local)
        np.testing.assert_allclose(w1, w - rate * g, rtol=1e-5, atol=1e-7)


def test_sgd_with_poly_momentum_and_wd_matches_formula():
    s = make_solver(momentum=0.5, momentum_policy="poly", max_momentum=0.9, momentum_power=1.0, max_iter=4,
                    weight_decay=0.1, weight_decay_policy="poly", weight_decay_power=1.0, max_weight_decay=0.3,
                    base_lr=0.2)
    cap = Capture()
    s.add_callback(cap)
    hist = [np.zeros_like(w) for w in weights(s)]
    s.step(3)
    for it in range(3):
        m, wd = 0.5 + 0.4 * it / 4, 0.1 + 0.2 * it / 4
        for j, (g, w) in enumerate(zip(cap.grads[it], cap.weights[it])):
            hist[j] = 0.2 * s.net.params_lr[j] * (g + wd * s.net.params_weight_decay[j] * w) + m * hist[j]
    for h, w_before, w_after in zip(hist, cap.weights[2], weights(s)):
        np.testing.assert_allclose(w_after, w_before - h, rtol=1e-5, atol=1e-7)


def test_global_grad_scale_fixed_scales_loss_diff_and_unscales_gradients():
    scaled = NET.replace('name: "tiny"', 'name: "tiny"\nglobal_grad_scale: 64')
    a, b = make_solver(momentum=0.9), make_solver(net_text=scaled, momentum=0.9)
    seen = []
    b.add_callback(type("C", (), {"on_gradients_ready": lambda self, s: seen.append(
        (float(s.net.blobs["loss"].diff), s.net.params["ip1"][0].diff.copy()))})())
    cap = Capture()
    a.add_callback(cap)
    a.step(3)
    b.step(3)
    assert seen[0][0] == 64.0
    np.testing.assert_allclose(seen[0][1], 64 * cap.grads[0][0], rtol=1e-5)
    for x, y in zip(weights(a), weights(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def test_global_grad_scale_adaptive_uses_last_max_abs_gradient():
    adaptive = NET.replace('name: "tiny"', 'name: "tiny"\nglobal_grad_scale: 2\nglobal_grad_scale_adaptive: true')
    s = make_solver(net_text=adaptive)
    ref = make_solver()
    cap = Capture()
    ref.add_callback(cap)
    s.step(1)
    ref.step(2)
    assert s.grad_scale == 2.0                      # first iteration: nothing measured yet
    expected = max(float(np.abs(g).max()) for g in cap.grads[0]) * 2   # NVCaffe: max |grad|, not L2
    s.step(1)
    assert s.grad_scale == pytest.approx(expected, rel=1e-5)
    assert float(s.net.blobs["loss"].diff) == pytest.approx(expected, rel=1e-5)
    for x, y in zip(weights(s), weights(ref)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_fp16_solver_data_type_trains():
    s = make_solver(solver_data_type=caffe_pb2.FLOAT16, momentum=0.9, base_lr=0.05, max_iter=30)
    assert all(h.dtype == np.float16 for h in s.history)
    losses = []
    for _ in range(30):
        s.step(1)
        losses.append(float(s.net.blobs["loss"].data))
    assert losses[-1] < 0.5 * losses[0], losses
    for p in s.net.learnable_params:                 # weights are the fp16 master copy
        np.testing.assert_array_equal(p.data, p.data.astype(np.float16).astype(np.float32))


def test_larc_scales_by_one_minus_momentum_and_turbo_subtracts_the_correlation():
    """NVCaffe 0.17.3 GetLocalRate, recomputed in float64 over 3 iterations of SGD with momentum."""
    kw = dict(larc=True, larc_policy="scale", larc_eta=0.02, base_lr=0.5, momentum=0.8)
    for turbo in (False, True):
        s = make_solver(larc_turbo=turbo, **kw)
        cap = Capture()
        s.add_callback(cap)
        s.step(3)
        hist = [np.zeros_like(w) for w in cap.weights[0]]
        corr = [0.0] * len(hist)
        for it in range(3):
            for j, (g, w, mult) in enumerate(zip(cap.grads[it], cap.weights[it], s.net.params_lr)):
                wn, gn = np.linalg.norm(w), np.linalg.norm(g)
                local = 0.2 * 0.02 * wn / gn if wn and gn else 1.0
                if turbo:
                    hn = np.linalg.norm(hist[j])
                    cos = float((g * hist[j]).sum()) / (np.linalg.norm(g) * hn) if hn else 0.0
                    corr[j] = 0.95 * corr[j] + 0.05 * cos
                    local -= 0.9 * corr[j]
                rate = 0.5 * (local if mult > 0 else mult)
                hist[j] = 0.8 * hist[j] + rate * g
                expect = w - hist[j]
                got = cap.weights[it + 1][j] if it < 2 else weights(s)[j]
                np.testing.assert_allclose(got, expect, rtol=2e-4, atol=1e-6)
        assert any(c != 0 for c in corr) == turbo


def test_plateau_policy_drops_lr_when_the_loss_stops_improving():
    p = caffe_pb2.SolverParameter(lr_policy="plateau", base_lr=1.0, gamma=0.1)
    p.plateau_winsize.extend([3, 2])
    state = lr_policy.Plateau()
    losses = [5, 4, 4.5, 4.2, 4.1, 3.0, 3.5, 3.6, 3.7, 3.8, 2.0, 2.5]
    rates, step = [], 0
    for it, loss in enumerate(losses):
        r, step = lr_policy.learning_rate(p, it, step, loss, state)
        rates.append(r)
    # minimum 4 at it 1 -> drop at it 4 (1 + 3); new minimum 3.0 at it 5 -> drop at it 7 (5 + 2); no window left
    assert rates == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01, 0.01])
    from distcaffe.errors import SolverError
    with pytest.raises(SolverError, match="plateau_winsize"):
        lr_policy.check_policies(caffe_pb2.SolverParameter(lr_policy="plateau"))


def test_plateau_policy_in_the_solver_uses_the_smoothed_loss():
    s = make_solver(lr_policy="plateau", gamma=0.5, plateau_winsize=[1000])
    s.step(2)
    assert s._plateau.minimum_loss == pytest.approx(s.smoothed_loss) and s.current_step == 0


def _epoch_solver(tmp_path, **fields):
    from test_data_layers import make_lmdb
    db = make_lmdb(tmp_path / "db", 8, shape=(1, 2, 3))
    net = """name: "e"
layer { name: "d" type: "Data" top: "data" top: "label" data_param { source: "%s" batch_size: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 8 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }""" % db
    from distcaffe import solvers
    from distcaffe.io import parse_net_text
    p = caffe_pb2.SolverParameter(base_lr=0.01, lr_policy="fixed", max_iter=12, random_seed=1, test_iter=[1],
                                  test_interval=1000, snapshot_prefix=str(tmp_path / "snap"),
                                  snapshot_after_train=False, **fields)
    p.net_param.CopyFrom(parse_net_text(net))
    return solvers.get_solver(p)


def test_test_and_snapshot_last_epochs_snapshots_as_each_last_epoch_begins(tmp_path):
    # 8 records, batch 2, 12 iterations = 3 epochs; N=3 -> test+snapshot as epochs 2 and 3 begin (NVCaffe counts
    # the epochs passed after the previous forward pass, so they fall at iterations 5 and 9, saved as iter 6, 10)
    s = _epoch_solver(tmp_path, test_and_snapshot_last_epochs=3, test_initialization=False)
    tests = []
    orig = s.test_all
    s.test_all = lambda: (tests.append(s.iter), orig())
    s.solve()
    assert tests == [5, 9]
    names = sorted(f.name for f in tmp_path.iterdir() if f.name.startswith("snap"))
    loss = [n for n in names if n.endswith(".caffemodel")]
    assert len(loss) == 2 and loss[0].startswith("snap_iter_10_score0_") and loss[1].startswith("snap_iter_6_score0_")
    assert len([n for n in names if n.endswith(".solverstate")]) == 2
    s.net.layers[0].close()
    s.test_nets[0].layers[0].close()


def test_test_and_snapshot_last_epochs_without_epoch_size_tests_before_the_last_iteration(tmp_path):
    s = make_solver(test_and_snapshot_last_epochs=2, max_iter=4, snapshot_prefix=str(tmp_path / "t"),
                    test_iter=[1], test_interval=100)
    s.step(4)
    assert [f.name for f in tmp_path.iterdir() if f.suffix == ".caffemodel"] == \
        ["t_iter_4_score0_%g.caffemodel" % s.last_scores[0]]


def test_rmsprop_without_rms_decay_uses_caffes_099():
    """BVLC and NVCaffe default rms_decay to 0.99: h = 0.01 g^2 after one step from zero history."""
    s = make_solver(type="RMSProp", base_lr=0.01)
    assert s.param.rms_decay == pytest.approx(0.99)
    cap = Capture()
    s.add_callback(cap)
    s.step(1)
    for g, w, w1, mult in zip(cap.grads[0], cap.weights[0], weights(s), s.net.params_lr):
        step = 0.01 * mult * g / (np.sqrt((1 - 0.99) * g * g) + 1e-8)
        np.testing.assert_allclose(w1, w - step, rtol=1e-4, atol=1e-7)
