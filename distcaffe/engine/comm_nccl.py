"""NCCL communicator (GPU): cupy.cuda.nccl on device buffers, on its own CUDA stream.

The unique id is made by rank 0 and shared by a bootstrap communicator (MPI or Ray) that also provides
barriers and liveness (the MPI heartbeat aborts the job when a rank dies, so a hung NCCL kernel never
hangs the job). cupy is imported only here, only when a GPU run asks for NCCL.
"""
import numpy as np

from .. import backend
from .communicator import CollectiveError, Communicator, Request


def _nccl_dtype(nccl, dtype):
    table = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64,
             np.dtype(np.float16): nccl.NCCL_FLOAT16}
    try:
        return table[np.dtype(dtype)]
    except KeyError:
        raise CollectiveError("NCCL cannot reduce %s buffers" % np.dtype(dtype).name) from None


class _EventRequest(Request):
    """Done when the CUDA event recorded after the collective has fired; later work on the compute stream
    is ordered after it on completion."""

    def __init__(self, comm, event):
        self.comm, self.event = comm, event

    def test(self):
        if not self.event.done:
            return False
        self.comm.cupy.cuda.get_current_stream().wait_event(self.event)
        return True

    def check(self):
        self.comm.bootstrap_check()
        try:
            self.comm.nccl_comm.check_async_error()
        except Exception as e:
            raise CollectiveError("NCCL error on rank %d: %s" % (self.comm.rank, e)) from None


class NCCLCommunicator(Communicator):
    """Collectives over NCCL for one device per process; `bootstrap` has share(), barrier(), abort()."""

    name = "nccl"
    reduces_fp16 = True

    def __init__(self, bootstrap, device):
        super().__init__(bootstrap.rank, bootstrap.size, bootstrap.local_rank, bootstrap.local_size)
        import cupy
        nccl = backend.nccl_module()
        if nccl is None:
            raise CollectiveError("-comm nccl: cupy has no usable NCCL on this node (pip install "
                                  "'distcaffe[gpu-cuda12]' or '[gpu-cuda13]' to get nvidia-nccl), or use -comm mpi")
        self.cupy, self.nccl, self.bootstrap = cupy, nccl, bootstrap
        cupy.cuda.Device(device).use()
        uid = bootstrap.share(nccl.get_unique_id() if self.rank == 0 else None)
        self.nccl_comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self.stream = cupy.cuda.Stream(non_blocking=True)

    def bootstrap_check(self):
        hb = getattr(self.bootstrap, "heartbeat", None)
        if hb is not None and hb.lost is not None:
            raise CollectiveError(self.bootstrap.lost_message().strip("; "))

    def _after_compute(self):
        """Make the communication stream wait for the work queued so far on the compute stream."""
        ready = self.cupy.cuda.Event(disable_timing=True)
        ready.record(self.cupy.cuda.get_current_stream())
        self.stream.wait_event(ready)

    def _done_event(self):
        done = self.cupy.cuda.Event(disable_timing=True)
        done.record(self.stream)
        return _EventRequest(self, done)

    def iallreduce(self, buf):
        self._after_compute()
        self.nccl_comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, _nccl_dtype(self.nccl, buf.dtype),
                                 self.nccl.NCCL_SUM, self.stream.ptr)
        return self._done_event()

    def broadcast(self, buf, root=0):
        if isinstance(buf, np.ndarray):
            return self.bootstrap.broadcast(buf, root)
        self._after_compute()
        self.nccl_comm.bcast(buf.data.ptr, buf.size, _nccl_dtype(self.nccl, buf.dtype), root, self.stream.ptr)
        self._done_event().wait(what="broadcast")
        return buf

    def allreduce(self, buf):
        """Host arrays (small reports) go through the bootstrap; device arrays through NCCL."""
        if isinstance(buf, np.ndarray):
            return self.bootstrap.allreduce(buf)
        return super().allreduce(buf)

    def barrier(self, timeout=float("inf")):
        self.bootstrap.barrier(timeout)

    def allgather(self, obj):
        return self.bootstrap.allgather(obj)

    def abort(self, message, code=1):
        try:
            self.nccl_comm.abort()
        finally:
            self.bootstrap.abort(message, code)

    def close(self):
        self.stream.synchronize()
        self.bootstrap.close()
        self.nccl_comm.destroy()
