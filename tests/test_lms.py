"""Large Model Support on CPU: the budget, the schedule and the copies are the real code paths, with numpy
holding the "device" side of the pool."""
import re

import numpy as np
import pytest

from distcaffe import lms
from distcaffe.errors import CaffeError
from distcaffe.lms.pool import DevicePool
from distcaffe.lms.streams import HostMover
from lms_helpers import largest_working_set, make_solver, run_and_compare, train_param

CIFAR = "BVLC__caffe/examples/cifar10/cifar10_quick.prototxt"


def test_pool_budget_first_fit_and_merge():
    pool = DevicePool(4096)
    a, b, c = pool.alloc(1000), pool.alloc(1000), pool.alloc(1000)
    assert (a, b, c) == (0, 1024, 2048) and pool.used == 3072
    assert pool.alloc(2000) is None                      # over the budget
    pool.free(b, 1000)
    assert pool.alloc(2000) is None                      # 2048 free, but in two runs
    pool.free(a, 1000)
    assert pool.free_list[0] == (0, 2048)               # neighbours merged
    assert pool.alloc(2000) == 0 and pool.peak == 3072
    assert not pool.reserve(2048) and pool.reserve(1024) and pool.accounted() == 4096


def test_copy_read_before_its_event_reads_nan():
    mover = HostMover(1024, poison=True)
    host = np.arange(8, dtype=np.float32)
    dev = mover.view(0, 8, np.float32)
    ev = mover.h2d(dev, host, host.nbytes)
    assert np.isnan(dev).all() and not mover.done(ev)    # not arrived yet: poisoned
    mover.compute_wait(ev)
    assert mover.done(ev) and np.array_equal(dev, host)


@pytest.fixture
def cifar(zoo):
    return train_param(zoo / CIFAR, 2)


def test_bit_identical_at_the_largest_working_set(cifar):
    probe = make_solver(cifar, budget=10 ** 8)
    budget = largest_working_set(probe)
    ref, got = make_solver(cifar), make_solver(cifar, budget=budget, poison=True)
    run_and_compare(ref, got)
    stats = got.net.lms.mgr.stats()
    assert stats["peak"] <= budget and stats["h2d"] > 0 and stats["d2h"] > 0


def test_transfers_per_iteration_equal_the_prediction(cifar):
    probe = make_solver(cifar, budget=10 ** 8)
    s = make_solver(cifar, budget=largest_working_set(probe) * 5 // 4)
    s.step(2)                                            # the first pass records the schedule
    predicted = s.net.lms.mgr.predict(3)
    s.step(3)
    assert s.net.lms.mgr.copies(3) == predicted and predicted[0]["h2d"] > 0


def test_prefetch_read_before_its_event_is_caught(cifar, monkeypatch):
    probe = make_solver(cifar, budget=10 ** 8)
    budget = largest_working_set(probe) * 2
    ref = make_solver(cifar)
    ref.step(3)
    good = make_solver(cifar, budget=budget, poison=True)
    good.step(3)
    assert np.array_equal(ref.net.blobs["loss"].data, good.net.blobs["loss"].data)
    monkeypatch.setattr(HostMover, "compute_wait", lambda self, ev: None)   # compute no longer waits
    bad = make_solver(cifar, budget=budget, poison=True)
    with np.errstate(all="ignore"), pytest.raises(CaffeError, match="label nan"):
        bad.step(3)                     # the label copy had not landed when the loss layer read it


def test_a_layer_over_the_budget_fails_at_start_up(cifar):
    with pytest.raises(CaffeError) as err:
        make_solver(cifar, budget=2 * 10 ** 6)
    msg = str(err.value)
    assert "\n" not in msg
    assert re.match(r"Large Model Support: layer 'conv\d' \(Convolution\) (forward|backward) needs \d+ bytes on the "
                    r"device .*but the budget is 1999872 bytes", msg), msg


def test_threshold_keeps_small_arrays_resident_and_frac_defers(cifar):
    s = make_solver(cifar, budget=10 ** 8, threshold_kb=10 ** 6)      # nothing is larger than 1 GB
    assert all(e.small for e in s.net.lms.mgr.entries)
    s.step(2)
    assert s.net.lms.mgr.stats()["d2h"] == 0
    assert make_solver(cifar, budget=10 ** 8, frac=0.9).net.lms is None    # the net takes < 90% of it
    with pytest.raises(CaffeError, match="between 0 and 1"):
        lms.set_lms(1, frac=1.5)
