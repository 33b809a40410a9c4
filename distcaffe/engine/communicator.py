"""The communicator interface every data-parallel backend implements (single, MPI, NCCL, Ray).

All collectives work in place on one contiguous array of this rank's device. `iallreduce` is
non-blocking and returns a Request; waiting on it is bounded, so a dead peer ends the run with a
message naming it instead of a hang.
"""
import os
import time

import numpy as np

from distcaffe.errors import CaffeError


class CollectiveError(CaffeError):
    """A collective failed or timed out, or a peer rank was lost."""


def collective_timeout():
    """Seconds a single collective may wait before the run is aborted (env DISTCAFFE_COLLECTIVE_TIMEOUT)."""
    return float(os.environ.get("DISTCAFFE_COLLECTIVE_TIMEOUT", "45"))


def first_collective_timeout():
    """Bound of the first iteration's gradient collectives (env DISTCAFFE_FIRST_COLLECTIVE_TIMEOUT, default
    600 s): every rank first compiles its GPU kernels, minutes on a cold shared cache; a dead peer is still
    found by the heartbeat within heartbeat_timeout()."""
    return max(collective_timeout(), float(os.environ.get("DISTCAFFE_FIRST_COLLECTIVE_TIMEOUT", "600")))


def heartbeat_timeout():
    """Seconds of silence after which a peer counts as lost (env DISTCAFFE_HEARTBEAT_TIMEOUT)."""
    return float(os.environ.get("DISTCAFFE_HEARTBEAT_TIMEOUT", "15"))


class Request:
    """A pending collective; `wait()` returns when it is done or raises CollectiveError."""

    def test(self):
        raise NotImplementedError

    def wait(self, timeout=None, what="allreduce"):
        """Poll until done, checking `self.check()` (liveness) and the deadline between polls.

        `timeout` None means collective_timeout(); float("inf") means only liveness bounds the wait."""
        limit = collective_timeout() if timeout is None else timeout
        deadline = time.monotonic() + limit
        pause = 0.0
        while not self.test():
            self.check()
            if time.monotonic() > deadline:
                raise CollectiveError("%s did not complete within %.0f s: a peer rank is lost or hung" % (what, limit))
            time.sleep(pause)
            pause = min(0.002, pause + 0.0001)

    def check(self):
        """Raise CollectiveError when the communicator knows a peer is lost (default: nothing known)."""


class DoneRequest(Request):
    """An already completed request (world size 1, or blocking backends)."""

    def test(self):
        return True


class Communicator:
    """rank/size/local_rank plus in-place collectives on contiguous arrays; see module docstring."""

    name = "base"
    reduces_fp16 = False          # True: fp16 buffers are summed natively (NCCL), so fp16 gradients stay fp16

    def __init__(self, rank, size, local_rank=0, local_size=1):
        self.rank, self.size = int(rank), int(size)
        self.local_rank, self.local_size = int(local_rank), int(local_size)

    def iallreduce(self, buf):
        """Start an in-place sum of `buf` over all ranks; returns a Request."""
        raise NotImplementedError

    def allreduce(self, buf):
        """Blocking in-place sum of `buf` over all ranks."""
        self.iallreduce(buf).wait()
        return buf

    def broadcast(self, buf, root=0):
        """Copy root's `buf` into every rank's `buf`, in place."""
        raise NotImplementedError

    def barrier(self, timeout=float("inf")):
        """Wait for every rank; by default only liveness (the heartbeat) bounds the wait."""
        raise NotImplementedError

    def share(self, obj, root=0):
        """Root's picklable `obj` on every rank (e.g. an NCCL unique id)."""
        raise NotImplementedError

    def allgather(self, obj):
        """Every rank's picklable `obj`, as a list indexed by rank, on every rank (small objects only)."""
        raise NotImplementedError

    def abort(self, message, code=1):
        """Stop every rank of the job now, with `message` on this rank's stderr."""
        raise NotImplementedError

    def sum_scalar(self, value):
        """Sum of a float over ranks (for throughput and timing reports)."""
        arr = np.array([value], np.float64)
        self.allreduce(arr)
        return float(arr[0])

    def close(self):
        """Release resources at the end of a run (after a final barrier)."""
