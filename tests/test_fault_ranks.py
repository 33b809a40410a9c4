"""Fault injection on the ranks of real `mpiexec` jobs through the `distcaffe train` command: ranks built from a
different solver or net stop at start-up with one line saying what differs; a SIGSTOPped rank (alive, silent)
is named by the heartbeat and the job ends; a SIGKILLed one (as by the OOM killer) is named by its supervisor in one
line, every time, and only it (the ranks the launcher kills while it ends the job stay silent)."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _dist_helpers as h  # noqa: E402
from test_fault_startup import TRAIN, mpmd  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("change, what, text", [
    (("base_lr: 0.5", "base_lr: 0.1"), "solver", "base_lr"),
    (("num_output: 6", "num_output: 7"), "train net", "num_output"),
])
def test_ranks_with_different_solver_or_net_stop_at_startup(tmp_path, change, what, text):
    good = h.make_job(tmp_path, batch=4, max_iter=10 ** 6, name="good")
    other = h.make_job(tmp_path, batch=4, max_iter=10 ** 6, name="other")
    target = other if what == "solver" else other.parent / "net.prototxt"
    target.write_text(target.read_text().replace(*change))
    rc, out, elapsed = mpmd(TRAIN + ["-solver", good], TRAIN + ["-solver", other])
    assert rc != 0 and elapsed < 60, out[-2000:]
    line = [ln for ln in out.splitlines() if "rank 1's %s differs from rank 0's" % what in ln]
    assert line and text in line[0] and line[0].startswith("distcaffe: error: rank 1"), out[-2000:]


def signal_rank1(tmp_path, sig):
    """A long 2-rank `distcaffe train` job whose rank 1 gets `sig` once it trains: (rc, output, seconds, pids)."""
    solver = h.make_job(tmp_path, batch=4, max_iter=10 ** 6, name="long")
    solver.write_text(solver.read_text().replace("display: 1", "display: 200"))
    proc = subprocess.Popen([shutil.which("mpiexec"), "-n", "2", *TRAIN, "-solver", str(solver)], cwd=str(h.ROOT),
                            env=dict(os.environ, PYTHONPATH=str(h.ROOT), DISTCAFFE_HEARTBEAT_TIMEOUT="5"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return h.kill_rank1_when_training(
        proc, r"MPI world of 2 ranks: rank 0 \(pid (\d+) on .*\), rank 1 \(pid (\d+) on", "Iteration 400,",
        start_timeout=90, exit_timeout=60, sig=sig)


@pytest.mark.parametrize("trial", range(3))
def test_killed_rank_is_named_in_one_line(tmp_path, trial):
    rc, out, elapsed, pids = signal_rank1(tmp_path, signal.SIGKILL)
    assert rc != 0 and elapsed < 10, out[-2000:]
    said = [ln for ln in out.splitlines() if "died without a word" in ln]
    assert said == ["distcaffe: error: rank 1 (pid %d on %s): died without a word (killed by SIGKILL: kill -9 or the "
                    "out-of-memory killer)" % (pids[1], socket.gethostname())], out[-2000:]


def test_stopped_rank_is_named_and_the_job_ends(tmp_path):
    rc, out, elapsed, pids = signal_rank1(tmp_path, signal.SIGSTOP)
    try:
        os.kill(pids[1], signal.SIGKILL)   # a stopped rank the launcher did not reap
    except ProcessLookupError:
        pass
    assert rc != 0 and elapsed < 30, out[-2000:]
    assert re.search(r"rank 1 \(pid %d on .*\) is lost: no heartbeat" % pids[1], out), out[-2000:]
