"""How fast a 2-rank `mpiexec` job of `distcaffe train` ends when one rank fails, and the line that names it:
start-up failures (wall time of the whole job, Python start included) and kill -9 / SIGSTOP of a training rank
(time from the signal to mpiexec's exit). The scenarios are those of tests/test_fault_startup.py and
tests/test_fault_ranks.py, run with the same helpers.

    python benchmarks/rank_faults.py [--trials 3]
"""
import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ["PATH"] = os.pathsep.join((os.path.dirname(sys.executable), os.environ.get("PATH", "")))
import _dist_helpers as h  # noqa: E402
from test_fault_startup import TRAIN, mpmd, shadowing  # noqa: E402

LINE = re.compile(r"^distcaffe: error: .*$", re.M)


def startup(tmp, rank1, env=None):
    """rank 0 good, rank 1 `rank1(solver, tmp)`: (seconds, the error lines)."""
    good = h.make_job(tmp, batch=4, max_iter=10 ** 6)
    rc, out, elapsed = mpmd(TRAIN + ["-solver", good], rank1(good, tmp), env=env)
    assert rc != 0, out[-2000:]
    return elapsed, LINE.findall(out)


def signalled(tmp, sig):
    solver = h.make_job(tmp, batch=4, max_iter=10 ** 6, name="long")
    solver.write_text(solver.read_text().replace("display: 1", "display: 200"))
    proc = subprocess.Popen([h.tool("mpiexec"), "-n", "2", *TRAIN, "-solver", str(solver)], cwd=str(ROOT),
                            env=dict(os.environ, PYTHONPATH=str(ROOT), DISTCAFFE_HEARTBEAT_TIMEOUT="5"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rc, out, elapsed, pids = h.kill_rank1_when_training(
        proc, r"MPI world of 2 ranks: rank 0 \(pid (\d+) on .*\), rank 1 \(pid (\d+) on", "Iteration 400,",
        start_timeout=90, exit_timeout=60, sig=sig)
    try:
        os.kill(pids[1], signal.SIGKILL)   # a stopped rank the launcher did not reap
    except ProcessLookupError:
        pass
    return elapsed, LINE.findall(out)


SCENARIOS = {
    "missing solver": lambda t: startup(t, lambda s, d: TRAIN + ["-solver", "/nonexistent/solver.prototxt"]),
    "numpy ImportError": lambda t: startup(t, lambda s, d: shadowing(d, "numpy", "raise ImportError('broken')")
                                           + TRAIN + ["-solver", s]),
    "mpi4py ImportError": lambda t: startup(t, lambda s, d: shadowing(d, "mpi4py", "raise ImportError('broken')")
                                            + TRAIN + ["-solver", s]),
    "SIGKILL at import": lambda t: startup(t, lambda s, d: shadowing(
        d, "numpy", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)") + TRAIN + ["-solver", s]),
    "exit before MPI": lambda t: startup(t, lambda s, d: [sys.executable, "-c", "import sys; sys.exit(3)"]),
    "stuck before MPI (timeout 5 s)": lambda t: startup(
        t, lambda s, d: [sys.executable, "-c", "import time; time.sleep(120)"], env={"DISTCAFFE_STARTUP_TIMEOUT": "5"}),
    "kill -9 while training": lambda t: signalled(t, signal.SIGKILL),
    "SIGSTOP while training (heartbeat 5 s)": lambda t: signalled(t, signal.SIGSTOP),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()
    print("| scenario | seconds to job end (median, min-max of %d) | lines naming a rank |" % args.trials)
    print("|---|---|---|")
    for name, run in SCENARIOS.items():
        times, lines = [], set()
        for _ in range(args.trials):
            with tempfile.TemporaryDirectory() as tmp:
                seconds, said = run(pathlib.Path(tmp))
            times.append(seconds)
            lines.add(" / ".join(re.sub(r"pid \d+ on \S+\)", "pid P on HOST)", ln) for ln in said))
        print("| %s | %.2f (%.2f-%.2f) | %s |" % (name, statistics.median(times), min(times), max(times),
                                                 "<br>".join("`%s`" % ln for ln in sorted(lines))), flush=True)


if __name__ == "__main__":
    main()
