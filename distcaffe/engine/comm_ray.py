"""Ray communicators inside an actor. CPU jobs use ray.util.collective's GLOO backend (torch.distributed; the
`ray-cpu` extra); GPU jobs use engine.comm_nccl over a RayBootstrap, which only shares the NCCL id and does
barriers/gathers through Ray's key-value store, so a GPU job needs neither torch nor GLOO.

ray.util.collective calls block, so they run in order on one communication thread: a bucket's allreduce
still overlaps the rest of backward (numpy and the collective both release the GIL). GLOO's own timeout
bounds every call; the driver (launcher/ray_launch.py) notices a dead actor and stops the others.
"""
import time
from concurrent.futures import ThreadPoolExecutor

from .communicator import CollectiveError, Communicator, Request, collective_timeout


class _FutureRequest(Request):
    def __init__(self, future, what):
        self.future, self.what = future, what

    def test(self):
        if not self.future.done():
            return False
        err = self.future.exception()
        if err is not None:
            raise CollectiveError("Ray collective %s failed: %s (a peer actor is probably lost)" % (self.what, err))
        return True


class RayBootstrap(Communicator):
    """What a GPU job needs from Ray when NCCL carries the gradients: sharing the NCCL id, gathers, barriers
    and small host reductions, all through Ray's key-value store (no GLOO, so no torch)."""

    name = "ray-bootstrap"

    def __init__(self, rank, size, group, local_rank=0, local_size=1):
        super().__init__(rank, size, local_rank, local_size)
        self.group = group
        self._gathers = 0

    def share(self, obj, root=0, key=None):
        """Root's picklable `obj` on every rank, through Ray's internal key-value store."""
        import pickle

        from ray.experimental import internal_kv
        key = "distcaffe/%s/%s" % (self.group, key or "share")
        if self.rank == root:
            internal_kv._internal_kv_put(key, pickle.dumps(obj), overwrite=True)
            return obj
        deadline = time.monotonic() + collective_timeout()
        while time.monotonic() < deadline:
            value = internal_kv._internal_kv_get(key)
            if value is not None:
                return pickle.loads(value)
            time.sleep(0.05)
        raise CollectiveError("rank %d: no value for %s from rank %d within %.0f s" % (self.rank, key, root,
                                                                                       collective_timeout()))

    def allgather(self, obj):
        """Each rank shares its `obj` in turn (keys unique per call, so an earlier gather is never read)."""
        self._gathers += 1
        return [self.share(obj, root=r, key="gather/%d/%d" % (self._gathers, r)) for r in range(self.size)]

    def barrier(self, timeout=float("inf")):
        self.allgather(None)

    def allreduce(self, buf):
        """Sum of a small host array over the ranks, in place (signal flags, reports)."""
        buf[...] = sum(self.allgather(buf))
        return buf

    def broadcast(self, buf, root=0):
        buf[...] = self.share(buf if self.rank == root else None, root, key="bcast/%d" % self._next_key())
        return buf

    def _next_key(self):
        self._gathers += 1
        return self._gathers

    def iallreduce(self, buf):
        raise CollectiveError("the Ray bootstrap carries no gradients (NCCL does; CPU jobs use GLOO)")

    def abort(self, message, code=1):
        """Fail this actor's task; the driver then stops every other actor and names this rank."""
        raise CollectiveError("rank %d: %s" % (self.rank, message))


class RayCommunicator(RayBootstrap):
    """GLOO collectives among the actors of one job (`group` names the collective group): the CPU path."""

    name = "ray"

    def __init__(self, rank, size, group, local_rank=0, local_size=1):
        super().__init__(rank, size, group, local_rank, local_size)
        try:
            import ray.util.collective as col
        except ImportError as e:
            raise CollectiveError("Ray training needs ray: pip install 'distcaffe[ray-cpu]' (%s)" % e) from None
        if not col.gloo_available():
            raise CollectiveError("Ray's GLOO collectives need torch: pip install 'distcaffe[ray-cpu]'")
        self.col = col
        col.init_collective_group(size, rank, backend="gloo", group_name=group,
                                  gloo_timeout=int(collective_timeout() * 1000))
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="distcaffe-ray-comm")

    def _submit(self, what, fn, *args):
        return _FutureRequest(self._pool.submit(fn, *args), what)

    def iallreduce(self, buf):
        return self._submit("allreduce", self.col.allreduce, buf, self.group)

    def allreduce(self, buf):
        """Through GLOO (not the key-value store the bootstrap uses)."""
        return Communicator.allreduce(self, buf)

    def broadcast(self, buf, root=0):
        self._submit("broadcast", self.col.broadcast, buf, root, self.group).wait(what="broadcast")
        return buf

    def barrier(self, timeout=float("inf")):
        self._submit("barrier", self.col.barrier, self.group).wait(timeout, "barrier")
