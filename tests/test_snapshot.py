"""Snapshots and restore: Caffe's own LeNet snapshot continues training, a stopped-and-restored run is
bit-identical to an uninterrupted one (binary and HDF5), bad restore inputs fail clearly."""
import os
import shutil

import numpy as np
import pytest

import distcaffe
from distcaffe import backend, caffe_pb2, solvers
from distcaffe.errors import CaffeError, SolverError
from distcaffe.io import read_net_binary, read_solver_param, read_solverstate, write_text
from conftest import GOLDEN

LENET = GOLDEN / "models" / "lenet_snapshot"


def close(a, r):
    r = np.asarray(r, np.float64)
    return (np.abs(np.asarray(a, np.float64) - r) <= 1e-4 * np.abs(r) + 1e-5 * np.maximum(1, np.abs(r))).all()


def lenet_solver(tmp_path, **fields):
    """LeNet solver from the golden case, written into tmp_path (snapshots land there)."""
    distcaffe.set_mode_cpu()
    shutil.copy(LENET / "net.prototxt", tmp_path / "net.prototxt")
    param = read_solver_param(str(LENET / "solver.prototxt"))
    for key, value in fields.items():
        setattr(param, key, value)
    write_text(param, str(tmp_path / "solver.prototxt"))
    s = solvers.get_solver(str(tmp_path / "solver.prototxt"))
    data = np.load(LENET / "data.npz")
    for name, blobs in s.net.params.items():
        for i, b in enumerate(blobs):
            b.data[...] = data["param__%s__%d__iter0" % (name, i)]
    s.weights_changed()
    s.net.blobs["data"].data[...] = data["data"]
    s.net.blobs["label"].data[...] = data["label"]
    return s, data


def params(s):
    return {(n, i): b.data.copy() for n, bl in s.net.params.items() for i, b in enumerate(bl)}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    if not LENET.is_dir():
        pytest.skip("golden lenet_snapshot missing")
    monkeypatch.chdir(tmp_path)


def test_lenet_matches_caffe_and_writes_caffe_files(tmp_path):
    s, data = lenet_solver(tmp_path)
    s.solve()
    assert s.iter == 3
    for (n, i), arr in params(s).items():
        assert close(arr, data["param__%s__%d__iter3" % (n, i)]), (n, i)
    state = read_solverstate(str(tmp_path / "lenet_iter_3.solverstate"))
    ref = read_solverstate(str(LENET / "lenet_iter_3.solverstate"))
    assert state.iter == ref.iter == 3 and state.learned_net == "lenet_iter_3.caffemodel"
    assert [tuple(h.shape.dim) for h in state.history] == [tuple(h.shape.dim) for h in ref.history]
    for h, r in zip(state.history, ref.history):
        assert close(np.array(h.data), np.array(r.data))
    names = [l.name for l in read_net_binary(str(tmp_path / "lenet_iter_3.caffemodel")).layer]
    assert "conv1" in names and "ip2" in names
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".rng")]   # the resume state is inside the solverstate
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_restore_caffe_solverstate_continues(tmp_path):
    s, data = lenet_solver(tmp_path, max_iter=5)
    s.restore(str(LENET / "lenet_iter_3.solverstate"))   # learned_net is found beside the solverstate
    assert s.iter == 3
    for (n, i), arr in params(s).items():
        assert close(arr, data["param__%s__%d__iter3" % (n, i)])
    s.step(2)
    ref, _ = lenet_solver(tmp_path, max_iter=5)
    ref.step(5)
    assert s.iter == 5
    for key, arr in params(ref).items():
        assert close(params(s)[key], arr), key


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
@pytest.mark.parametrize("solver_type", ["SGD", "Adam"])
def test_stop_and_restore_is_bit_identical(tmp_path, fmt, solver_type):
    extra = {"max_iter": 6, "snapshot": 0, "snapshot_format": getattr(caffe_pb2.SolverParameter, fmt),
             "type": solver_type}
    full, _ = lenet_solver(tmp_path, **extra)
    backend.set_random_seed(3)
    full.step(6)
    first, _ = lenet_solver(tmp_path, **extra)
    backend.set_random_seed(3)
    first.step(2)
    first.snapshot()
    expected_rng = backend.rng().bit_generator.state
    backend.rng().random(5)   # disturb the RNG: restore must bring it back
    second, _ = lenet_solver(tmp_path, **extra)
    suffix = ".solverstate.h5" if fmt == "HDF5" else ".solverstate"
    second.restore(str(tmp_path / ("lenet_iter_2" + suffix)))
    assert second.iter == 2
    assert backend.rng().bit_generator.state == expected_rng
    second.step(4)
    for key, arr in params(full).items():
        assert np.array_equal(params(second)[key], arr), key


def test_restore_from_caffemodel_is_a_clear_error(tmp_path):
    s, _ = lenet_solver(tmp_path)
    with pytest.raises(SolverError, match=r"lenet_iter_3\.caffemodel.*weights file.*solverstate"):
        s.restore(str(LENET / "lenet_iter_3.caffemodel"))


def test_restore_history_mismatch(tmp_path):
    s, _ = lenet_solver(tmp_path, type="Adam")
    with pytest.raises(SolverError, match="incorrect length of history blobs"):
        s.restore(str(LENET / "lenet_iter_3.solverstate"))


def test_missing_solverstate(tmp_path):
    s, _ = lenet_solver(tmp_path)
    with pytest.raises(CaffeError, match="nope.solverstate"):
        s.restore(str(tmp_path / "nope.solverstate"))


def test_snapshot_diff_and_old_format(tmp_path):
    s, _ = lenet_solver(tmp_path, snapshot_diff=True, store_blobs_in_old_format=True, max_iter=1,
                        snapshot=1)
    s.solve()
    net = read_net_binary(str(tmp_path / "lenet_iter_1.caffemodel"))
    conv = [l for l in net.layer if l.name == "conv1"][0]
    assert len(conv.blobs[0].diff) == conv.blobs[0].num * conv.blobs[0].channels * 25
    assert not conv.blobs[0].HasField("shape")
