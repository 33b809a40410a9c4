"""Shared test fixtures: where ../shared lives; the running interpreter's bin directory first on PATH (so
`make test` from an unactivated venv finds mpiexec, ray and distcaffe in every subprocess); and, under CI=true,
any skip that is not a GPU test's turned into a failure."""
import os
import pathlib
import re
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from _dist_helpers import missing  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("DISTCAFFE_SHARED", ROOT.parent / "shared"))
GOLDEN = SHARED / "golden"
ZOO = SHARED / "zoo"
BIN = os.path.dirname(sys.executable)
if BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = os.pathsep.join(p for p in (BIN, os.environ.get("PATH")) if p)

_GPU_REASON = re.compile(r"gpu|cuda|cupy|nccl", re.I)


def _in_ci():
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """CI=true: a skip is allowed only for GPU tests (marked `gpu` or skipped for want of a GPU/CUDA/cupy)."""
    outcome = yield
    report = outcome.get_result()
    if not (_in_ci() and report.skipped and not hasattr(report, "wasxfail")):
        return
    reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if item.get_closest_marker("gpu") is None and not _GPU_REASON.search(reason):
        report.outcome = "failed"
        report.longrepr = "CI=true forbids skipping a non-GPU test: %s" % reason

# BVLC's unchanged pycaffe files: run in subprocesses by test_bvlc_pycaffe*.py (their module names, e.g.
# test_net, would clash with ours here), never collected directly.
collect_ignore = ["bvlc_pycaffe"]


def need_shared():
    if not GOLDEN.is_dir():
        missing("%s is not present (clone with ../shared beside the checkout)" % GOLDEN)


@pytest.fixture
def golden():
    need_shared()
    return GOLDEN


@pytest.fixture
def zoo():
    need_shared()
    return ZOO
