"""The suite's own rules, run on a throw-away test file with this suite's conftest as a plugin: under CI=true a
missing tool or library FAILS (only GPU skips stay skips), locally it skips with the reason in the summary."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = '''
import pytest
import _dist_helpers as h

def test_missing_tool():
    h.tool("no-such-tool-xyz")

def test_missing_module():
    h.need_module("no_such_module_xyz", "dev")

def test_plain_skip():
    pytest.skip("optional thing absent")

def test_gpu_skip():
    pytest.skip("no CUDA device")

def test_finds_mpiexec_beside_python():
    assert h.tool("mpiexec")
'''


def run_cases(tmp_path, ci):
    (tmp_path / "test_cases.py").write_text(CASES)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(PATH="/usr/bin:/bin", PYTHONPATH=os.pathsep.join((HERE, os.path.dirname(HERE))))
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-ra", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_cases.py")], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("ci", [False, True])
def test_missing_tools_skip_locally_and_fail_in_ci(tmp_path, ci):
    r = run_cases(tmp_path, ci)
    out = r.stdout
    if ci:
        assert "3 failed, 1 passed, 1 skipped" in out, out
        assert "FAILED" in out and "no-such-tool-xyz not found" in out and "CI=true" in out, out
    else:
        assert r.returncode == 0 and "1 passed, 4 skipped" in out, out
        assert "SKIPPED [1]" in out and "optional thing absent" in out, out
    assert "no CUDA device" in out, out
