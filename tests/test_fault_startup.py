"""Fault injection at start-up of real `mpiexec` jobs (MPMD: each rank its own command line): a rank that fails
while starting, or dies before MPI starts, ends the whole job quickly with one line naming the rank and why."""
import os
import shutil
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _dist_helpers as h  # noqa: E402

pytestmark = pytest.mark.slow
TRAIN = [sys.executable, "-m", "distcaffe.launcher.cli", "train"]


def mpmd(*ranks, env=None, timeout=120):
    """`mpiexec -n 1 CMD0 : -n 1 CMD1 ...`; returns (returncode, combined output, seconds)."""
    exe = shutil.which("mpiexec")
    assert exe, "mpiexec is not on PATH"
    cmd = [exe]
    for i, rank in enumerate(ranks):
        cmd += ([":"] if i else []) + ["-n", "1", *map(str, rank)]
    t0 = time.time()
    r = subprocess.run(cmd, cwd=str(h.ROOT), env=dict(os.environ, PYTHONPATH=str(h.ROOT), **(env or {})),
                       capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout + r.stderr, time.time() - t0


@pytest.mark.parametrize("bad", ["missing", "garbled"])
def test_rank_failing_at_startup_aborts_the_job_naming_it(tmp_path, bad):
    good = h.make_job(tmp_path, batch=4, max_iter=10 ** 6)
    broken = tmp_path / "broken_solver.prototxt"
    if bad == "garbled":
        broken.write_text("net: \"x.prototxt\"\nbase_lr: {{{\n")
    rc, out, elapsed = mpmd(TRAIN + ["-solver", good], TRAIN + ["-solver", broken])
    assert rc != 0 and elapsed < 30, out[-2000:]
    line = [ln for ln in out.splitlines() if ln.startswith("distcaffe: error: rank 1 ")]
    assert line and str(broken) in line[0], out[-2000:]


def test_rank_dying_before_mpi_starts_ends_the_job_within_the_deadline(tmp_path):
    good = h.make_job(tmp_path, batch=4, max_iter=10 ** 6)
    rc, out, elapsed = mpmd(TRAIN + ["-solver", good], [sys.executable, "-c", "import sys; sys.exit(3)"],
                            env={"DISTCAFFE_STARTUP_TIMEOUT": "5"})
    assert rc != 0 and elapsed < 30, out[-2000:]
    assert "distcaffe: error: rank 0 " in out and "did not come up within 5 s" in out, out[-2000:]
