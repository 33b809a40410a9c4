"""Builders for the Large Model Support tests: a zoo deploy net turned into a small-batch training net, a
solver over it with fixed random inputs, and the values to compare bit for bit."""
import numpy as np

import distcaffe
from distcaffe import caffe_pb2, lms, solvers
from distcaffe.io import read_net_param


def train_param(path, batch):
    """The deploy net at `batch`, with a label Input and its final Softmax made a SoftmaxWithLoss."""
    p = read_net_param(str(path))
    for layer in p.layer:
        if layer.type == "Input":
            layer.input_param.shape[0].dim[0] = batch
    last = p.layer[-1]
    assert last.type == "Softmax", last.type
    last.type = "SoftmaxWithLoss"
    last.bottom.append("label")
    last.top[0] = "loss"
    layers = list(p.layer)
    del p.layer[:]
    label = p.layer.add(name="label", type="Input", top=["label"])
    label.input_param.shape.add().dim.extend([batch])
    p.layer.extend(layers)
    return p


def make_solver(net_param, budget=None, threshold_kb=1, **lms_args):
    """An SGD solver (momentum, weight decay) over `net_param`, under LMS when `budget` is given."""
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


def snapshot_values(solver):
    """Every param's data and diff and every blob's data, as host copies."""
    net = solver.net
    vals = [np.array(b.data) for layer in net.layers for b in layer.blobs]
    vals += [np.array(b.diff) for layer in net.layers for b in layer.blobs]
    return vals


def run_and_compare(ref, got, steps=3):
    """Forward, backward, then `steps` solver steps on both solvers; every value must be bit-identical."""
    for s in (ref, got):
        s.net.forward_prefilled()
    assert np.array_equal(ref.net.blobs["loss"].data, got.net.blobs["loss"].data)
    for s in (ref, got):
        s.net.backward()
    assert all(np.array_equal(a, b) for a, b in zip(snapshot_values(ref), snapshot_values(got)))
    for _ in range(steps):
        for s in (ref, got):
            s.step(1)
        assert all(np.array_equal(a, b) for a, b in zip(snapshot_values(ref), snapshot_values(got)))
