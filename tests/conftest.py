"""Shared test fixtures: where ../shared lives, and skips when it is absent."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("DISTCAFFE_SHARED", ROOT.parent / "shared"))
GOLDEN = SHARED / "golden"
ZOO = SHARED / "zoo"

# BVLC's unchanged pycaffe files: run in subprocesses by test_bvlc_pycaffe*.py (their module names, e.g.
# test_net, would clash with ours here), never collected directly.
collect_ignore = ["bvlc_pycaffe"]


def need_shared():
    if not GOLDEN.is_dir():
        pytest.skip("../shared/golden is not present")


@pytest.fixture
def golden():
    need_shared()
    return GOLDEN


@pytest.fixture
def zoo():
    need_shared()
    return ZOO
