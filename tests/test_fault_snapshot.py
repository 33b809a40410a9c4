"""kill -9 during snapshotting, at randomised moments: whatever is on disk afterwards loads, and the newest
solverstate resumes; hidden temporary files a kill leaves are removed at the next start."""
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _dist_helpers as h  # noqa: E402

pytestmark = pytest.mark.slow
TRIALS = int(os.environ.get("DISTCAFFE_KILL_TRIALS", "12"))


def _job(tmp, name):
    solver = h.make_job(tmp, batch=4, max_iter=10 ** 6, snapshot=1, name=name)
    net = solver.parent / "net.prototxt"
    net.write_text(net.read_text().replace("num_output: 6", "num_output: 3000"))
    return solver


def _kill_while_snapshotting(solver, delay):
    """Start `distcaffe train`, wait for its first snapshot line, then SIGKILL it `delay` seconds later."""
    proc = subprocess.Popen([sys.executable, "-m", "distcaffe.launcher.cli", "train", "-solver", str(solver)],
                            cwd=str(h.ROOT), env=dict(os.environ, PYTHONPATH=str(h.ROOT)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    for line in proc.stderr:
        if "Snapshotting" in line or time.time() > deadline:
            break
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    proc.stderr.close()
    return proc.returncode


def _check_disk(d):
    """Every snapshot file loads; returns the newest solverstate (None: the kill came before the first one was
    committed)."""
    from distcaffe.io import read_net_binary
    from distcaffe.solvers import snapshot as snap
    states = []
    for f in sorted(d.iterdir()):
        if f.name.endswith(".caffemodel"):
            read_net_binary(str(f))
        elif f.name.endswith(".solverstate"):
            state = snap.read_state(str(f))
            assert state["resume"] is not None, f
            snap.resolve_learned_net(str(f), state["learned_net"])
            states.append((state["iter"], f))
    return max(states)[1] if states else None


def test_kill_9_during_snapshots_leaves_loadable_resumable_files(tmp_path):
    from distcaffe.solvers import get_solver
    rng = np.random.default_rng(2024)
    resumed = 0
    for trial in range(TRIALS):
        solver = _job(tmp_path, "t%d" % trial)
        assert _kill_while_snapshotting(solver, float(rng.uniform(0.0, 1.5))) == -signal.SIGKILL
        newest = _check_disk(solver.parent)
        s = get_solver(str(solver))    # its start removes the temporary files the kill left
        assert not [p for p in solver.parent.iterdir() if p.name.endswith(".tmp")]
        if newest is None:
            continue
        s.restore(str(newest))
        assert s.resumed_exactly
        start = s.iter
        s.step(1)
        assert s.iter == start + 1
        resumed += 1
    assert resumed >= TRIALS // 2, "only %d of %d trials had a committed snapshot" % (resumed, TRIALS)
