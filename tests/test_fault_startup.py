"""Fault injection at start-up of real `mpiexec` jobs (MPMD: each rank its own command line): a rank that fails
while starting (bad solver, broken import, killed), or dies before MPI starts, ends the whole job within seconds
with one line naming the rank and why; a rank stuck before MPI ends it at DISTCAFFE_STARTUP_TIMEOUT."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import psutil
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
    proc = subprocess.Popen(cmd, cwd=str(h.ROOT), env=dict(os.environ, PYTHONPATH=str(h.ROOT), **(env or {})),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:   # the job hung: fail with its process tree and what it printed
        job = psutil.Process(proc.pid)
        hung = [job] + job.children(recursive=True)
        tree = _tree(hung)
        for p in hung:                  # the ranks too: a rank left training would hold the output pipes open
            try:
                p.kill()
            except psutil.Error:
                pass
        out, err = proc.communicate(timeout=30)
        pytest.fail("mpiexec still running after %d s; its processes:\n%s\nits output:\n%s"
                    % (timeout, tree, (out + err)[-4000:]))
    return proc.returncode, out + err, time.time() - t0


def _tree(procs):
    """One line per process (state, command, its pipes and sockets), for a hung job's failure message."""
    lines = []
    for p in procs:
        try:
            pipes = sorted(os.readlink("/proc/%d/fd/%s" % (p.pid, fd)) for fd in os.listdir("/proc/%d/fd" % p.pid))
            lines.append("%d (parent %d) %s %s | fds %s" % (p.pid, p.ppid(), p.status(), " ".join(p.cmdline())[-160:],
                                                            [x for x in pipes if x.startswith(("pipe", "socket"))]))
        except (psutil.Error, OSError) as e:
            lines.append("%d: %s" % (p.pid, e))
    return "\n".join(lines)


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


def shadowing(tmp_path, module, body):
    """`-env PYTHONPATH` for one MPMD rank: a tree whose `module` runs `body` (a broken or killed import)."""
    tree = tmp_path / ("shadow_" + module)
    (tree / module).mkdir(parents=True)
    (tree / module / "__init__.py").write_text(body + "\n")
    return ["-env", "PYTHONPATH", "%s%s%s" % (tree, os.pathsep, h.ROOT)]


@pytest.mark.parametrize("module, body, says", [
    # numpy loads after MPI is up: the rank names itself and aborts the job
    ("numpy", "raise ImportError('numpy is broken on this rank')",
     r"rank 1 \(pid \d+ on \S+\): cannot start: ImportError: numpy is broken on this rank"),
    # mpi4py itself is broken: the rank names itself; rank 0's supervisor sees it gone and ends the job
    ("mpi4py", "raise ImportError('libmpi.so.12: cannot open shared object file')",
     r"rank 1 \(pid \d+ on \S+\): cannot start: ImportError: libmpi.so.12"),
    # killed while it starts (the OOM killer at import): its supervisor speaks for it
    ("numpy", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
     r"rank 1 \(pid \d+ on \S+\): died without a word \(killed by SIGKILL: kill -9 or the out-of-memory killer\)"),
])
def test_rank_with_a_broken_import_ends_the_job_naming_it(tmp_path, module, body, says):
    good = h.make_job(tmp_path, batch=4, max_iter=10 ** 6)
    rc, out, elapsed = mpmd(TRAIN + ["-solver", good], shadowing(tmp_path, module, body) + TRAIN + ["-solver", good])
    assert rc != 0 and elapsed < 20, out[-2000:]
    assert re.search("^distcaffe: error: " + says, out, re.M), out[-2000:]


def test_rank_dying_before_mpi_starts_is_named_by_its_neighbour(tmp_path):
    """Named once: the rank that notices ends its neighbours too, so none names it as the rank that failed."""
    good = h.make_job(tmp_path, batch=4, max_iter=10 ** 6)
    rc, out, elapsed = mpmd(TRAIN + ["-solver", good], TRAIN + ["-solver", good],
                            [sys.executable, "-c", "import sys; sys.exit(3)"])
    assert rc != 0 and elapsed < 20, out[-2000:]   # the start-up timeout (60 s) is not what ended it
    said = [ln for ln in out.splitlines() if ln.startswith("distcaffe: error:")]
    assert len(said) == 1 and re.match(r"distcaffe: error: rank [01] \(pid \d+ on \S+\): rank 2 .*exited before "
                                       r"the MPI world came up", said[0]), out[-2000:]


def test_rank_stuck_before_mpi_ends_the_job_at_the_deadline(tmp_path):
    """A rank that never reaches MPI_Init and never exits (as one on another node looks): the timeout is the bound."""
    good = h.make_job(tmp_path, batch=4, max_iter=10 ** 6)
    rc, out, elapsed = mpmd(TRAIN + ["-solver", good], [sys.executable, "-c", "import time; time.sleep(120)"],
                            env={"DISTCAFFE_STARTUP_TIMEOUT": "5"})
    assert rc != 0 and 5 <= elapsed < 30, out[-2000:]
    assert "distcaffe: error: rank 0 " in out and "did not come up within 5 s" in out, out[-2000:]


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_supervisor_ends_as_its_rank_ended(sig):
    """The supervisor speaks for a rank killed by a signal, then dies of the same signal (SIGKILL too, whose
    handler cannot be reset), so that the launcher sees the rank's own death."""
    code = ("import os, signal, sys\n"
            "from distcaffe.engine import startup\n"
            "r, w = os.pipe()\n"
            "child = os.fork()\n"
            "if child == 0:\n"
            "    os.close(r)\n"
            "    os.kill(os.getpid(), signal.%s)\n"
            "os.close(w)\n"
            "startup._supervise(child, r, 1, 2, 30, None)\n" % sig)
    r = subprocess.run([sys.executable, "-c", code], cwd=str(h.ROOT), capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=str(h.ROOT)))
    assert r.returncode == -getattr(signal, sig), (r.returncode, r.stderr[-2000:])
    assert re.search(r"rank 1 \(pid \d+ on \S+\): died before the MPI world came up, without a word \(killed by %s"
                     % sig, r.stderr), r.stderr[-2000:]
