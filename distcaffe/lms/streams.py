"""Copy engines of Large Model Support: the arena's memory, persistent host buffers, and host<->device copies
on a side stream ordered by events.

- `CupyMover` (GPU): a cupy arena, pinned host buffers, copies on a non-blocking side stream; compute waits on a
  copy's event, never the host.
- `HostMover` (CPU): numpy holds the "device" arena; a copy in is queued and only lands when someone waits on
  its event, as on a real side stream. With `poison` the destination reads NaN (all bits set) until then, so a
  buffer read before its event is caught.
- `DryMover`: no memory at all; runs the same policy to predict the transfers of a schedule.
"""
import numpy as np


class _Counts:
    def __init__(self):
        self.counts = {"h2d": 0, "d2h": 0, "h2d_bytes": 0, "d2h_bytes": 0}

    def _count(self, kind, nbytes):
        self.counts[kind] += 1
        self.counts[kind + "_bytes"] += int(nbytes)


class DryMover(_Counts):
    """Counts the copies the policy asks for; moves nothing."""

    def __init__(self, capacity=0):
        super().__init__()

    def view(self, off, size, dtype):
        return None

    def host_buffer(self, size, dtype):
        return None

    def h2d(self, dev, host, nbytes):
        self._count("h2d", nbytes)

    def d2h(self, host, dev, nbytes):
        self._count("d2h", nbytes)

    def done(self, event):
        return True

    def compute_wait(self, event):
        pass

    synchronize = compute_wait

    def side_after_compute(self):
        pass


class HostMover(_Counts):
    """numpy as the device: copies in land when their event is waited on (FIFO, like one stream)."""

    def __init__(self, capacity, poison=False):
        super().__init__()
        self.arena = np.zeros(int(capacity), np.uint8)
        self.poison = poison
        self._queue = []        # (event, dev, host) copies in not yet landed
        self._issued = 0
        self._landed = 0

    def view(self, off, size, dtype):
        dtype = np.dtype(dtype)
        return self.arena[off:off + size * dtype.itemsize].view(dtype)

    def host_buffer(self, size, dtype):
        return np.zeros(int(size), dtype)

    def h2d(self, dev, host, nbytes):
        self._count("h2d", nbytes)
        self._issued += 1
        if self.poison:
            dev.view(np.uint8).fill(0xFF)     # all bits set: NaN in every float type
        self._queue.append((self._issued, dev, host))
        return self._issued

    def d2h(self, host, dev, nbytes):
        self._count("d2h", nbytes)
        self._drain(self._issued)
        host[...] = dev
        return self._issued

    def _drain(self, event):
        while self._queue and self._queue[0][0] <= event:
            ev, dev, host = self._queue.pop(0)
            dev[...] = host
            self._landed = ev

    def done(self, event):
        return event is None or event <= self._landed

    def compute_wait(self, event):
        if event is not None:
            self._drain(event)

    synchronize = compute_wait

    def side_after_compute(self):
        pass                     # numpy compute is synchronous: nothing queued to wait for


class CupyMover(_Counts):
    """cupy arena, pinned host buffers, copies on a side stream; compute waits on events."""

    def __init__(self, capacity, poison=False):
        super().__init__()
        from .. import backend
        cp = self.cp = backend.cupy()
        import cupyx
        self._pinned = cupyx.empty_pinned
        self.arena = cp.empty(int(capacity), cp.uint8)
        self.side = cp.cuda.Stream(non_blocking=True)
        self.poison = poison

    def view(self, off, size, dtype):
        dtype = np.dtype(dtype)
        return self.arena[off:off + size * dtype.itemsize].view(dtype)

    def host_buffer(self, size, dtype):
        buf = self._pinned(int(size), dtype)
        buf[...] = 0
        return buf

    def _record(self, stream):
        ev = self.cp.cuda.Event(disable_timing=True)
        ev.record(stream)
        return ev

    def h2d(self, dev, host, nbytes):
        self._count("h2d", nbytes)
        if self.poison:
            with self.side:
                dev.view(self.cp.uint8).fill(0xFF)
        dev.set(host, stream=self.side)
        return self._record(self.side)

    def d2h(self, host, dev, nbytes):
        self._count("d2h", nbytes)
        dev.get(stream=self.side, out=host, blocking=False)
        return self._record(self.side)

    def done(self, event):
        return event is None or event.done

    def compute_wait(self, event):
        if event is not None:
            self.cp.cuda.get_current_stream().wait_event(event)

    def synchronize(self, event):
        if event is not None:
            event.synchronize()

    def side_after_compute(self):
        """Order the next side-stream copies after every kernel queued so far (chunks they reuse are free)."""
        self.side.wait_event(self._record(self.cp.cuda.get_current_stream()))
