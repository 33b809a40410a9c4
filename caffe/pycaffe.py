"""pycaffe's caffe.pycaffe (with _caffe's classes): Net, Blob, the solvers, Timer, and NCCL mapped onto
distcaffe's engine.

caffe.NCCL serves BVLC's multi-GPU recipe (python/train.py): one process per GPU, each calling
set_device(g), set_solver_count(n), set_solver_rank(r), building its solver, then `nccl = NCCL(solver, uid)`
with a uid from NCCL.new_uid() made once by the parent, `nccl.bcast()` and `solver.add_callback(nccl)`. It
is an NCCL communicator of the engine (cupy's NCCL) and the engine's GradientReducer, which averages the
gradients bucket by bucket while backward still runs (so `net.after_backward(nccl)`, BVLC's layer-wise
reduce, is already what happens). Without a GPU and cupy's NCCL, has_nccl() is False and NCCL raises.
For CPU clusters the launcher does the same over MPI: `mpirun -np N distcaffe train -solver ...`.
"""
import numpy as np

from distcaffe import backend
from distcaffe.blob import Blob
from distcaffe.errors import CaffeError
from distcaffe.net import Net
from distcaffe.solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver, RMSPropSolver, SGDSolver,
                               Solver, get_solver)
from distcaffe.timer import Timer


_UID_BYTES = 128  # NCCL_UNIQUE_ID_BYTES


def has_nccl():
    """True when NCCL can be used here: cupy with its NCCL bindings and a CUDA device."""
    return backend.nccl_module() is not None and backend.gpu_available()


def _need_nccl():
    if not has_nccl():
        raise CaffeError("caffe.NCCL needs CUDA GPUs and cupy with NCCL (pip install 'distcaffe[gpu-cuda12]' or '[gpu-cuda13]'); on CPUs, "
                         "train across processes with `mpirun -np N distcaffe train -solver ...`")
    return backend.nccl_module()


class _UidBootstrap:
    """What the engine's NCCLCommunicator asks of its bootstrap, for ranks that already share a uid
    (BVLC passes it to each process itself); barriers are NCCL allreduces of one value."""

    def __init__(self, uid, rank, size):
        self.uid, self.rank, self.size = uid, rank, size
        self.local_rank, self.local_size = rank, size
        self.comm = None

    def share(self, _value):
        return self.uid

    def barrier(self, timeout=float("inf")):
        self.comm.allreduce(backend.cupy().zeros(1, np.float32))

    def broadcast(self, buf, root=0):
        dev = backend.cupy().asarray(buf)
        self.comm.broadcast(dev, root)
        buf[...] = dev.get()
        return buf

    def allreduce(self, buf):
        dev = backend.cupy().asarray(buf)
        self.comm.allreduce(dev)
        buf[...] = dev.get()
        return buf

    def abort(self, message, code=1):
        raise CaffeError("NCCL rank %d aborted: %s" % (self.rank, message))

    def close(self):
        pass


class NCCL:
    """pycaffe's caffe.NCCL(solver, uid): this process' rank of an NCCL gradient average (see module doc)."""

    def __init__(self, solver, uid):
        _need_nccl()
        from distcaffe.engine.buckets import GradientReducer
        from distcaffe.engine.comm_nccl import NCCLCommunicator
        uid = tuple(b - 256 if b > 127 else b for b in bytes(uid))  # cupy's ids are signed chars
        if len(uid) != _UID_BYTES:
            raise CaffeError("caffe.NCCL: the uid must be the %d bytes NCCL.new_uid() returned (%d bytes given)"
                             % (_UID_BYTES, len(uid)))
        boot = _UidBootstrap(uid, backend.solver_rank(), backend.solver_count())
        self.comm = boot.comm = NCCLCommunicator(boot, backend.device())
        self.solver = solver
        self.reducer = GradientReducer(solver.net, self.comm, solver.net.param.reduce_buckets,
                                       solver.param.iter_size)

    @staticmethod
    def new_uid():
        """A fresh NCCL unique id as bytes, to hand to every rank's NCCL(solver, uid)."""
        return bytes(v % 256 for v in _need_nccl().get_unique_id())

    def bcast(self):
        """Rank 0's weights to every rank (before training starts)."""
        for blob in self.solver.net.learnable_params:
            self.comm.broadcast(blob.mut_dev_data.reshape(-1), 0)

    def on_start(self, solver):
        self.reducer.begin_iteration()

    def on_gradients_ready(self, solver):
        self.reducer.finish(1.0 / self.comm.size)

    def __call__(self, layer_index):
        """`net.after_backward(nccl)`: the reducer already starts each bucket after its last layer."""


__all__ = ["AdaDeltaSolver", "AdaGradSolver", "AdamSolver", "Blob", "NCCL", "Net", "NesterovSolver", "RMSPropSolver",
           "SGDSolver", "Solver", "Timer", "get_solver", "has_nccl"]
