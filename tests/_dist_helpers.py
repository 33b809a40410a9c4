"""Shared pieces of the distributed tests: a tiny real LMDB, a two-layer classifier net and its solver, and a
runner for real `mpiexec -n N` jobs, and `tool`/`need_module`, which every test that runs mpiexec, ray or an
optional library uses: missing, they skip locally and FAIL under CI=true (only GPU tests may skip there).
Run as a script it is one rank: `python tests/_dist_helpers.py SOLVER [k=v]`."""
import importlib
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NET = """name: "tiny"
reduce_buckets: {buckets}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  transform_param {{ scale: 0.00390625 }} data_param {{ source: "{lmdb}" batch_size: {batch} backend: LMDB }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param {{ num_output: 6 weight_filler {{ type: "gaussian" std: 0.3 }}
                        bias_filler {{ type: "constant" value: 0.1 }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 0.3 }}
                        bias_filler {{ type: "constant" value: 0.0 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
"""
SOLVER = """net: "{net}"
base_lr: 0.5
momentum: 0.9
weight_decay: 0.001
lr_policy: "fixed"
max_iter: {max_iter}
display: 1
random_seed: 7
snapshot: {snapshot}
snapshot_prefix: "{prefix}"
"""


def missing(reason):
    """A test's tool or library is absent: a failure under CI=true, a skip (with the reason) elsewhere."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("%s (CI=true: a missing tool fails the test instead of skipping it)" % reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def tool(name, extra="mpi"):
    """Path of the command `name`, looked up next to the running interpreter first (an unactivated venv), then
    on PATH; missing() when absent."""
    path = shutil.which(name, path=os.pathsep.join((os.path.dirname(sys.executable), os.environ.get("PATH", ""))))
    if path is None:
        missing("%s not found next to %s or on PATH (pip install 'distcaffe[%s]')" % (name, sys.executable, extra))
    return path


def need_module(name, extra):
    """The imported module `name`; missing() when it cannot be imported."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        missing("%s is not importable (%s): pip install 'distcaffe[%s]'" % (name, e, extra))


def make_lmdb(path, n=96, seed=0):
    """n records of 1x4x4 uint8 images with labels 0..2 that depend on the pixels (learnable)."""
    from distcaffe.data import LMDBWriter, array_to_datum
    rng = np.random.default_rng(seed)
    with LMDBWriter(str(path)) as w:
        for i in range(n):
            label = i % 3
            img = rng.integers(0, 80, (1, 4, 4)) + 60 * label
            w.put("%08d" % i, array_to_datum(img.astype(np.uint8), label).SerializeToString())
    return path


def make_job(tmp, batch, max_iter=10, buckets=6, snapshot=0, lmdb=None, name="run"):
    """Write net + solver prototxt under tmp/name (sharing one LMDB); returns the solver path."""
    tmp = pathlib.Path(tmp)
    lmdb = lmdb or tmp / "records_lmdb"
    if not lmdb.exists():
        make_lmdb(lmdb)
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "net.prototxt").write_text(NET.format(lmdb=lmdb, batch=batch, buckets=buckets))
    solver = d / "solver.prototxt"
    solver.write_text(SOLVER.format(net=d / "net.prototxt", max_iter=max_iter, snapshot=snapshot,
                                    prefix=d / "snap"))
    return solver


def mpiexec(n, args, env=None, timeout=240, extra=()):
    """Run `mpiexec -n n python args...` from the repo root; returns the CompletedProcess."""
    cmd = [tool("mpiexec"), *extra, "-n", str(n), sys.executable, *map(str, args)]
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run(cmd, cwd=str(ROOT), env=full_env, capture_output=True, text=True, timeout=timeout)


def weights(path):
    """{layer: [arrays]} of a .caffemodel."""
    from distcaffe.io import blobproto_to_array, read_net_binary
    return {l.name: [blobproto_to_array(b) for b in l.blobs] for l in read_net_binary(str(path)).layer if l.blobs}


def single_process(solver, resume=None):
    """Train in this process (world size 1): the reference trajectory."""
    from distcaffe import backend
    from distcaffe.solvers import get_solver
    backend.set_mode_cpu()
    s = get_solver(str(solver))
    s.solve(resume_file=resume)
    return s


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from distcaffe.engine.worker import train_distributed
    opts = dict(a.split("=", 1) for a in sys.argv[2:])
    sys.exit(train_distributed(sys.argv[1], opts))


def kill_rank1_when_training(proc, pid_pattern, progress, start_timeout, exit_timeout, sig=signal.SIGKILL):
    """Read a 2-rank job's output until `pid_pattern` (two pid groups) and the `progress` line appear, send `sig`
    (SIGKILL) to rank 1, and wait for the job to end; returns (returncode, output, seconds to exit, (pid0, pid1))."""
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    pids, deadline = None, time.time() + start_timeout
    while time.time() < deadline and not (pids and any(progress in ln for ln in lines)):
        for ln in list(lines):
            m = re.search(pid_pattern, ln)
            if m:
                pids = int(m.group(1)), int(m.group(2))
        time.sleep(0.1)
    assert pids, "".join(lines)[-3000:]
    os.kill(pids[1], sig)
    t0 = time.time()
    try:
        rc = proc.wait(timeout=exit_timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    elapsed = time.time() - t0
    reader.join(5)
    return rc, "".join(lines), elapsed, pids
