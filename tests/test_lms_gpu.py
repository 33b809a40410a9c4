"""Large Model Support on a real GPU (skips without one): cupy arena, pinned host buffers, copies on a side
stream ordered by events. The same checks as on CPU: bit-identical to a GPU run without LMS, peak within the
budget, copies per iteration as predicted. Speed is benchmarks/lms_speed.py's job."""
import os

import pytest

from distcaffe import backend
from lms_helpers import largest_working_set, make_solver, run_and_compare, train_param

pytestmark = pytest.mark.skipif(not backend.gpu_available(), reason="no GPU")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("net,batch", [(os.path.join(ROOT, "examples/mnist/lenet.prototxt"), 8),
                                       ("resnet50", 4)])
def test_gpu_bit_identical_within_budget_and_predicted(net, batch):
    param = train_param(net, batch)
    budget = largest_working_set(make_solver(param, budget=2 * 10 ** 9, gpu=True)) * 2
    ref, got = make_solver(param, gpu=True), make_solver(param, budget=budget, gpu=True, poison=True)
    run_and_compare(ref, got)
    mgr = got.net.lms.mgr
    assert mgr.stats()["peak"] <= budget and mgr.stats()["d2h"] > 0
    predicted = mgr.predict(2)
    got.step(2)
    assert mgr.copies(2) == predicted
