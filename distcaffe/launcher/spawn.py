"""Local multi-process training without a launcher: `-gpu all` (or `-gpu 0,1`, `--cpu-workers N`) on one node.

The job is started again as N ranks under the `mpiexec` that the `mpi` extra installs (MPICH's Hydra), so
it runs exactly as an `mpirun -np N` job does: same communicator, heartbeat and abort-on-failure. SIGINT
and SIGTERM are passed on to the ranks (SIGTERM: every rank snapshots and stops together).
"""
import os
import shutil
import signal
import subprocess
import sys

from distcaffe.errors import CaffeError
from distcaffe.log import get_logger

log = get_logger("launcher")


def mpiexec_command(n, argv, entry=("-m", "distcaffe.launcher.cli", "train"), exe=None):
    """The command that runs `python ENTRY argv` (default `distcaffe train argv`) as n local ranks."""
    search = os.pathsep.join((os.path.dirname(sys.executable), os.environ.get("PATH", "")))  # an unactivated venv
    exe = exe or shutil.which("mpiexec", path=search) or shutil.which("mpirun", path=search)
    if exe is None:
        raise CaffeError("training on %d local devices needs mpiexec: pip install 'distcaffe[mpi]' (or run under "
                         "mpirun/srun, or use --ray)" % n)
    return [exe, "-n", str(n), sys.executable, *entry, *argv]


def spawn(n, argv, entry=("-m", "distcaffe.launcher.cli", "train")):
    """Run n local ranks of `distcaffe train argv`; returns the job's exit code."""
    cmd = mpiexec_command(n, argv, entry)
    log.info("Starting %d local ranks: %s", n, " ".join(cmd))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(cmd, env=env)
    forward = {sig: signal.signal(sig, lambda s, f: proc.send_signal(s)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for sig, old in forward.items():
            signal.signal(sig, old)
