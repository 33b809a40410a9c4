"""Read a Caffe-format training log (ours or BVLC Caffe's) into train/test rows, with the regexes of
Caffe's tools/extra/parse_log.py, so both logs parse the same way."""
import re

from distcaffe.errors import CaffeError, resolved

REGEX_ITERATION = re.compile(r"Iteration (\d+)")
REGEX_TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)")
REGEX_TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)")
REGEX_LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")


def parse_log(path):
    """Returns (train_rows, test_rows): lists of dicts with NumIters, LearningRate and each net output."""
    try:
        lines = open(path, errors="replace").read().splitlines()
    except OSError as e:
        raise CaffeError("%s: cannot read log (%s)%s" % (path, e.strerror, resolved(path))) from None
    train, test = [], []
    iteration, lr = -1, float("nan")
    for line in lines:
        m = REGEX_ITERATION.search(line)
        if m:
            iteration = int(m.group(1))
        if iteration == -1:
            continue
        m = REGEX_LEARNING_RATE.search(line)
        if m:
            lr = float(m.group(1))
        for regex, rows in ((REGEX_TRAIN_OUTPUT, train), (REGEX_TEST_OUTPUT, test)):
            m = regex.search(line)
            if m:
                if not rows or rows[-1]["NumIters"] != iteration or m.group(2) in rows[-1]:
                    rows.append({"NumIters": iteration, "LearningRate": lr})
                rows[-1][m.group(2)] = float(m.group(3))
    return train, test
