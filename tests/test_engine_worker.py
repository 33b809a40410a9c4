"""Worker pieces that need no second process: options, NVCaffe batch splitting, world-size-1 training through the
engine (same result as the plain solver), and the agreed-action mapping."""
import os
import sys

import numpy as np
import pytest

from distcaffe.errors import CaffeError
from distcaffe.proto import caffe_pb2
from distcaffe.solvers import load_solver_param
from distcaffe.engine.comm_single import SingleCommunicator
from distcaffe.engine.worker import TrainOptions, Worker, split_batch

sys.path.insert(0, os.path.dirname(__file__))
import _dist_helpers as h  # noqa: E402


def test_options_from_flags():
    o = TrainOptions.from_any({"gpu": "", "cpu-workers": "3", "reduce_buckets": "2", "batch_semantics": "nvcaffe",
                               "solver": "ignored", "level": "1"})
    assert (o.gpu, o.cpu_workers, o.reduce_buckets, o.batch_semantics, o.level) == (None, 3, 2, "nvcaffe", 1)
    for bad in ({"batch_semantics": "x"}, {"comm": "tcp"}, {"placement": "RANDOM"}, {"cpu_workers": "two"}):
        with pytest.raises(CaffeError):
            TrainOptions.from_any(bad)


def test_split_batch_train_layers_only(tmp_path):
    solver = h.make_job(tmp_path, batch=8, name="s")
    net = solver.parent / "net.prototxt"
    net.write_text(net.read_text() + 'layer { name: "tdata" type: "Data" top: "t" include { phase: TEST } '
                                      'data_param { source: "x" batch_size: 10 } }\n')
    param, solver_dir = load_solver_param(str(solver))
    out, changed = split_batch(param, solver_dir, 4)
    assert changed == ["data"] and not out.HasField("net")
    layers = {l.name: l for l in out.net_param.layer}
    assert layers["data"].data_param.batch_size == 2 and layers["tdata"].data_param.batch_size == 10
    with pytest.raises(CaffeError, match="layer 'data': data_param.batch_size 8 cannot be split evenly over 3"):
        split_batch(param, solver_dir, 3)


def test_world_size_one_through_engine_equals_plain_solver(tmp_path):
    a = h.make_job(tmp_path, batch=8, name="engine")
    b = h.make_job(tmp_path, batch=8, name="plain")
    assert Worker(SingleCommunicator(), {}).run(str(a)) == 0
    h.single_process(b)
    wa, wb = h.weights(a.parent / "snap_iter_10.caffemodel"), h.weights(b.parent / "snap_iter_10.caffemodel")
    for name in wa:
        for x, y in zip(wa[name], wb[name]):
            np.testing.assert_array_equal(x, y)


def test_agreed_action_from_summed_flags():
    from distcaffe.solvers import signals

    comm = SingleCommunicator()
    comm.size = 2                      # as a rank of two sees it
    w = Worker(comm, {})
    for flags, action in (([0, 0], signals.NONE), ([1, 0], signals.SNAPSHOT), ([0, 2], signals.STOP),
                          ([1, 1], signals.SNAPSHOT_STOP)):
        w._agreed_action = np.array(flags, float)
        assert w._take_agreed_action() == action
        assert w._take_agreed_action() == signals.NONE   # taken once; e.g. rank 0's test phase sees NONE
    assert caffe_pb2.NetParameter().reduce_buckets == 6  # NVCaffe's default lives on the net
