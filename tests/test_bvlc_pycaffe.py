"""BVLC Caffe's own pycaffe test suite (python/caffe/test, unchanged, in tests/bvlc_pycaffe) passes through
`import caffe`: all 52 cases, each module reported as one test here, test_draw with Graphviz."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # subprocesses running BVLC's files (~30 s)

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
SUITE = HERE / "bvlc_pycaffe" / "python" / "caffe" / "test"
MODULES = sorted(p.stem for p in SUITE.glob("test_*.py"))
BVLC_CASES = 52


def _need_dot():
    if shutil.which("dot") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Graphviz's dot is not on PATH (make test installs it: apt-get install graphviz)")
        pytest.skip("Graphviz's dot is not on PATH")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Run the whole suite once in a subprocess; {case id: [outcome, detail]}."""
    work = tmp_path_factory.mktemp("bvlc_pycaffe")
    out = work / "outcomes.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               GLOG_minloglevel="2")
    proc = subprocess.run([sys.executable, str(HERE / "_bvlc_pycaffe_runner.py"), str(SUITE), str(out)],
                          cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and out.exists(), proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_suite_has_all_52_cases(outcomes):
    assert len(outcomes) == BVLC_CASES, sorted(outcomes)


@pytest.mark.parametrize("module", MODULES)
def test_bvlc_module_passes(outcomes, module):
    if module == "test_draw":
        _need_dot()
    mine = {case: o for case, o in outcomes.items() if case.split(".")[0] == module}
    assert mine, "no case of %s ran" % module
    bad = {case: o for case, o in mine.items() if o[0] != "passed"}
    assert not bad, "\n".join("%s: %s\n%s" % (case, o[0], o[1]) for case, o in bad.items())
