"""Start-up of a rank launched by mpirun/mpiexec/srun: MPI comes up first thing, so that a rank failing while it
starts (bad path, bad prototxt, import error) can abort the whole job with one line naming it, instead of leaving
the other ranks waiting in MPI_Init forever.

A rank that dies before it even reaches MPI_Init cannot abort anything; MPI_Init holds the GIL while it waits,
so a forked watchdog (no threads exist yet) ends this rank after `DISTCAFFE_STARTUP_TIMEOUT` seconds with a
line saying the world never came up, and the launcher then ends the job.
"""
import os
import select
import signal
import socket
import sys
import time


def startup_timeout():
    """Seconds every rank may take to reach MPI_Init (env DISTCAFFE_STARTUP_TIMEOUT, default 60)."""
    return float(os.environ.get("DISTCAFFE_STARTUP_TIMEOUT", "60"))


def _say(rank, message):
    """One error line naming this rank, flushed before anything can kill the process."""
    sys.stdout.flush()
    sys.stderr.write("distcaffe: error: rank %d (pid %d on %s): %s\n" % (rank, os.getpid(), socket.gethostname(),
                                                                      message))
    sys.stderr.flush()


def _watch(parent, ready_fd, rank, size, timeout):
    """In the forked child: wait for the parent to close its end (MPI is up, or it died); else kill it."""
    readable, _, _ = select.select([ready_fd], [], [], timeout)
    if not readable:
        _say(rank, "the MPI world of %d ranks did not come up within %.0f s: another rank failed before it started "
                   "MPI (see its output; DISTCAFFE_STARTUP_TIMEOUT sets the limit)" % (size, timeout))
        os.kill(parent, signal.SIGKILL)
    os._exit(0)


class LaunchedWorld:
    """MPI_COMM_WORLD of a launched job, initialised under a deadline; `fail()` reports and aborts the job."""

    def __init__(self, rank, size, timeout=None):
        self.rank, self.size = int(rank), int(size)
        self.timeout = startup_timeout() if timeout is None else float(timeout)
        self.MPI = None

    def start(self):
        from .comm_mpi import _mpi
        read_fd, write_fd = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(write_fd)
            _watch(os.getppid(), read_fd, self.rank, self.size, self.timeout)
        os.close(read_fd)
        try:
            self.MPI = _mpi()  # importing mpi4py.MPI runs MPI_Init_thread: waits for every rank of the world
        finally:
            os.close(write_fd)
            os.waitpid(child, 0)
        return self

    def fail(self, message, code=2):
        """Print `message` naming this rank, then MPI_Abort every rank of the job (never returns)."""
        from .comm_mpi import ABORT_GRACE
        _say(self.rank, message)
        time.sleep(ABORT_GRACE)  # let the launcher's proxy forward the line before MPI_Abort tears the job down
        self.MPI.COMM_WORLD.Abort(code)
        os._exit(code)
