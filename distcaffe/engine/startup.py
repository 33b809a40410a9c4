"""Start-up of a rank launched by mpirun/mpiexec/srun, under a supervisor that names it if it dies in silence.

MPI comes up first thing (before numpy loads), so a rank failing while it starts (bad path, bad prototxt, a
broken import) aborts the whole job at once with one line naming it. Before MPI_Init the process the launcher
started forks (no threads exist yet): the child goes on as the rank, the parent stays as its supervisor, a
small idle process holding a pipe from the rank:

- while the rank waits in MPI_Init (holding the GIL: no thread of its own could watch), the supervisor watches
  the other ranks the same launcher proxy started on this node (psutil): one that exits before MPI is up is
  named and the ranks of this node are ended within a second or two, so the job ends. Across nodes nothing can
  be seen: `DISTCAFFE_STARTUP_TIMEOUT` seconds (default 60) are the bound there.
- when the rank dies without its "I have spoken" byte (SIGKILL, the OOM killer, a native crash), it prints the
  one line the rank could not: rank, pid, host and how it died, and only then ends the same way, so the launcher
  sees the death after the line is out. A launcher tearing the job down kills each rank's process group
  (measured with MPICH's hydra), supervisor included: those ranks stay silent, as they should.
"""
import atexit
import os
import select
import signal
import socket
import sys
import threading
import time

ABORT_GRACE = 0.3   # seconds between printing the error and MPI_Abort: the proxy forwards the line first
_UP, _SPOKEN = b"U", b"X"
_TICK = 0.2         # seconds between two looks at the sibling ranks while MPI comes up
_SIBLING_GRACE = 1.0  # a rank of this node not seen after this long has exited already
# processes that start every rank of a node as their children (MPICH/Intel MPI hydra, SLURM, Open MPI 4/5): only
# under one of them does a rank missing from the parent's children mean a rank that has exited
_NODE_LAUNCHERS = ("hydra_pmi_proxy", "slurmstepd", "orted", "prted")
_spoken_fd = None
_supervisor = None


def supervisor_pid():
    """Pid of the supervisor this rank runs under (the process the launcher started), or None."""
    return _supervisor


def startup_timeout():
    """Seconds every rank may take to reach MPI_Init (env DISTCAFFE_STARTUP_TIMEOUT, default 60)."""
    return float(os.environ.get("DISTCAFFE_STARTUP_TIMEOUT", "60"))


def describe(rank, pid=None, host=None, also=""):
    """'rank R (pid P on HOST)': this process unless `pid`/`host` say otherwise; `also` goes inside the brackets."""
    return "rank %s (pid %d on %s%s)" % (rank, os.getpid() if pid is None else pid, host or socket.gethostname(),
                                         also)


def spoken():
    """Tell this rank's supervisor that the rank exits having said its word (or cleanly): it stays quiet."""
    global _spoken_fd
    fd, _spoken_fd = _spoken_fd, None
    if fd is not None:
        try:
            os.write(fd, _SPOKEN)
        except OSError:
            pass


def say(rank, message, pid=None):
    """One error line naming the rank (this process, or `pid`), flushed before anything can kill the process."""
    if pid is None:
        spoken()
    sys.stdout.flush()
    sys.stderr.write("distcaffe: error: %s: %s\n" % (describe(rank, pid), message))
    sys.stderr.flush()


class _Siblings:
    """The other ranks that this node's launcher proxy started (psutil; a rank's number read from its environ by
    `rank_of`); `gone()` names one that has exited."""

    def __init__(self, pid, rank, size, local_size, rank_of):
        import psutil
        self.psutil, self.rank, self.size, self.local_size = psutil, rank, size, local_size
        self.rank_of = rank_of
        self.top = psutil.Process(pid)   # this rank's outermost process (a wrapper shell has its environ too)
        while self.top.parent() is not None and self._rank(self.top.parent()) == rank:
            self.top = self.top.parent()
        self.proxy = self.top.parent()
        self.counting = self.proxy is not None and self.proxy.name() in _NODE_LAUNCHERS
        self.seen = {}
        self.since = time.monotonic()

    def _rank(self, proc):
        try:
            return self.rank_of(proc.environ())
        except (self.psutil.Error, OSError):
            return None

    def _dead(self, proc):
        try:
            return proc.status() == self.psutil.STATUS_ZOMBIE
        except self.psutil.NoSuchProcess:
            return True

    def gone(self):
        """A line naming a rank of this node that exited, or None while all are alive (or cannot be seen)."""
        if self.proxy is None:
            return None
        try:
            children = self.proxy.children()
        except self.psutil.Error:
            return None
        for proc in children:   # a rank not read yet (a child not yet exec'd has the proxy's environ): read again
            if proc.pid != self.top.pid and self.seen.get(proc.pid, (None,))[0] is None:
                self.seen[proc.pid] = (self._rank(proc), proc)
        for pid, (rank, proc) in self.seen.items():
            if rank is not None and self._dead(proc):
                return "%s exited before the MPI world came up" % describe(rank, pid)
        ranks = {rank for rank, _ in self.seen.values() if rank is not None} | {self.rank}
        unreadable = any(rank is None for rank, _ in self.seen.values())   # then counting could be wrong
        if (self.counting and not unreadable and len(ranks) < self.local_size
                and time.monotonic() - self.since > _SIBLING_GRACE):
            missing = sorted(set(range(self.size)) - ranks) if self.local_size == self.size else []
            who = ", ".join("rank %d" % r for r in missing) or "%d of the %d ranks of this node" % (
                self.local_size - len(ranks), self.local_size)
            return "%s exited before the MPI world came up" % who
        return None

    def claim(self):
        """True for the one supervisor of this node that names a lost rank: the first to bind an abstract socket
        named by the launcher proxy's pid wins (released when it exits); the others end their ranks in silence."""
        self._claim = socket.socket(socket.AF_UNIX)
        try:
            self._claim.bind("\0distcaffe-lost-rank-%d" % self.proxy.pid)
        except OSError:
            return False
        return True

    def end_all(self):
        """SIGKILL the other ranks of this node, each with its process group when it leads its own (as under
        hydra): the job is over, and each would otherwise report the one ended first as the rank that failed."""
        for pid, (rank, proc) in self.seen.items():
            if rank is None:
                continue
            try:
                group = os.getpgid(pid)
                if group == pid and group != os.getpgrp():
                    os.killpg(group, signal.SIGKILL)
                else:
                    proc.kill()
            except (OSError, self.psutil.Error):
                pass


def _death(status):
    """How a rank that never said a word ended, from its wait status; None when it exited cleanly."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else "signal %d" % sig
        return "killed by %s%s" % (name, ": kill -9 or the out-of-memory killer" if sig == signal.SIGKILL else "")
    code = os.waitstatus_to_exitcode(status)
    return "exit status %d without an error line" % code if code else None


def _supervise(rank_pid, fd, rank, size, timeout, siblings):
    """In the process the launcher started (the rank runs in its child): watch the start-up, speak for the rank
    if it dies without a word, then end as the rank ended, so that the launcher sees the death only after the
    line is out. Signals the launcher sends reach the rank through their shared process group."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    heard, ended_by_us = b"", False
    deadline = time.monotonic() + timeout
    while not heard:   # until MPI is up (or the rank exits): the pipe's first byte
        if select.select([fd], [], [], max(0.0, min(_TICK, deadline - time.monotonic())))[0]:
            heard = os.read(fd, 64) or b"-"   # "-": the pipe closed, the rank has exited
            continue
        lost = None if siblings is None else siblings.gone()
        if lost is None and time.monotonic() < deadline:
            continue
        if not lost:
            say(rank, "the MPI world of %d ranks did not come up within %.0f s: another rank failed before it started "
                      "MPI (see its output; DISTCAFFE_STARTUP_TIMEOUT sets the limit)" % (size, timeout), pid=rank_pid)
        elif siblings.claim():   # two supervisors may see the same death in the same tick: one line, not two
            say(rank, "%s; ending this rank so that the job ends" % lost, pid=rank_pid)
        os.kill(rank_pid, signal.SIGKILL)
        if siblings is not None:
            siblings.end_all()
        ended_by_us = True
        break
    status = os.waitpid(rank_pid, 0)[1]   # not the pipe's end: a process the rank forked may hold it open
    os.set_blocking(fd, False)
    try:
        heard += os.read(fd, 1 << 16)
    except BlockingIOError:
        pass
    how = None if ended_by_us or _SPOKEN in heard else _death(status)
    if how:
        say(rank, "died %swithout a word (%s)" % ("" if _UP in heard else "before the MPI world came up, ", how),
            pid=rank_pid)
    if not os.WIFSIGNALED(status):
        os._exit(os.WEXITSTATUS(status))
    sig = os.WTERMSIG(status)
    if sig != signal.SIGKILL:   # (its handler cannot be set: OSError, and the supervisor would exit with 1)
        signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)


def _die_with_parent():
    """Linux: SIGKILL this process when its supervisor dies (a launcher that kills only the pid it started)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _fork_rank(rank, size, local_size, timeout, rank_of):
    """Fork: the child goes on as the rank and gets the pipe's write end; this process supervises it."""
    global _supervisor
    read_fd, write_fd = os.pipe()
    supervisor = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        _supervisor = supervisor
        os.close(read_fd)
        _die_with_parent()
        if os.getppid() != supervisor:
            os._exit(1)
        return write_fd
    os.close(write_fd)   # every inherited descriptor stays open: a launcher takes a closed PMI socket for a death
    try:
        try:
            siblings = _Siblings(supervisor, rank, size, local_size, rank_of) if rank_of else None
        except Exception:  # no psutil or no /proc: the timeout alone is the bound
            siblings = None
        _supervise(child, read_fd, rank, size, timeout, siblings)
    finally:
        os._exit(1)


class LaunchedWorld:
    """MPI_COMM_WORLD of a launched job, initialised under the supervisor's watch; `fail()` reports and aborts
    the job. `rank_of(environ)` gives the rank a launcher's environment names (None: not a rank of this job)."""

    def __init__(self, rank, size, local_size=1, timeout=None, rank_of=None):
        self.rank, self.size, self.local_size = int(rank), int(size), int(local_size)
        self.timeout = startup_timeout() if timeout is None else float(timeout)
        self.rank_of = rank_of
        self.MPI = None

    def start(self):
        global _spoken_fd
        _spoken_fd = _fork_rank(self.rank, self.size, self.local_size, self.timeout, self.rank_of)
        atexit.register(spoken)
        try:
            from mpi4py import MPI   # runs MPI_Init_thread: waits for every rank of the world
        except Exception as e:   # a missing or broken mpi4py / MPI library
            say(self.rank, "cannot start: %s: %s (MPI training needs mpi4py: pip install 'distcaffe[mpi]')"
                % (type(e).__name__, e))
            sys.exit(2)
        os.write(_spoken_fd, _UP)
        self.MPI = MPI
        return self

    def fail(self, message, code=2):
        """Print `message` naming this rank, then MPI_Abort every rank of the job (never returns)."""
        abort(self.MPI, self.rank, message, code)


def abort(MPI, rank, message, code, log=None):
    """Print `message` naming `rank` (then into `log`), give the launcher time to forward it, MPI_Abort the job."""
    say(rank, message)
    if log is not None:
        log.error("rank %d: %s", rank, message)
    time.sleep(ABORT_GRACE)
    threading.Timer(1.0, os._exit, args=(code,)).start()  # MPI_Abort may wait for a launcher that never kills
    MPI.COMM_WORLD.Abort(code)
    os._exit(code)
