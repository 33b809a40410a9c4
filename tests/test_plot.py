"""`distcaffe plot`: parses BVLC Caffe's log format and writes a PNG with loss, accuracy and lr."""
import subprocess
import sys

import pytest

from distcaffe.launcher.parse_log import parse_log

BVLC_LOG = """I1121 10:00:00.000000  1234 solver.cpp:337] Iteration 0, Testing net (#0)
I1121 10:00:01.000000  1234 solver.cpp:404]     Test net output #0: accuracy = 0.0912
I1121 10:00:01.000000  1234 solver.cpp:404]     Test net output #1: loss = 2.3057 (* 1 = 2.3057 loss)
I1121 10:00:01.100000  1234 solver.cpp:228] Iteration 0, loss = 2.29
I1121 10:00:01.100000  1234 solver.cpp:244]     Train net output #0: loss = 2.29 (* 1 = 2.29 loss)
I1121 10:00:01.100000  1234 sgd_solver.cpp:106] Iteration 0, lr = 0.01
I1121 10:00:02.100000  1234 solver.cpp:228] Iteration 100, loss = 0.21
I1121 10:00:02.100000  1234 solver.cpp:244]     Train net output #0: loss = 0.21 (* 1 = 0.21 loss)
I1121 10:00:02.100000  1234 sgd_solver.cpp:106] Iteration 100, lr = 0.00992565
I1121 10:00:03.000000  1234 solver.cpp:337] Iteration 200, Testing net (#0)
I1121 10:00:03.500000  1234 solver.cpp:404]     Test net output #0: accuracy = 0.9712
I1121 10:00:03.500000  1234 solver.cpp:404]     Test net output #1: loss = 0.0911 (* 1 = 0.0911 loss)
I1121 10:00:03.600000  1234 solver.cpp:228] Iteration 200, loss = 0.11
I1121 10:00:03.600000  1234 solver.cpp:244]     Train net output #0: loss = 0.11 (* 1 = 0.11 loss)
I1121 10:00:03.600000  1234 sgd_solver.cpp:106] Iteration 200, lr = 0.00985258
"""


def test_parse_bvlc_log(tmp_path):
    log = tmp_path / "caffe.log"
    log.write_text(BVLC_LOG)
    train, test = parse_log(str(log))
    assert [r["NumIters"] for r in train] == [0, 100, 200]
    assert [r["loss"] for r in train] == [2.29, 0.21, 0.11]
    assert [r["NumIters"] for r in test] == [0, 200]
    assert test[1]["accuracy"] == 0.9712 and test[1]["loss"] == 0.0911
    # the lr line follows the outputs; it belongs to its own iteration (Caffe's parse_log gives it to the next)
    assert [r["LearningRate"] for r in train] == [0.01, 0.00992565, 0.00985258]


def test_layout_separates_loss_accuracy_and_lr(tmp_path):
    from distcaffe.launcher.cmd_plot import layout
    log = tmp_path / "caffe.log"
    log.write_text(BVLC_LOG)
    panels, lrs = layout(*parse_log(str(log)))
    assert [(label, [(ph, k) for ph, k, _ in group]) for label, group in panels] == [
        ("loss", [("train", "loss"), ("test", "loss")]), ("accuracy / other outputs", [("test", "accuracy")])]
    assert lrs == [(0, 0.01), (100, 0.00992565), (200, 0.00985258)]      # iteration 0 kept


def test_metrics_files_parse_like_the_log(tmp_path):
    csv = tmp_path / "m_metrics.csv"
    csv.write_text("kind,iteration,seconds,lr,loss,img_per_s,accuracy\ntest0,0,1.0,,2.3,,0.09\n"
                   "train,0,1.1,0.01,2.29,,\ntrain,100,2.1,0.0099,0.21,1500,\n")
    jsonl = tmp_path / "m_metrics.jsonl"
    jsonl.write_text('{"kind": "test0", "iteration": 0, "seconds": 1.0, "loss": 2.3, "accuracy": 0.09}\n'
                     '{"kind": "train", "iteration": 0, "seconds": 1.1, "lr": 0.01, "loss": 2.29}\n'
                     '{"kind": "train", "iteration": 100, "lr": 0.0099, "loss": 0.21, "img_per_s": 1500}\n')
    for path in (csv, jsonl):
        train, test = parse_log(str(path))
        assert [(r["NumIters"], r["LearningRate"], r["loss"]) for r in train] == [(0, 0.01, 2.29), (100, 0.0099, 0.21)]
        assert test[0]["accuracy"] == 0.09 and test[0]["loss"] == 2.3 and "img_per_s" not in train[1]
    bad = tmp_path / "x_metrics.csv"
    bad.write_text("a,b\n1,2\n")
    from distcaffe.errors import CaffeError
    with pytest.raises(CaffeError, match="not a distcaffe metrics file"):
        parse_log(str(bad))


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    log = tmp_path / "caffe.log"
    log.write_text(BVLC_LOG)
    out = tmp_path / "plot.png"
    r = subprocess.run([sys.executable, "-m", "distcaffe.launcher.cli", "plot", str(log), str(out)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_rejects_a_log_without_outputs(tmp_path):
    log = tmp_path / "empty.log"
    log.write_text("nothing here\n")
    r = subprocess.run([sys.executable, "-m", "distcaffe.launcher.cli", "plot", str(log), str(tmp_path / "x.png")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no 'Train net output'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.png").exists()
