"""Read a training log (ours or BVLC Caffe's, with the regexes of Caffe's tools/extra/parse_log.py) or a
distcaffe metrics file (`*_metrics.csv`, `*_metrics.jsonl`) into train/test rows.

One departure from Caffe's parse_log.py, on purpose: the learning rate of `Iteration N, lr = X` belongs to
iteration N (Caffe's tool gives it to the next display, so lr curves came out one display late and
iteration 0 had none)."""
import csv
import json
import re

from distcaffe.errors import CaffeError, resolved

REGEX_ITERATION = re.compile(r"Iteration (\d+)")
REGEX_TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)")
REGEX_TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)")
REGEX_LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")
NAN = float("nan")


def _read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError as e:
        raise CaffeError("%s: cannot read (%s)%s" % (path, e.strerror, resolved(path))) from None


def parse_log(path):
    """Returns (train_rows, test_rows): lists of dicts with NumIters, LearningRate and each output; a metrics
    file (.csv / .jsonl) is read as such."""
    if str(path).endswith((".csv", ".jsonl")):
        return parse_metrics(path)
    train, test = [], []
    iteration, lr = -1, NAN
    for line in _read(path).splitlines():
        m = REGEX_ITERATION.search(line)
        if m:
            iteration = int(m.group(1))
        if iteration == -1:
            continue
        m = REGEX_LEARNING_RATE.search(line)
        if m:
            lr = float(m.group(1))
            for row in reversed(train):            # the display rows of this very iteration
                if row["NumIters"] != iteration:
                    break
                row["LearningRate"] = lr
        for regex, rows in ((REGEX_TRAIN_OUTPUT, train), (REGEX_TEST_OUTPUT, test)):
            m = regex.search(line)
            if m:
                if not rows or rows[-1]["NumIters"] != iteration or m.group(2) in rows[-1]:
                    rows.append({"NumIters": iteration, "LearningRate": lr})
                rows[-1][m.group(2)] = float(m.group(3))
    return train, test


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def parse_metrics(path):
    """(train_rows, test_rows) of a metrics file written by training (solvers/monitor.py)."""
    text = _read(path)
    try:
        records = ([json.loads(ln) for ln in text.splitlines() if ln.strip()] if str(path).endswith(".jsonl")
                   else list(csv.DictReader(text.splitlines())))
    except ValueError as e:
        raise CaffeError("%s: not a distcaffe metrics file (%s)" % (path, e)) from None
    train, test = [], []
    for rec in records:
        if not isinstance(rec, dict) or "kind" not in rec or "iteration" not in rec:
            raise CaffeError("%s: not a distcaffe metrics file (rows need 'kind' and 'iteration')" % path)
        lr = _number(rec.get("lr"))
        row = {"NumIters": int(float(rec["iteration"])), "LearningRate": NAN if lr is None else lr}
        values = ((k, _number(v)) for k, v in rec.items() if k not in ("kind", "iteration", "seconds", "lr", "img_per_s"))
        row.update({k: v for k, v in values if v is not None})
        (train if rec["kind"] == "train" else test).append(row)
    return train, test
