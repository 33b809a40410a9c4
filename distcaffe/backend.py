"""Array module and device selection: numpy on CPU, cupy on GPU, plus the precision types.

Layers never import numpy or cupy for their math; they use `xp()` (or `Layer.xp`), so one
implementation serves both. cupy is optional: nothing here imports it until GPU mode is asked for.
"""
import contextlib
import threading

import numpy as np

from .errors import CaffeError

CPU, GPU = 0, 1

# Precision types by name (NVCaffe's `Type` enum names) -> numpy dtypes.
DTYPES = {"DOUBLE": np.float64, "FLOAT": np.float32, "FLOAT16": np.float16}


class _State(threading.local):
    """Per-thread mode/device, like Caffe's thread-local Caffe::Get()."""

    def __init__(self):
        self.mode = CPU
        self.device = 0
        self.rng = np.random.default_rng()
        self.pending = []                 # device-side checks not yet read (check_later)


_state = _State()
_cupy = None


def cupy():
    """Import cupy on first use; a clear error when it (or a device) is missing."""
    global _cupy
    if _cupy is None:
        try:
            import cupy as cp
        except ImportError as e:
            raise CaffeError("GPU mode needs cupy: pip install 'distcaffe[gpu-cuda12]' or '[gpu-cuda13]' (the node's CUDA major) (%s)" % e) from None
        if not cp.is_available():
            raise CaffeError("GPU mode asked for, but cupy sees no CUDA device")
        _cupy = cp
    return _cupy


def gpu_available():
    """True when cupy imports and sees at least one CUDA device."""
    try:
        import cupy as cp
        return bool(cp.is_available())
    except Exception:
        return False


def nccl_module():
    """cupy's NCCL binding when NCCL itself is usable, else None. cupy >= 14 always imports `cupy.cuda.nccl`
    (a stub whose `available` is False when libnccl is missing); older cupy fails the import instead."""
    try:
        from cupy.cuda import nccl
    except ImportError:
        return None
    return nccl if getattr(nccl, "available", True) else None


def gpu_count():
    if not gpu_available():
        return 0
    return cupy().cuda.runtime.getDeviceCount()


def set_mode_cpu():
    _state.mode = CPU


def set_mode_gpu():
    cupy()
    _state.mode = GPU
    cupy().cuda.Device(_state.device).use()


def set_device(device_id):
    _state.device = int(device_id)
    if _state.mode == GPU:
        cupy().cuda.Device(_state.device).use()


def device():
    """The device id set_device chose (used in GPU mode)."""
    return _state.device


def mode():
    return _state.mode


def is_gpu():
    return _state.mode == GPU


def xp():
    """The array module of the current mode: numpy (CPU) or cupy (GPU)."""
    return cupy() if _state.mode == GPU else np


def to_host(arr):
    """A numpy array for any array of either module (no copy for numpy)."""
    if isinstance(arr, np.ndarray):
        return arr
    return arr.get()


def host_empty(size, dtype):
    """An uninitialised flat host buffer: page-locked (cupyx.empty_pinned) in GPU mode, so device copies
    of it can be asynchronous; plain numpy memory on CPU."""
    if _state.mode == GPU:
        import cupyx
        return cupyx.empty_pinned((int(size),), dtype)
    return np.empty(int(size), dtype)


def set_random_seed(seed):
    """Seed the framework RNG (fillers, dropout, data shuffles); Caffe's `random_seed`."""
    _state.rng = np.random.default_rng(int(seed))
    if _state.mode == GPU:
        cupy().random.seed(int(seed))


# Caffe::solver_count / solver_rank / multiprocess: set per process by pycaffe's multi-GPU scripts
# (python/train.py); the rank decides which solver is the root (tests, snapshots, INFO lines).
_solvers = {"count": 1, "rank": 0, "multiprocess": False}


def solver_count():
    return _solvers["count"]


def set_solver_count(count):
    _solvers["count"] = int(count)


def solver_rank():
    return _solvers["rank"]


def set_solver_rank(rank):
    _solvers["rank"] = int(rank)


def multiprocess():
    return _solvers["multiprocess"]


def set_multiprocess(value):
    _solvers["multiprocess"] = bool(value)


def rng():
    """The host RNG of this thread (numpy Generator)."""
    return _state.rng


def dtype_of(type_value, default=np.float32):
    """numpy dtype for a caffe_pb2.Type enum value (or its name); `default` when unset/None."""
    if type_value is None:
        return default
    if not isinstance(type_value, str):
        from .proto import caffe_pb2
        type_value = caffe_pb2.Type.Name(type_value)
    if type_value not in DTYPES:
        raise CaffeError("precision type %s is not supported (use FLOAT, FLOAT16 or DOUBLE)" % type_value)
    return DTYPES[type_value]


def accum_dtype(dtype):
    """Dtype sums, squares and normalisers accumulate in: fp32 for fp16 (NVCaffe's BN, softmax, losses, LRN
    and reductions never accumulate in half), the dtype itself otherwise."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.float16 else np.dtype(dtype)


def matmul(a, b):
    """a @ b; fp16 operands give an fp16 product accumulated in fp32 on both devices (cuBLAS's fp16 GEMM
    with fp32 compute on a GPU; an fp32 GEMM rounded to fp16 on numpy, which has no fp16 BLAS)."""
    if type(a) is np.ndarray and a.dtype == np.float16 and b.dtype == np.float16:
        return (a.astype(np.float32) @ b.astype(np.float32)).astype(np.float16)
    return a @ b


_blas_pools = None


def _pools():
    global _blas_pools
    if _blas_pools is None:
        from threadpoolctl import ThreadpoolController
        _blas_pools = ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas_pools


def blas_threads():
    """How many threads numpy's BLAS runs a GEMM with now (threadpoolctl; 1 when it finds no BLAS)."""
    return max([pool.get_num_threads() for pool in _pools()] or [1])


@contextlib.contextmanager
def one_blas_thread():
    """numpy's BLAS runs each GEMM on its calling thread inside the block, so that several threads may each
    run their own (a layer split over runs of images); the pool sizes come back after it."""
    pools = _pools()
    before = [pool.get_num_threads() for pool in pools]
    for pool in pools:
        pool.set_num_threads(1)
    try:
        yield
    finally:
        for pool, n in zip(pools, before):
            pool.set_num_threads(n)


# --- checks that would need a host sync on a GPU -------------------------------------------------------
def check_later(bad, make_error):
    """Raise `make_error()` if the device boolean `bad` is true. On CPU at once; in GPU mode the flag is
    kept and read at the next `flush_checks()` (the solver's display/snapshot/end), so an iteration needs
    no host sync for label or loss checks."""
    if _state.mode != GPU:
        if bool(bad):
            raise make_error()
        return
    _state.pending.append((bad, make_error))


def flush_checks():
    """Read every pending device check (one sync for all of them); raise the first that failed."""
    checks, _state.pending = _state.pending, []
    if not checks:
        return
    flags = to_host(xp().stack([xp().asarray(b).reshape(()) for b, _ in checks]))
    for flag, (_, make_error) in zip(flags, checks):
        if flag:
            raise make_error()
