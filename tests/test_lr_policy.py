"""Learning-rate policies against Caffe's formulas (SGDSolver::GetLearningRate), incl. NVCaffe min_lr/rampup."""
import math

import pytest

from distcaffe import caffe_pb2
from distcaffe.errors import SolverError
from distcaffe.solvers import lr_policy


def P(**kw):
    return caffe_pb2.SolverParameter(**kw)


def rates(p, n):
    out, step = [], 0
    for it in range(n):
        r, step = lr_policy.learning_rate(p, it, step)
        out.append(r)
    return out


@pytest.mark.parametrize("kw,formula", [
    (dict(lr_policy="fixed", base_lr=0.1), lambda it: 0.1),
    (dict(lr_policy="step", base_lr=0.1, gamma=0.5, stepsize=3), lambda it: 0.1 * 0.5 ** (it // 3)),
    (dict(lr_policy="exp", base_lr=0.1, gamma=0.9), lambda it: 0.1 * 0.9 ** it),
    (dict(lr_policy="inv", base_lr=0.1, gamma=0.01, power=0.75), lambda it: 0.1 * (1 + 0.01 * it) ** -0.75),
    (dict(lr_policy="poly", base_lr=0.1, power=2.0, max_iter=10), lambda it: 0.1 * (1 - it / 10) ** 2),
    (dict(lr_policy="sigmoid", base_lr=0.1, gamma=-0.5, stepsize=4), lambda it: 0.1 / (1 + math.exp(0.5 * (it - 4)))),
])
def test_policy_formulas(kw, formula):
    p = P(**kw)
    assert rates(p, 10) == pytest.approx([formula(it) for it in range(10)], rel=1e-6)


def test_multistep_advances_one_step_per_stepvalue():
    p = P(lr_policy="multistep", base_lr=1.0, gamma=0.1, stepvalue=[2, 5])
    assert rates(p, 7) == pytest.approx([1, 1, 0.1, 0.1, 0.1, 0.01, 0.01])


def test_min_lr_floor_and_poly_to_min_lr():
    p = P(lr_policy="exp", base_lr=1.0, gamma=0.5, min_lr=0.2)
    assert rates(p, 5) == pytest.approx([1, 0.5, 0.25, 0.2, 0.2])
    p = P(lr_policy="poly", base_lr=1.0, power=1.0, max_iter=4, min_lr=0.2)
    assert rates(p, 5) == pytest.approx([(1 - 0.2) * (1 - it / 4) + 0.2 for it in range(5)])


def test_rampup_is_quadratic_from_rampup_lr():
    p = P(lr_policy="fixed", base_lr=1.0, rampup_interval=4, rampup_lr=0.2)
    assert rates(p, 6) == pytest.approx([0.2 + 0.8 * (it / 4) ** 2 for it in range(4)] + [1.0, 1.0])
    p = P(lr_policy="fixed", base_lr=1.0, rampup_interval=2)   # rampup_lr unset -> from 0
    assert rates(p, 3) == pytest.approx([0.0, 0.25, 1.0])


@pytest.mark.parametrize("kw,msg", [
    (dict(lr_policy="cosine"), "unknown lr_policy 'cosine'"),
    (dict(lr_policy="step", stepsize=0), "needs stepsize"),
    (dict(lr_policy="fixed", momentum_policy="warm"), "unknown momentum_policy"),
    (dict(lr_policy="fixed", larc=True, larc_policy="auto"), "unknown larc_policy"),
    (dict(lr_policy="fixed", min_lr=-1), "min_lr"),
])
def test_bad_policies(kw, msg):
    with pytest.raises(SolverError, match=msg):
        lr_policy.check_policies(P(**kw), "solver x")
