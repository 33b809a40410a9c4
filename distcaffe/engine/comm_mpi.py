"""MPI communicator (mpi4py): non-blocking collectives on host buffers, polled with a deadline.

Device (cupy) arrays are staged through a host copy. A ring heartbeat (engine/watchdog.py) notices a
dead rank even while this rank waits at a barrier or computes, and aborts the whole job naming it.
"""
import logging
import os
import signal
import socket
import sys
import threading
import time

import numpy as np

from distcaffe import backend
from distcaffe.log import get_logger

from .communicator import CollectiveError, Communicator, Request, heartbeat_timeout
from .startup import abort, describe, supervisor_pid
from .watchdog import RingHeartbeat

log = get_logger("engine")


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise CollectiveError("MPI training needs mpi4py: pip install 'distcaffe[mpi]' (%s)" % e) from None
    return MPI


class _MPIRequest(Request):
    """An mpi4py request; device buffers are copied back from their host stage on completion."""

    def __init__(self, comm, req, host, dev, what):
        self.comm, self.req, self.host, self.dev, self.what = comm, req, host, dev, what
        self.finished = False

    def test(self):
        if self.finished:
            return True
        try:
            done = self.req.Test()
        except Exception as e:  # mpi4py.MPI.Exception: a peer's connection broke
            self.comm.await_heartbeat_verdict()
            raise CollectiveError("MPI %s failed on rank %d: %s%s" % (self.what, self.comm.rank, e,
                                                                     self.comm.lost_message())) from None
        if done:
            self.finished = True
            if self.dev is not None:
                self.dev.set(self.host)
        return done

    def check(self):
        if self.comm.heartbeat is not None and self.comm.heartbeat.lost is not None:
            raise CollectiveError(self.comm.lost_message().strip("; "))


class MPICommunicator(Communicator):
    """Data-parallel collectives over MPI_COMM_WORLD (or `comm`), with a heartbeat watchdog."""

    name = "mpi"

    def __init__(self, comm=None, heartbeat=True):
        MPI = _mpi()
        self.MPI = MPI
        if threading.current_thread() is threading.main_thread():
            # a write to a dead peer's socket must become an MPI error we can report, not a silent SIGPIPE death
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        world = comm if comm is not None else MPI.COMM_WORLD
        self.comm = world.Dup()
        self.comm.Set_errhandler(MPI.ERRORS_RETURN)
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        super().__init__(self.comm.Get_rank(), self.comm.Get_size(), node.Get_rank(), node.Get_size())
        self._stages = {}
        node.Free()
        self.peers = self.comm.allgather((socket.gethostname(), os.getpid(), supervisor_pid()))
        if self.rank == 0:  # always shown: it maps the PID of a launcher's "BAD TERMINATION" banner to a rank
            world = "MPI world of %d ranks: %s" % (self.size, ", ".join(self._launched(r) for r in range(self.size)))
            if log.isEnabledFor(logging.INFO):
                log.info("%s", world)
            else:
                print("distcaffe: %s" % world, file=sys.stderr, flush=True)
        self.heartbeat = None
        self._aborting = threading.Lock()
        if heartbeat and self.size > 1:
            if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
                log.warning("MPI library gives no MPI_THREAD_MULTIPLE: no heartbeat; lost ranks are found only "
                            "by collective timeouts")
            else:
                self.heartbeat = RingHeartbeat(self.comm, heartbeat_timeout(), self._on_lost).start()

    def describe(self, rank):
        host, pid, _ = self.peers[rank]
        return describe(rank, pid, host)

    def _launched(self, rank):
        """describe(rank), plus the pid of its supervisor: the one the launcher knows and its banner names."""
        host, pid, supervisor = self.peers[rank]
        return describe(rank, pid, host, ", supervisor pid %d" % supervisor if supervisor else "")

    def lost_message(self):
        hb = self.heartbeat
        if hb is None or hb.lost is None:
            return ""
        return "; %s is lost (no heartbeat for %.0f s)" % (self.describe(hb.lost), hb.timeout)

    def await_heartbeat_verdict(self):
        """After an MPI error: give the heartbeat time to name the lost rank (it aborts the job when it does)."""
        hb = self.heartbeat
        deadline = time.monotonic() + (hb.timeout + 2.0 if hb is not None else 0.0)
        while hb is not None and hb.lost is None and time.monotonic() < deadline:
            time.sleep(0.05)

    def _on_lost(self, rank, silence):
        self.abort("%s is lost: no heartbeat for %.0f s; aborting the job" % (self.describe(rank), silence))

    def _stage(self, buf, keep=False):
        """(host array, device array or None) for a collective on `buf`. A device buffer is copied to a host
        stage; `keep`: a page-locked stage kept per device buffer (the persistent gradient buckets), so an
        iteration's staging allocates nothing."""
        if isinstance(buf, np.ndarray):
            return buf, None
        if not keep:
            return buf.get(), buf
        key = (buf.data.ptr, buf.size, buf.dtype.str)
        host = self._stages.get(key)
        if host is None:
            host = self._stages[key] = backend.host_empty(buf.size, buf.dtype).reshape(buf.shape)
        return buf.get(out=host), buf

    def iallreduce(self, buf):
        host, dev = self._stage(buf, keep=True)
        return _MPIRequest(self, self.comm.Iallreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM), host, dev,
                           "allreduce")

    def broadcast(self, buf, root=0, timeout=None):
        host, dev = self._stage(buf)
        _MPIRequest(self, self.comm.Ibcast(host, root=root), host, dev, "broadcast").wait(timeout, "broadcast")
        return buf

    def share(self, obj, root=0):
        """Root's picklable `obj` on every rank (e.g. an NCCL unique id)."""
        return self.comm.bcast(obj, root=root)

    def allgather(self, obj):
        return self.comm.allgather(obj)

    def barrier(self, timeout=float("inf")):
        _MPIRequest(self, self.comm.Ibarrier(), None, None, "barrier").wait(timeout, "barrier")

    def abort(self, message, code=1):
        """Print `message`, then MPI_Abort the job (a timer forces exit if the abort itself stalls)."""
        if not self._aborting.acquire(blocking=False):
            time.sleep(2.0)  # another thread (the heartbeat) is already aborting the job
            os._exit(code)
        abort(self.MPI, self.rank, "%s (exit code %d)" % (message, code), code, log)

    def close(self):
        """Final barrier (every rank alive and done), then stop the heartbeat."""
        self.barrier()
        if self.heartbeat is not None:
            self.heartbeat.stop()
