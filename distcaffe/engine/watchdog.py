"""Liveness for MPI jobs: a heartbeat thread per rank on its own communicator, arranged in a ring.

Each rank sends a tiny message to its successor every `interval` seconds and watches its predecessor;
when the predecessor is silent for `timeout` seconds it is declared lost and `on_lost(rank, silence)`
runs (the MPI communicator aborts the whole job there). A ring costs O(1) messages per rank at any
scale and still notices every death: the dead rank's successor does.
"""
import threading
import time

import numpy as np

_TAG = 7077


class RingHeartbeat:
    """Background heartbeat on `comm` (an mpi4py communicator it duplicates for itself)."""

    def __init__(self, comm, timeout, on_lost, interval=None):
        self.comm = comm.Dup()
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.succ, self.pred = (self.rank + 1) % self.size, (self.rank - 1) % self.size
        self.timeout = float(timeout)
        self.interval = interval if interval is not None else max(0.05, min(1.0, self.timeout / 10))
        self.on_lost = on_lost
        self.lost = None
        self._stop = threading.Event()
        self._token = np.zeros(1, np.int64)
        self._inbox = np.zeros(1, np.int64)
        self._thread = threading.Thread(target=self._run, name="distcaffe-heartbeat", daemon=True)

    def start(self):
        if self.size > 1:
            self._thread.start()
        return self

    def _run(self):
        recv = self.comm.Irecv(self._inbox, source=self.pred, tag=_TAG)
        sends = []
        heard = last_send = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last_send >= self.interval:
                try:
                    sends.append(self.comm.Isend(self._token, dest=self.succ, tag=_TAG))
                except Exception:  # the successor's connection is gone: its own successor will report it
                    pass
                last_send = now
            sends = [s for s in sends if not _test(s, True)]
            try:
                while recv.Test():
                    heard = now
                    recv = self.comm.Irecv(self._inbox, source=self.pred, tag=_TAG)
            except Exception:  # MPI reports the predecessor's connection broken: it is lost now
                heard = now - self.timeout - 1
            if now - heard > self.timeout:
                self.lost = self.pred
                self.on_lost(self.pred, now - heard)
                return
            self._stop.wait(min(0.05, self.interval))
        recv.Cancel()
        recv.Wait()

    def stop(self):
        """Stop beating; call only after a barrier that every rank passed (so silence means done, not dead)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)


def _test(request, on_error):
    """request.Test(), or `on_error` when MPI reports a broken peer."""
    try:
        return request.Test()
    except Exception:
        return on_error
