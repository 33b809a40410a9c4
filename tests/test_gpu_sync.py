"""A training iteration on the GPU code path reads nothing back to the host except at a display: counted by
hostcupy (numpy standing in for cupy, counting the syncs cupy would make), so a regression fails here."""
import numpy as np
import pytest
from google.protobuf import text_format

import hostcupy
from distcaffe.io import parse_net_text
from distcaffe.log import set_quiet
from distcaffe.proto import caffe_pb2
from distcaffe.solvers import get_solver

NET = """name: "sync" default_forward_type: FLOAT16 default_backward_type: FLOAT16 global_grad_scale_adaptive: true
layer { name: "data" type: "DummyData" top: "data" top: "label" dummy_data_param {
  data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 3 }
  shape { dim: 4 dim: 2 dim: 8 dim: 8 } shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" batch_norm_param { scale_bias: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip" inner_product_param { num_output: 5
  weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" include { phase: TRAIN } }
"""
SOLVER = ('base_lr: 0.1 momentum: 0.9 weight_decay: 0.0005 lr_policy: "fixed" larc: true larc_policy: "clip" '
          'clip_gradients: 10 solver_data_type: FLOAT16 display: 5 average_loss: 3 max_iter: 100 random_seed: 1')


@pytest.fixture
def gpu_path():
    set_quiet(True)
    hostcupy.STRICT = True
    hostcupy.install()
    try:
        yield hostcupy
    finally:
        hostcupy.uninstall()
        hostcupy.STRICT = False
        set_quiet(False)


def _solver():
    sp = caffe_pb2.SolverParameter()
    text_format.Parse(SOLVER, sp)
    sp.net_param.CopyFrom(parse_net_text(NET))
    return get_solver(sp)


def _counts(H):
    by, _ = H.summary()
    total = {}
    for c in by.values():
        for k, n in c.items():
            total[k] = total.get(k, 0) + n
    return total


class _PerIteration:
    """Solver callback: the counts at the start of every iteration."""

    def __init__(self, H):
        self.H, self.at_start = H, []

    def on_start(self, solver):
        self.at_start.append((solver.iter, _counts(self.H)))

    def on_gradients_ready(self, solver):
        pass


def test_iteration_without_display_has_no_host_sync(gpu_path):
    H = gpu_path
    solver = _solver()
    marks = _PerIteration(H)
    solver.add_callback(marks)
    solver.step(7)                       # displays at iterations 0 and 5
    by_iter = dict(marks.at_start)
    for it in (2, 3):                    # iterations 2 and 3, whole: forward, backward, LARC, clip, update
        syncs = by_iter[it + 1].get("sync", 0) - by_iter[it].get("sync", 0)
        copies_back = by_iter[it + 1].get("d2h", 0) - by_iter[it].get("d2h", 0)
        assert (syncs, copies_back) == (0, 0), "iteration %d: %d host syncs, %d copies back" % (it, syncs, copies_back)
    assert by_iter[6].get("sync", 0) - by_iter[5].get("sync", 0) >= 1      # the display reads the loss back
    assert not H.VIOLATIONS
    assert np.isfinite(solver.smoothed_loss)


def test_bad_label_is_reported_at_the_next_display(gpu_path):
    """On a GPU the label check is a device flag read at the display: the error still names value and blob."""
    from distcaffe.errors import CaffeError
    solver = _solver()
    solver.step(2)
    solver.net.layers[0].layer_param.dummy_data_param.data_filler[1].value = 7   # labels now outside [0, 5)
    solver.net.layers[0].layer_setup([], solver.net._top(0))
    with pytest.raises(CaffeError, match=r"layer 'loss' \(SoftmaxWithLoss\): label 7 in bottom \S+ is outside \[0, 5\)"):
        solver.step(5)
    assert solver.iter == 5                          # found at iteration 5's display, not earlier


def test_synced_array_reuses_its_buffers(gpu_path):
    """Host <-> device transfers copy into the arrays allocated the first time (no allocation per transfer)."""
    from distcaffe.blob import Blob
    b = Blob((3, 4), np.float16)
    b.data[...] = 1
    dev, host = b._data.dev(), b._data.host()
    for k in range(3):
        b.mut_dev_data[...] += 1                     # device fresh
        assert b.data[0, 0] == 2 + k                 # copied back into the same host buffer
        b.data[...] += 0                             # host fresh: the next device read uploads again
        assert b._data.dev() is dev and b._data.host() is host
    counts = _counts(gpu_path)
    assert counts["h2d"] >= 4 and counts["d2h"] >= 3
