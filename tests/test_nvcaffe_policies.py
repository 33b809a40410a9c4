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
                                  max_iter=100)
    assert [lr_policy.weight_decay(p, it) for it in (0, 25, 100)] == pytest.approx([0, 0.005, 0.01])
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
                    weight_decay=0.1, weight_decay_policy="poly", weight_decay_power=1.0, base_lr=0.2)
    cap = Capture()
    s.add_callback(cap)
    hist = [np.zeros_like(w) for w in weights(s)]
    s.step(3)
    for it in range(3):
        m, wd = 0.5 + 0.4 * it / 4, 0.1 * it / 4
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


@pytest.mark.parametrize("field", ["larc_turbo: true", "test_and_snapshot_last_epochs: 2"])
def test_unsupported_nvcaffe_solver_fields_are_clear_errors(field):
    from distcaffe.errors import SolverError
    from distcaffe.io import parse_solver_text
    from distcaffe.solvers.lr_policy import check_policies
    param = parse_solver_text('base_lr: 0.1 lr_policy: "fixed" ' + field)
    with pytest.raises(SolverError, match="%s is not supported" % field.split(":")[0]):
        check_policies(param)
