"""Solver trajectories against BVLC Caffe: loss, parameters after each of 6 updates, and the lr of each
iteration (../shared/golden/solvers, see its README)."""
import json
import os

import numpy as np
import pytest

import distcaffe
from distcaffe import solvers
from conftest import GOLDEN

CASES = sorted(os.listdir(GOLDEN / "solvers")) if (GOLDEN / "solvers").is_dir() else []


def close(a, r):
    r = np.asarray(r, np.float64)
    return np.abs(np.asarray(a, np.float64) - r) <= 1e-4 * np.abs(r) + 1e-5 * np.maximum(1, np.abs(r))


def sig6(x):
    return float("%.6g" % x)


@pytest.mark.parametrize("mode", ["cpu", "gpu"])
@pytest.mark.parametrize("case", CASES)
def test_golden_solver(golden, case, mode, monkeypatch, tmp_path):
    d = golden / "solvers" / case
    meta = json.loads((d / "meta.json").read_text())
    data = np.load(d / "data.npz")
    monkeypatch.chdir(tmp_path)  # nets resolve beside the solver file; nothing is written into the golden tree
    if mode == "gpu":
        if not distcaffe.backend.gpu_available():
            pytest.skip("no GPU")
        distcaffe.set_mode_gpu()
    else:
        distcaffe.set_mode_cpu()
    solver = solvers.get_solver(str(d / "solver.prototxt"))
    net = solver.net
    for name, blobs in net.params.items():
        for i, b in enumerate(blobs):
            b.data[...] = data["param__%s__%d__iter0" % (name, i)]
    solver.weights_changed()
    net.blobs["data"].data[...] = data["data"]
    net.blobs["label"].data[...] = data["label"]
    lrs = []
    for k in range(meta["iterations"]):
        solver.step(1)
        lrs.append(solver.rate)
        loss = float(net.blobs["loss"].data)
        assert close(loss, data["loss__iter%d" % k]), (case, k, loss, float(data["loss__iter%d" % k]))
        for name, blobs in net.params.items():
            for i, b in enumerate(blobs):
                ref = data["param__%s__%d__iter%d" % (name, i, k + 1)]
                ok = close(b.data, ref)
                assert ok.all(), (case, k + 1, name, i, np.abs(b.data - ref).max())
    assert [sig6(x) for x in lrs] == [sig6(x) for x in meta["lr_per_iter_from_caffe_log"]]
    distcaffe.set_mode_cpu()
