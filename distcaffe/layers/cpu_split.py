"""Split a layer's compiled CPU loops over as many threads as numpy's BLAS runs with, so that a rank given 2+
threads speeds up its pooling, col2im and fused elementwise loops too, not only its GEMMs.

Each piece is a disjoint slice of the outputs, computed by the same code in the same order, so the numbers do not
depend on the thread count or on which thread takes it. Pieces run on a small thread pool (the caller takes its
share too); numba's loops are compiled nogil. Some plain numpy passes are split too (`over_axis`,
`elementwise`: ufuncs and einsum release the GIL): ReLU's forward, Eltwise's and Split's sums, Scale's bottom diff
and the per-channel sums of BatchNorm, Scale and Bias (ResNet-50 at 2 threads, 12-04: 1.00 -> 1.5-1.7 threads busy
in them, their wall 30 ms of ~420 less; a 25 MB multiply alone 4.9 -> 2.5 ms). A hand-off costs ~130 us.
OpenBLAS's idle threads spin for 2^28 cycles after each GEMM and would take the core from a part, so
`import distcaffe` (before numpy loads) shortens that spin unless OPENBLAS_THREAD_TIMEOUT is set.
"""
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import backend

# Elements per thread below which the caller does everything itself (a hand-off to the pool costs ~130 us here;
# interleaved A/B at 2 threads: GoogLeNet 1091 ms at 2^16, 1118 at 2^20, 1211 unsplit).
MIN_PART = 1 << 16
# Pieces a thread of a compiled loop's split (a convolution's runs are one piece each). Interleaved A/B at 2
# threads against even halves (Zen 4 VM, 12-03; medians of round medians): 2 pieces CIFAR-10 quick 132.5 ->
# 123.8 ms, LeNet 22.3 -> 22.2, GoogLeNet 1231 -> 1185; 4 pieces CIFAR-10 quick level, LeNet 19.8 -> 21.1.
PIECES_PER_THREAD = 2

_pool = None
_pool_key = None
_lock = threading.Lock()
_inside = threading.local()


def _executor(workers):
    """This process's pool, of at least `workers` threads (grown when a call needs more; a forked child makes
    its own: the parent's threads are not in it)."""
    global _pool, _pool_key
    with _lock:
        pid, size = _pool_key or (None, 0)
        if pid != os.getpid() or size < workers:
            if pid == os.getpid():
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(workers, thread_name_prefix="distcaffe-split", initializer=_mark)
            _pool_key = (os.getpid(), workers)
        return _pool


def _mark():
    _inside.pool = True


def _even(n, count):
    """range(n) as `count` [lo, hi) slices whose sizes differ by at most one."""
    step, extra = divmod(n, count)
    out, lo = [], 0
    for i in range(count):
        hi = lo + step + (1 if i < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


def _thread_count(n, work, threads=None):
    """Threads for range(n): up to `threads` (the BLAS pool's size), none with under MIN_PART elements of
    `work`; 1 on a pool thread (no nesting) or for small work."""
    threads = backend.blas_threads() if threads is None else threads
    count = max(1, min(threads, n, work // MIN_PART))
    return 1 if getattr(_inside, "pool", False) else count


def parts(n, work, threads=None):
    """range(n) in even [lo, hi) parts, one for each thread `run` would use."""
    return _even(n, _thread_count(n, work, threads))


def run(fn, n, work, threads=None, pieces=None):
    """Call fn(lo, hi) over range(n) on the threads `_thread_count` gives (`work`: elements the whole call touches;
    `threads`: the BLAS pool's size unless given); returns when all is done, raising a failed piece's
    exception. The range is cut into up to PIECES_PER_THREAD pieces a thread (`pieces` when given: one per
    run of a convolution), which the threads take in order as each finishes its last, so a core that is
    slower or shared with another process takes fewer (even halves waited on it: on this VM's second core,
    ~1.4x slower at times, a MAX pooling loop ran 6.1 ms a half alone and 7.4-8.9 ms the pair)."""
    count = _thread_count(n, work, threads)
    if count == 1:
        fn(0, n)
        return
    if pieces is None:
        pieces = max(count, min(n, count * PIECES_PER_THREAD, work // max(1, MIN_PART // PIECES_PER_THREAD)))
    bounds = _even(n, pieces)
    claim = itertools.count()

    def take():
        i = next(claim)
        while i < len(bounds):
            fn(*bounds[i])
            i = next(claim)
    pool = _executor(count - 1)
    futures = [pool.submit(take) for _ in range(count - 1)]
    try:
        take()
    finally:
        for f in futures:
            f.result()


def over_planes(loop, split):
    """`loop` run over parts of the leading axis of its first `split` arguments (each part its own planes)."""
    def call(*args):
        arrays, rest = args[:split], args[split:]
        run(lambda lo, hi: loop(*[a[lo:hi] for a in arrays], *rest), arrays[0].shape[0],
            arrays[0].size + arrays[1].size)
    call.__name__, call.__doc__ = loop.__name__.lstrip("_"), loop.__doc__
    return call


def over_axis(fn, axis, *arrays):
    """fn(*parts) on matching parts along `axis` of numpy `arrays` (one of extent 1 there is passed whole, as a
    broadcast operand), split as `run` splits: for numpy's ufuncs, reductions over the other axes and einsum,
    which release the GIL and compute each part's elements as the whole call would (the same bits). Other
    arrays (cupy's) take one fn(*arrays)."""
    if type(arrays[0]) is not np.ndarray:            # cupy's (or a subclass standing in for it)
        fn(*arrays)
        return
    n = arrays[0].shape[axis]
    lead = (slice(None),) * axis
    run(lambda lo, hi: fn(*[a[lead + (slice(lo, hi),)] if a.shape[axis] == n else a for a in arrays]), n,
        sum(a.size for a in arrays))


def elementwise(fn, *arrays):
    """fn(*arrays), an elementwise numpy call on same-size arrays (its output among them), split over parts of
    their flat elements when all are C-contiguous numpy arrays (a 25 MB multiply: 4.9 ms on one thread, 2.5 on
    two); else one call."""
    if all(type(a) is np.ndarray and a.flags.c_contiguous for a in arrays):
        over_axis(fn, 0, *[a.reshape(-1) for a in arrays])
    else:
        fn(*arrays)


def sum_into(xp, dst, first, second, *rest):
    """dst = first + second, then dst += each of `rest` in order (Eltwise's SUM, a Split's diffs), each add split
    as `elementwise` splits; xp's add, so cupy's arrays take one call each."""
    elementwise(lambda a, b, o: xp.add(a, b, out=o), first, second, dst)
    for r in rest:
        elementwise(lambda a, o: xp.add(o, a, out=o), r, dst)


def copy(dst, src):
    """dst[...] = src for arrays of one size, split as `elementwise` splits (the diffs Eltwise's SUM and a lone
    Split hand back: ResNet-50 at 2 threads, Eltwise's backward ran on one thread)."""
    elementwise(_assign, dst, src)


def _assign(dst, src):
    dst[...] = src
