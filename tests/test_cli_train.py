"""`distcaffe train|test|time|device_query` as subprocesses: a LeNet trains on real MNIST digits (LMDB) and its
log parses with Caffe's tools/extra/parse_log.py regexes; bad input gives one line and exit code 2; SIGTERM
leaves a loadable snapshot."""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Copied from BVLC caffe tools/extra/parse_log.py (parse_log()).
regex_iteration = re.compile(r'Iteration (\d+)')
regex_train_output = re.compile(r'Train net output #(\d+): (\S+) = ([\.\deE+-]+)')
regex_test_output = re.compile(r'Test net output #(\d+): (\S+) = ([\.\deE+-]+)')
regex_learning_rate = re.compile(r'lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)')
# Older parse_log.py / parse_log.sh forms.
re_train_loss = re.compile(r'Iteration \d+(?: \([\d.e+-]+ iter/s, [\d.e+-]+s/\d+ iters\))?, loss = ([\.\d]+)')  # Caffe 1.0's display line
# tools/extra/extract_seconds.py reads the glog time stamp.
re_glog_time = re.compile(r'^[IWEF](\d{4}) (\d{2}):(\d{2}):(\d{2})\.(\d{6})')

LENET = """name: "LeNet"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.00390625 } data_param { source: "%(train)s" batch_size: 32 } }
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { scale: 0.00390625 } data_param { source: "%(test)s" batch_size: 50 } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 8 kernel_size: 5 stride: 1 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1" param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 64 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

SOLVER = """net: "lenet.prototxt"
test_iter: 4
test_interval: %(test_interval)d
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "inv"
gamma: 0.0001
power: 0.75
display: 5
max_iter: %(max_iter)d
snapshot: %(snapshot)d
snapshot_prefix: "snap/lenet"
solver_mode: CPU
random_seed: 1
"""


def run(args, cwd, **kw):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "distcaffe.launcher.cli"] + args, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=kw.pop("timeout", 240), **kw)


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    d = tmp_path_factory.mktemp("mnist")
    r = run(["data", "mnist-sample", str(d)], cwd=ROOT)
    if r.returncode != 0 or not (d / "mnist_train_lmdb").is_dir():
        pytest.skip("mnist-sample data tool unavailable: %s" % r.stderr[-300:])
    return d


def workdir(tmp_path, mnist, max_iter=30, snapshot=0, test_interval=15):
    (tmp_path / "snap").mkdir(exist_ok=True)
    (tmp_path / "lenet.prototxt").write_text(LENET % {"train": mnist / "mnist_train_lmdb",
                                                      "test": mnist / "mnist_test_lmdb"})
    (tmp_path / "solver.prototxt").write_text(SOLVER % {"max_iter": max_iter, "snapshot": snapshot,
                                                        "test_interval": test_interval})
    return tmp_path


@pytest.mark.slow
def test_lenet_trains_and_log_parses(tmp_path, mnist):
    wd = workdir(tmp_path, mnist)
    r = run(["train", "--solver=solver.prototxt"], cwd=wd)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stderr.splitlines()
    iters, train_loss, test_acc, lrs = [], [], [], []
    for line in lines:
        m = regex_iteration.search(line)
        if m:
            iters.append(int(m.group(1)))
        m = regex_train_output.search(line)
        if m:
            train_loss.append((m.group(2), float(m.group(3))))
        m = regex_test_output.search(line)
        if m and m.group(2) == "accuracy":
            test_acc.append(float(m.group(3)))
        m = regex_learning_rate.search(line)
        if m:
            lrs.append(float(m.group(1)))
        if m or "Iteration" in line:
            assert re_glog_time.match(line), line
    assert [v for n, v in train_loss if n == "loss"], r.stderr[-2000:]
    losses = [float(m.group(1)) for m in map(re_train_loss.search, lines) if m]
    assert len(losses) == 7 and losses[-1] < losses[0], losses          # iterations 0,5,..,25 + final 30
    assert len(test_acc) == 3 and test_acc[-1] > 0.3, test_acc          # tests at 0, 15, 30
    assert len(lrs) == 6 and lrs[0] == 0.01 and lrs[-1] < lrs[0]
    assert max(iters) == 30
    assert any("Solver performance on device CPU:" in l and "img/sec" in l for l in lines)
    assert any(re.search(r"Optimization Done in \d+s", l) for l in lines)
    assert (wd / "snap" / "lenet_iter_30.caffemodel").exists()

    # score the result with `test`, and benchmark with `time`
    r = run(["test", "-model", "lenet.prototxt", "-weights", "snap/lenet_iter_30.caffemodel", "-iterations", "2"],
            cwd=wd)
    assert r.returncode == 0, r.stderr[-2000:]
    assert re.search(r"\] accuracy = [\d.]+", r.stderr) and re.search(r"\] loss = [\d.]+ \(\* 1 = [\d.]+ loss\)",
                                                                      r.stderr)
    r = run(["time", "--model=lenet.prototxt", "--iterations=2"], cwd=wd)
    assert r.returncode == 0, r.stderr[-2000:]
    for pat in (r"conv1\tforward: [\d.e+-]+ ms\.", r"conv1\tbackward: [\d.e+-]+ ms\.",
                r"Average Forward pass: [\d.e+-]+ ms\.", r"Average Backward pass: [\d.e+-]+ ms\.",
                r"Average Forward-Backward: [\d.e+-]+ ms\.", r"Total Time: [\d.e+-]+ ms\.", r"Benchmark ends"):
        assert re.search(pat, r.stderr), pat


@pytest.mark.slow
def test_finetune_resume_and_sigterm(tmp_path, mnist):
    wd = workdir(tmp_path, mnist, max_iter=4, snapshot=2, test_interval=100)
    r = run(["train", "-solver", "solver.prototxt"], cwd=wd)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run(["train", "-solver", "solver.prototxt", "-weights", "snap/lenet_iter_4.caffemodel"], cwd=wd)
    assert r.returncode == 0 and "Finetuning from snap/lenet_iter_4.caffemodel" in r.stderr
    r = run(["train", "-solver", "solver.prototxt", "-snapshot", "snap/lenet_iter_2.solverstate"], cwd=wd)
    assert r.returncode == 0 and "Restoring previous solver status from snap/lenet_iter_2.solverstate" in r.stderr
    assert "Iteration 0" not in r.stderr and "Snapshotting to binary proto file snap/lenet_iter_4.caffemodel" \
        in r.stderr

    # SIGTERM mid-run: a snapshot at the current iteration, a clean exit, files that load
    (tmp_path / "term").mkdir()
    wd2 = workdir(tmp_path / "term", mnist, max_iter=100000, snapshot=0, test_interval=100000)
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "distcaffe.launcher.cli", "train", "-solver", "solver.prototxt"], cwd=wd2,
                            env=env, stderr=subprocess.PIPE, text=True)
    seen = []
    deadline = time.time() + 120
    for line in proc.stderr:
        seen.append(line)
        if "Iteration 5, lr" in line:
            proc.send_signal(signal.SIGTERM)
            break
        assert time.time() < deadline
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, "".join(seen)[-1000:] + rest[-2000:]
    snaps = sorted(p.name for p in (wd2 / "snap").iterdir())
    models = [s for s in snaps if s.endswith(".caffemodel")]
    assert len(models) == 1 and "Optimization stopped early." in rest, (snaps, rest[-1000:])
    import distcaffe
    from distcaffe import solvers
    distcaffe.set_mode_cpu()
    s = solvers.get_solver(str(wd2 / "solver.prototxt"))
    s.restore(str(wd2 / "snap" / models[0].replace(".caffemodel", ".solverstate")))
    assert s.iter == int(re.search(r"_iter_(\d+)", models[0]).group(1)) >= 6
    assert np.isfinite(s.net.params["conv1"][0].data).all()


BAD_NET_SOLVER = 'net: "missing.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 1\n'


@pytest.mark.parametrize("name,solver,extra,pattern", [
    ("missing_net", BAD_NET_SOLVER, [], r"missing\.prototxt: No such file"),
    ("test_iter_no_test_net", 'train_net: "lenet.prototxt"\ntest_iter: 5\ntest_interval: 5\nbase_lr: 0.1\n'
     'lr_policy: "fixed"\n', [], r"test_iter must be specified for each test network"),
    ("unknown_type", 'net: "lenet.prototxt"\ntype: "Momentum"\nbase_lr: 0.1\nlr_policy: "fixed"\n', [],
     r"unknown solver type 'Momentum' \(known types: SGD, Nesterov"),
    ("restore_caffemodel", 'net: "lenet.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 1\n',
     ["-snapshot", "w.caffemodel"], r"w\.caffemodel: is a weights file"),
    ("bad_flag", BAD_NET_SOLVER, ["-bogus", "1"], r"unknown flag '-bogus'"),
    ("gpu_without_device", BAD_NET_SOLVER.replace("missing", "lenet"), ["-gpu", "0"], r"-gpu 0 asked for, but no CUDA"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, name, solver, extra, pattern):
    from distcaffe import backend
    if name == "gpu_without_device" and backend.gpu_available():
        pytest.skip("a GPU is present")
    (tmp_path / "lenet.prototxt").write_text(
        'name: "n"\nlayer { name: "d" type: "Input" top: "d" input_param { shape { dim: 2 dim: 3 } } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "d" top: "ip" inner_product_param { num_output: 2 } }\n')
    (tmp_path / "w.caffemodel").write_bytes(b"")
    (tmp_path / "solver.prototxt").write_text(solver)
    r = run(["train", "-solver", "solver.prototxt"] + extra, cwd=tmp_path, timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = [l for l in r.stderr.splitlines() if l.startswith("distcaffe: error:")]
    assert len(err) == 1 and re.search(pattern, err[0]), r.stderr[-1500:]
    assert "Traceback" not in r.stderr
