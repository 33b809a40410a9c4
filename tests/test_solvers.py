"""Solver scaffolding: engine hooks (callbacks, is_root, root_barrier), test nets, smoothed loss, non-finite
loss, signal actions (real signals), pycaffe constructors, solver file errors, CLI flag parsing."""
import logging
import os
import signal

import numpy as np
import pytest

import distcaffe
from distcaffe import caffe_pb2, solvers
from distcaffe.errors import CaffeError, SolverError
from distcaffe.solvers import signals
from distcaffe.launcher import flags as F
from solver_helpers import NET, Capture, make_solver


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines():
    h = Lines()
    logger = logging.getLogger("distcaffe")
    logger.addHandler(h)
    yield h.lines
    logger.removeHandler(h)


def with_test_net(**fields):
    return make_solver(test_iter=[2], test_interval=2, display=1, **fields)


def test_callbacks_order_and_gradients(log_lines):
    s = make_solver()
    cap = Capture()
    s.add_callback(cap)
    s.add_callback(object())          # hooks are optional
    s.step(2)
    assert cap.events == [("start", 0), ("grads", 0), ("start", 1), ("grads", 1)]
    assert all(np.abs(g).sum() > 0 for g in cap.grads[0][:3])


def test_root_duties_and_barrier(tmp_path, log_lines):
    calls = []
    s = with_test_net(snapshot=2, snapshot_prefix=str(tmp_path / "r"))
    s.root_barrier = lambda: calls.append(s.iter)
    s.step(4)
    assert calls == [0, 2, 2, 4]      # test at 0, snapshot+test at 2, snapshot at 4
    assert any("Test net output #0: loss" in l for l in log_lines)
    assert os.path.exists(tmp_path / "r_iter_4.caffemodel")


def test_non_root_is_silent_and_writes_nothing(tmp_path, log_lines):
    p = caffe_pb2.SolverParameter(base_lr=0.1, lr_policy="fixed", max_iter=4, display=1, test_iter=[1],
                                  test_interval=1, snapshot=1, snapshot_prefix=str(tmp_path / "n"))
    p.net_param.CopyFrom(distcaffe.io.parse_net_text(NET))
    barrier = []
    s = solvers.SGDSolver(p, is_root=False)
    s.root_barrier = lambda: barrier.append(s.iter)
    del log_lines[:]
    s.solve()
    assert s.test_nets == [] and s.iter == 4 and os.listdir(tmp_path) == []
    assert not [l for l in log_lines if "Iteration" in l or "net output" in l]
    assert barrier            # every rank still meets the root at the duty points


def test_display_lines_and_smoothed_loss(log_lines):
    s = make_solver(display=1, average_loss=3)
    losses = []
    s.add_callback(type("L", (), {"on_gradients_ready": lambda self, sv: losses.append(
        float(sv.net.blobs["loss"].data))})())
    s.step(5)
    shown = [float(l.split("loss = ")[1]) for l in log_lines if l.startswith("Iteration ") and ", loss = " in l]
    expected = [np.mean(losses[max(0, i - 2):i + 1]) for i in range(5)]
    np.testing.assert_allclose(shown, expected, rtol=1e-5)
    assert any(l.startswith("    Train net output #0: loss = ") and "(* 1 = " in l for l in log_lines)
    assert sum(l.startswith("Iteration ") and ", lr = 0.1" in l for l in log_lines) == 5


def test_test_nets_share_weights_and_compute_loss(log_lines):
    s = with_test_net(test_compute_loss=True)
    s.step(1)
    tn = s.test_nets[0]
    assert tn.phase == caffe_pb2.TEST
    assert tn.params["ip1"][0].shares_data_with(s.net.params["ip1"][0])
    means = s.test(0)
    assert means["loss"] == pytest.approx(float(tn.blobs["loss"].data))
    assert any(l.startswith("Test loss: ") for l in log_lines)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_non_finite_loss_stops_with_iteration(tmp_path):
    s = make_solver(base_lr=1e30, snapshot=1, snapshot_prefix=str(tmp_path / "nan"))
    with pytest.raises(SolverError, match=r"iteration (\d+): the loss of train net 'tiny' is (nan|inf)"):
        s.solve()
    written = [int(f.split("_iter_")[1].split(".")[0]) for f in os.listdir(tmp_path) if f.endswith(".caffemodel")]
    assert s.iter >= 1 and all(n <= s.iter for n in written)   # nothing after the bad iteration


@pytest.mark.parametrize("effect,expect_iter,expect_snap", [("stop", 3, False), ("snapshot", 20, True),
                                                            ("none", 20, False)])
def test_real_sighup_effects(tmp_path, effect, expect_iter, expect_snap):
    s = make_solver(snapshot_prefix=str(tmp_path / "h"), max_iter=20)
    handler = signals.SignalHandler(sigint_effect="stop", sighup_effect=effect)
    s.action_request_function = handler.requested_action
    s.add_callback(type("K", (), {"on_gradients_ready": lambda self, sv: sv.iter == 2 and os.kill(
        os.getpid(), signal.SIGHUP)})())
    with handler:
        s.solve()
    assert s.iter == expect_iter
    assert os.path.exists(tmp_path / "h_iter_3.caffemodel") == expect_snap
    assert signal.getsignal(signal.SIGHUP) is not handler._handle


def test_real_sigterm_snapshots_and_stops(tmp_path):
    s = make_solver(snapshot_prefix=str(tmp_path / "t"), max_iter=50)
    handler = signals.SignalHandler()
    s.action_request_function = handler.requested_action
    s.add_callback(type("K", (), {"on_start": lambda self, sv: sv.iter == 4 and os.kill(
        os.getpid(), signal.SIGTERM)})())
    with handler:
        s.solve()
    assert s.iter == 5 and s.requested_early_exit
    assert sorted(f for f in os.listdir(tmp_path) if "_iter_" in f) == ["t_iter_5.caffemodel", "t_iter_5.solverstate"]
    assert os.path.exists(tmp_path / "t_metrics.csv")                  # training metrics beside the snapshots


def test_pycaffe_constructors_and_types(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text('net: "net.prototxt"\ntype: "Adam"\nbase_lr: 0.01\n'
                                              'lr_policy: "fixed"\nmax_iter: 2\nmomentum: 0.9\n')
    path = str(tmp_path / "solver.prototxt")
    assert type(distcaffe.get_solver(path)) is solvers.AdamSolver
    for cls in (solvers.SGDSolver, solvers.NesterovSolver, solvers.AdaDeltaSolver):
        s = cls(path)
        assert type(s) is cls and s.iter == 0 and s.net.name == "tiny"
    assert distcaffe.SGDSolver is solvers.SGDSolver
    s = distcaffe.get_solver(path)
    assert s.param.snapshot_prefix == str(tmp_path / "solver")      # BVLC default: the solver file's stem
    for bad in ("AdaGrad", "RMSProp"):
        with pytest.raises(SolverError, match="momentum cannot be used with %s" % bad):
            getattr(solvers, bad + "Solver")(path)


@pytest.mark.parametrize("fields,msg", [
    (dict(), "must specify exactly one train net"),
    (dict(net="a.prototxt", train_net="b.prototxt"), "must specify exactly one train net"),
    (dict(net_param=True, regularization_type="L3"), "unknown regularization_type 'L3'"),
    (dict(net_param=True, average_loss=0), "average_loss"),
    (dict(net_param=True, test_iter=[1]), "test_interval must be > 0"),
    (dict(net_param=True, snapshot=1, snapshot_prefix="/nonexistent_dir/x"), "cannot write to snapshot prefix"),
    (dict(net_param=True, type="Sgd"), "unknown solver type 'Sgd'"),
])
def test_solver_param_errors(fields, msg):
    p = caffe_pb2.SolverParameter(base_lr=0.1, lr_policy="fixed")
    if fields.pop("net_param", False):
        p.net_param.CopyFrom(distcaffe.io.parse_net_text(NET))
    for k, v in fields.items():
        setattr(p, k, v) if not isinstance(v, list) else getattr(p, k).extend(v)
    with pytest.raises(CaffeError, match=msg):
        solvers.get_solver(p)


def test_flags_parse_caffe_spellings():
    flags = [F.Flag("solver"), F.Flag("iterations", int, 50), F.Flag("verbose", bool, False), F.GPU]
    v = F.parse("x", ["-solver", "s.prototxt", "--iterations=7", "-verbose", "--gpu", "0,1"], flags)
    assert v == {"solver": "s.prototxt", "iterations": 7, "verbose": True, "gpu": "0,1"}
    assert F.parse("x", ["-noverbose", "-solver=a=b"], flags)["solver"] == "a=b"
    for argv, msg in ((["-iterations", "many"], "expects int"), (["-solver"], "needs a value"),
                      (["stray"], "unexpected argument"), (["-bogus=1"], "unknown flag '-bogus'"),
                      (["-verbose=maybe"], "expects true or false")):
        with pytest.raises(CaffeError, match=msg):
            F.parse("x", argv, flags)
    assert F.parse_gpus("x", "0,2") == [0, 2]
    with pytest.raises(CaffeError, match="device ids"):
        F.parse_gpus("x", "zero")
