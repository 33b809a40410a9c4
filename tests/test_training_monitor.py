"""How training tells how it is going (`distcaffe train`, rank 0): Caffe 1.0's display line that Caffe's log
regexes read, a rate/ETA line they skip, the metrics CSV/JSON-lines beside the snapshots (kept consistent across
a resume), TensorBoard event files, and progress bars that put no `\\r` into files."""
import csv
import io
import json
import os
import re
import struct
import subprocess
import sys

import pytest

import _dist_helpers as h
from distcaffe.data.progress import ProgressBar
from distcaffe.launcher import parse_log as P

DISPLAY = re.compile(r"\] Iteration (\d+) \(([\d.e+-]+) iter/s, ([\d.e+-]+)s/(\d+) iters\), loss = ([\d.e+-]+)$")
NET = h.NET.replace(" include {{ phase: TRAIN }}", "") + \
    'layer {{ name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy" include {{ phase: TEST }} }}\n'


def job(tmp_path, max_iter=12):
    solver = h.make_job(tmp_path, batch=8, max_iter=max_iter, snapshot=6)
    net = solver.parent / "net.prototxt"
    net.write_text(NET.format(lmdb=tmp_path / "records_lmdb", batch=8, buckets=2))
    text = solver.read_text().replace("display: 1", "display: 3")
    text = text.replace('lr_policy: "fixed"', 'lr_policy: "step"\nstepsize: 6\ngamma: 0.5')
    solver.write_text(text + "test_iter: 2\ntest_interval: 6\n")
    return solver


def train(solver, *extra):
    r = subprocess.run([sys.executable, "-m", "distcaffe.launcher.cli", "train", "-solver", str(solver), *extra],
                       capture_output=True, text=True, timeout=180, cwd=str(solver.parent))
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stderr


@pytest.mark.slow
def test_display_rate_lines_and_metrics_files(tmp_path):
    h.need_module("tensorboardX", "tensorboard")
    solver = job(tmp_path)
    err = train(solver)
    lines = err.splitlines()
    shown = [DISPLAY.search(ln) for ln in lines if DISPLAY.search(ln)]
    assert [int(m.group(1)) for m in shown] == [0, 3, 6, 9] and all(m.group(4) == "3" for m in shown), err[-3000:]
    assert float(shown[1].group(2)) > 0
    rates = [ln for ln in lines if "img/s (global batch 8)" in ln and "ETA" in ln]
    assert len(rates) == 3, err[-3000:]
    for ln in rates:      # Caffe's parse_log.py / parse_log.sh must skip it
        assert not any(rx.search(ln) for rx in (P.REGEX_ITERATION, P.REGEX_LEARNING_RATE, P.REGEX_TRAIN_OUTPUT))
        assert ", loss = " not in ln
    log = tmp_path / "train.log"
    log.write_text(err)
    train_rows, test_rows = P.parse_log(str(log))
    assert [(r["NumIters"], r["LearningRate"]) for r in train_rows] == [(0, 0.5), (3, 0.5), (6, 0.25), (9, 0.25)]

    prefix = solver.parent / "snap"
    rows = list(csv.DictReader(open(str(prefix) + "_metrics.csv")))
    assert list(rows[0]) == ["kind", "iteration", "seconds", "lr", "loss", "img_per_s", "accuracy"]
    kinds = [(r["kind"], int(r["iteration"])) for r in rows]
    assert kinds == [("test0", 0), ("train", 0), ("train", 3), ("test0", 6), ("train", 6), ("train", 9), ("train", 12),
                     ("test0", 12)], kinds
    by_display = {int(m.group(1)): float(m.group(5)) for m in shown}
    for r in rows:
        if r["kind"] == "train" and int(r["iteration"]) in by_display:
            shown_loss = by_display[int(r["iteration"])]
            assert abs(float(r["loss"]) - shown_loss) < 1e-4 * max(1, shown_loss)
    assert float(rows[2]["img_per_s"]) > 0 and rows[1]["img_per_s"] == ""
    assert 0 <= float(rows[3]["accuracy"]) <= 1 and float(rows[4]["lr"]) == 0.25
    jsonl = [json.loads(ln) for ln in open(str(prefix) + "_metrics.jsonl")]
    assert [(j["kind"], j["iteration"]) for j in jsonl] == kinds
    assert P.parse_log(str(prefix) + "_metrics.jsonl")[0][1]["LearningRate"] == 0.5

    events = [os.path.join(d, f) for d, _, fs in os.walk(str(prefix) + "_tensorboard") for f in fs]
    assert len(events) == 1 and "tfevents" in events[0]
    tags = scalar_tags(events[0])
    assert {"train/loss", "train/lr", "train/img_per_s", "test0/accuracy", "test0/loss"} <= tags, tags

    # resume from iteration 6: the rows before 6 stay, the rest is written again, nothing twice
    train(solver, "-snapshot", str(prefix) + "_iter_6.solverstate")
    again = [(r["kind"], int(r["iteration"])) for r in csv.DictReader(open(str(prefix) + "_metrics.csv"))]
    assert again == kinds, again
    assert len(open(str(prefix) + "_metrics.jsonl").readlines()) == len(kinds)


def scalar_tags(path):
    """Scalar tags in a TensorBoard event file (TFRecord framing: length, crc, Event proto, crc)."""
    from tensorboardX.proto import event_pb2
    data, tags, pos = open(path, "rb").read(), set(), 0
    while pos < len(data):
        (n,) = struct.unpack("<Q", data[pos:pos + 8])
        event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
        tags.update(v.tag for v in event.summary.value)
        pos += 12 + n + 4
    return tags


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_off_a_terminal_is_one_summary_line():
    out = io.StringIO()
    bar = ProgressBar(50, "files", stream=out, desc="convert_imageset")
    for _ in range(50):
        bar.update()
    bar.finish()
    text = out.getvalue()
    assert "\r" not in text and text.count("\n") == 1 and text.startswith("convert_imageset: 50 files in "), text
    quiet = io.StringIO()
    ProgressBar(3, "batches", stream=quiet, summary=False).finish()
    assert quiet.getvalue() == ""


def test_progress_bar_on_a_terminal_shows_rate_and_eta():
    out = _Tty()
    bar = ProgressBar(4, "records", stream=out)
    for _ in range(4):
        bar.update()
    bar.finish()
    text = out.getvalue()
    assert "\r" in text and "4/4" in text and "records/s" in text and "<" in text, text   # tqdm's elapsed<ETA
