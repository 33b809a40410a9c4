"""`distcaffe train|time -lms N -lms_frac F -lms_budget MiB` as subprocesses: the same losses and test scores as
without LMS, IBM-style log lines (what stays resident, what is managed, the peak device memory), and one-line
errors for a budget below a layer's working set and for a bad -lms_frac."""
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NET = """name: "small"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 8 dim: 3 dim: 24 dim: 24 } shape { dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "uniform" min: 0 max: 9.99 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 32 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1" inner_product_param { num_output: 64
  weight_filler { type: "xavier" } } }
layer { name: "drop1" type: "Dropout" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 10
  weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

SOLVER = """net: "net.prototxt"
test_iter: 2
test_interval: 3
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "fixed"
display: 1
max_iter: 6
random_seed: 7
snapshot_after_train: false
"""


def run_cli(args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "distcaffe.launcher.cli"] + args, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _setup(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)


def _numbers(log):
    return re.findall(r"(?:Iteration \d+.*, loss = |Test net output #\d+: \w+ = )([-\d.e+]+)", log)


def test_train_with_lms_logs_and_matches(tmp_path):
    _setup(tmp_path)
    plain = run_cli(["train", "-solver", "solver.prototxt"], tmp_path)
    assert plain.returncode == 0, plain.stderr[-2000:]
    lms = run_cli(["train", "-solver", "solver.prototxt", "-lms", "1", "-lms_budget", "6"], tmp_path)
    assert lms.returncode == 0, lms.stderr[-2000:]
    assert _numbers(lms.stderr) == _numbers(plain.stderr) and len(_numbers(plain.stderr)) > 8
    assert re.search(r"Large Model Support: \d+ arrays \([\d.]+ MB\) kept resident, \d+ arrays \([\d.]+ MB\) "
                     r"managed; largest working set", lms.stderr)
    peak = re.search(r"Large Model Support: peak device memory ([\d.]+) MB of the ([\d.]+) MB budget; (\d+) copies in",
                     lms.stderr)
    assert peak and float(peak.group(1)) <= float(peak.group(2)) and int(peak.group(3)) > 0


def test_time_with_lms_and_a_budget_too_small(tmp_path):
    _setup(tmp_path)
    ok = run_cli(["time", "-model", "net.prototxt", "-iterations", "2", "-lms", "1", "-lms_budget", "6"], tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "Average Forward-Backward" in ok.stderr and "peak device memory" in ok.stderr
    small = run_cli(["time", "-model", "net.prototxt", "-lms", "1", "-lms_budget", "1"], tmp_path)
    assert small.returncode == 2
    line = small.stderr.strip().splitlines()[-1]
    assert re.match(r"distcaffe: error: Large Model Support: layer '\w+' \(\w+\) (forward|backward) needs \d+ bytes "
                    r"on the device .*but the budget is 1048576 bytes", line), line
    assert "Traceback" not in small.stderr
    frac = run_cli(["train", "-solver", "solver.prototxt", "-lms", "1", "-lms_frac", "2"], tmp_path)
    assert frac.returncode == 2 and frac.stderr.strip().splitlines()[-1] == (
        "distcaffe: error: train: -lms_frac must be between 0 and 1, got 2")
    cpu = run_cli(["time", "-model", "net.prototxt", "-lms", "1"], tmp_path)
    assert cpu.returncode == 2 and "needs an explicit budget (-lms_budget MiB)" in cpu.stderr


@pytest.mark.slow
def test_lms_speed_benchmark_dry_run(zoo, tmp_path):
    """benchmarks/lms_speed.py end to end on the CPU at toy size, so the GPU run cannot fail on a typo."""
    out = tmp_path / "lms.json"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "lms_speed.py"), "--cpu", "--net",
                        str(zoo / "BVLC__caffe/examples/cifar10/cifar10_quick.prototxt"), "--batch", "2",
                        "--iters", "3", "--factor", "1", "--json", str(out)],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["fit_img_s"] > 0 and summary["lms_prefetch_img_s"] > 0 and summary["lms_noprefetch_img_s"] > 0
    on = summary["runs"][2]
    assert on["peak"] <= on["budget"] and on["copies_per_iteration"] == on["predicted_per_iteration"]
