"""Builders for the Large Model Support tests: a zoo deploy net turned into a small-batch training net, a
solver over it with fixed random inputs, and the values to compare bit for bit."""
import hashlib
import os
import sys

import numpy as np

import distcaffe
from distcaffe import caffe_pb2, lms, solvers

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from lms_speed import train_param  # noqa: E402,F401


def make_solver(net_param, budget=None, threshold_kb=1, gpu=False, **lms_args):
    """An SGD solver (momentum, weight decay) over `net_param`, under LMS when `budget` is given."""
    if gpu:
        distcaffe.set_mode_gpu()
    else:
        distcaffe.set_mode_cpu()
    lms.set_lms(threshold_kb if budget else 0, budget=budget, **lms_args)
    try:
        sp = caffe_pb2.SolverParameter(base_lr=0.01, momentum=0.9, weight_decay=5e-4, lr_policy="fixed",
                                       max_iter=10, random_seed=3, snapshot_after_train=False)
        sp.net_param.CopyFrom(net_param)
        s = solvers.get_solver(sp)
    finally:
        lms.set_lms(0)
    rng = np.random.RandomState(0)
    shape = s.net.blobs["data"].shape
    s.net.blobs["data"].data[...] = rng.randn(*shape)
    s.net.blobs["label"].data[...] = rng.randint(0, 10, shape[0])
    return s


def footprint(solver):
    """Bytes the net and solver keep on a device without LMS (every managed array)."""
    return sum(e.nbytes for e in solver.net.lms.mgr.entries)


def largest_working_set(solver):
    return max(need for _, need in solver.net.lms.working_sets) + solver.net.lms.mgr.resident_bytes()


def fingerprint(solver):
    """sha256 of every param's data and diff and of the loss (equal fingerprints: bit-identical values)."""
    h = hashlib.sha256()
    for layer in solver.net.layers:
        for b in layer.blobs:
            h.update(np.ascontiguousarray(b.data).tobytes())
            h.update(np.ascontiguousarray(b.diff).tobytes())
    h.update(np.ascontiguousarray(solver.net.blobs["loss"].data).tobytes())
    return h.hexdigest()


def trajectory(solver, steps=3):
    """Fingerprints after forward, after backward, and after each of `steps` solver steps, each phase from a
    fixed RNG state (Dropout masks draw from it)."""
    phases = [lambda s: s.net.forward_prefilled(), lambda s: s.net.backward()] + [lambda s: s.step(1)] * steps
    out = []
    for k, phase in enumerate(phases):
        distcaffe.set_random_seed(k + 1)
        phase(solver)
        out.append(fingerprint(solver))
    return out


def run_and_compare(ref, got, steps=3):
    """Forward, backward, then `steps` solver steps on both solvers; every value must be bit-identical."""
    assert trajectory(got, steps) == trajectory(ref, steps)
