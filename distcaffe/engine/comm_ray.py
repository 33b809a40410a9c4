"""Ray communicator: ray.util.collective inside an actor. CPU uses the GLOO backend (torch.distributed; the
`ray-cpu` extra), GPUs use engine.comm_nccl with the unique id shared through Ray's key-value store.

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


class RayCommunicator(Communicator):
    """GLOO collectives among the actors of one job (`group` names the collective group)."""

    name = "ray"

    def __init__(self, rank, size, group, local_rank=0, local_size=1):
        super().__init__(rank, size, local_rank, local_size)
        try:
            import ray.util.collective as col
        except ImportError as e:
            raise CollectiveError("Ray training needs ray: pip install 'distcaffe[ray-cpu]' (%s)" % e) from None
        if not col.gloo_available():
            raise CollectiveError("Ray's GLOO collectives need torch: pip install 'distcaffe[ray-cpu]'")
        self.col, self.group = col, group
        col.init_collective_group(size, rank, backend="gloo", group_name=group,
                                  gloo_timeout=int(collective_timeout() * 1000))
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="distcaffe-ray-comm")

    def _submit(self, what, fn, *args):
        return _FutureRequest(self._pool.submit(fn, *args), what)

    def iallreduce(self, buf):
        return self._submit("allreduce", self.col.allreduce, buf, self.group)

    def broadcast(self, buf, root=0):
        self._submit("broadcast", self.col.broadcast, buf, root, self.group).wait(what="broadcast")
        return buf

    def barrier(self, timeout=float("inf")):
        self._submit("barrier", self.col.barrier, self.group).wait(timeout, "barrier")

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
        self._gathers = getattr(self, "_gathers", 0) + 1
        return [self.share(obj, root=r, key="gather/%d/%d" % (self._gathers, r)) for r in range(self.size)]

    def abort(self, message, code=1):
        """Fail this actor's task; the driver then stops every other actor and names this rank."""
        raise CollectiveError("rank %d: %s" % (self.rank, message))

    def close(self):
        self.barrier()
        self._pool.shutdown(wait=True)
        self.col.destroy_collective_group(self.group)
