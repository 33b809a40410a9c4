"""Damaged files: truncated and bit-flipped LMDBs, .caffemodel, .solverstate and .binaryproto files either load
or stop with one CaffeError line naming the file -- never a traceback or a signal; a flipped layer name in a
.caffemodel is reported instead of silently dropping that layer's weights."""
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _dist_helpers as h  # noqa: E402

from distcaffe.errors import CaffeError  # noqa: E402

pytestmark = pytest.mark.slow
FLIPS = 12
CUTS = (0.0, 0.01, 0.3, 0.5, 0.9, 0.999)


def variants(data, seed):
    """(label, damaged bytes): truncations at CUTS of the length, then FLIPS single-bit flips (seeded)."""
    rng = np.random.default_rng(seed)
    for cut in CUTS:
        yield "cut %.3f" % cut, data[:int(len(data) * cut)]
    for _ in range(FLIPS):
        pos, bit = int(rng.integers(len(data))), int(rng.integers(8))
        flipped = bytearray(data)
        flipped[pos] ^= 1 << bit
        yield "flip byte %d bit %d" % (pos, bit), bytes(flipped)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """A real 2-iteration snapshot of the tiny net (caffemodel + solverstate) and its solver."""
    tmp = tmp_path_factory.mktemp("snap")
    solver = h.make_job(tmp, batch=4, max_iter=2, snapshot=2)
    h.single_process(solver)
    return solver, solver.parent / "snap_iter_2.caffemodel", solver.parent / "snap_iter_2.solverstate"


def _outcomes(kind, original, load, tmp_path, seed):
    """Run `load(path)` on every damaged variant; returns the counts of loads and clean errors."""
    counts = {"loaded": 0, "error": 0}
    for label, data in variants(original.read_bytes(), seed):
        path = tmp_path / original.name
        path.write_bytes(data)
        try:
            load(path)
            counts["loaded"] += 1
        except CaffeError as e:
            line = str(e)
            assert "\n" not in line and str(path) in line, (kind, label, line)
            counts["error"] += 1
    return counts


def test_damaged_caffemodel(snapshot, tmp_path):
    from distcaffe import Net
    solver, model, _ = snapshot
    net = Net(str(solver.parent / "net.prototxt"), phase=0)
    counts = _outcomes("caffemodel", model, net.copy_from, tmp_path, 1)
    assert counts["error"] >= len(CUTS) - 1, counts


def test_damaged_solverstate(snapshot, tmp_path):
    from distcaffe.solvers import get_solver
    solver, model, state = snapshot
    shutil.copy(model, tmp_path)
    s = get_solver(str(solver))
    counts = _outcomes("solverstate", state, s.restore, tmp_path, 2)
    assert counts["error"] >= len(CUTS) - 1, counts


def test_damaged_binaryproto(tmp_path):
    from distcaffe.io import array_to_blobproto, blobproto_to_array, read_blobproto, write_blobproto
    original = tmp_path / "orig" / "mean.binaryproto"
    original.parent.mkdir()
    write_blobproto(array_to_blobproto(np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4)), original)
    counts = _outcomes("binaryproto", original, lambda p: blobproto_to_array(read_blobproto(p), where=p),
                       tmp_path, 3)
    assert counts["error"] >= len(CUTS) - 1, counts


def test_damaged_lmdb_never_kills_the_reader(tmp_path):
    """Each damaged copy is read whole by `distcaffe compute_image_mean` in its own process."""
    original = h.make_lmdb(tmp_path / "orig_lmdb", n=40)
    data = (original / "data.mdb").read_bytes()
    outcomes = {"loaded": 0, "error": 0}
    for i, (label, damaged) in enumerate(variants(data, 4)):
        db = tmp_path / ("v%d_lmdb" % i)
        db.mkdir()
        (db / "data.mdb").write_bytes(damaged)
        r = subprocess.run([sys.executable, "-m", "distcaffe.launcher.cli", "compute_image_mean", str(db),
                            str(tmp_path / "mean.binaryproto")], cwd=str(h.ROOT), capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(h.ROOT)), timeout=120)
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("distcaffe: error:")]
        assert r.returncode in (0, 2) and "Traceback" not in r.stderr, (label, r.returncode, r.stderr[-1500:])
        if r.returncode == 2:
            assert len(errors) == 1 and str(db) in errors[0], (label, r.stderr[-1500:])
        outcomes["loaded" if r.returncode == 0 else "error"] += 1
    assert outcomes["error"] >= len(CUTS) - 1, outcomes


def test_flipped_layer_name_in_caffemodel_is_reported(snapshot, tmp_path, caplog):
    from distcaffe import Net
    from distcaffe.errors import NetError
    solver, model, _ = snapshot
    data = model.read_bytes()
    pos = data.index(b"ip2")
    damaged = tmp_path / "damaged.caffemodel"
    damaged.write_bytes(data[:pos + 2] + b"3" + data[pos + 3:])    # layer ip2 -> ip3
    net = Net(str(solver.parent / "net.prototxt"), phase=0)
    with caplog.at_level(logging.WARNING, logger="distcaffe"):
        net.copy_from(str(damaged))
    assert any("match no layer" in r.getMessage() and "ip3" in r.getMessage() and "untrained: ip2" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    with pytest.raises(NetError, match="ip3.*left untrained: ip2"):
        net.copy_from(str(damaged), strict=True)
