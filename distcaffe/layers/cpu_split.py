"""Split a layer's compiled CPU loops over as many threads as numpy's BLAS runs with, so that a rank given 2+
threads speeds up its pooling, col2im and fused elementwise loops too, not only its GEMMs.

Each part is a disjoint slice of the outputs, computed by the same code in the same order, so the numbers do not
depend on the thread count. Parts run on a small thread pool (the caller takes the first part itself); numba's
loops are compiled nogil. Plain numpy passes are not split: on the 2-core development VM a second thread added
nothing to a memory-bound add of 16 MB or more, and a hand-off costs ~130 us (benchmarks/RESULTS.md).
OpenBLAS's idle threads spin for 2^28 cycles after each GEMM and would take the core from a part, so
`import distcaffe` (before numpy loads) shortens that spin unless OPENBLAS_THREAD_TIMEOUT is set.
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from .. import backend

# Elements per part below which the caller does everything itself (a hand-off to the pool costs ~130 us here;
# interleaved A/B at 2 threads: GoogLeNet 1091 ms at 2^16, 1118 at 2^20, 1211 unsplit).
MIN_PART = 1 << 16

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


def parts(n, work, threads=None):
    """[lo, hi) parts of range(n) for up to `threads` threads (the BLAS pool's size), none under MIN_PART
    elements of `work`; one part on a pool thread (no nesting) or for small work."""
    threads = backend.blas_threads() if threads is None else threads
    count = max(1, min(threads, n, work // MIN_PART))
    if count == 1 or getattr(_inside, "pool", False):
        return [(0, n)]
    step, extra = divmod(n, count)
    out, lo = [], 0
    for i in range(count):
        hi = lo + step + (1 if i < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


def run(fn, n, work, threads=None):
    """Call fn(lo, hi) for the parts of range(n) (`work`: elements the whole call touches; `threads`: the
    BLAS pool's size unless given), concurrently; returns when every part is done, raising a failed part's
    exception."""
    pieces = parts(n, work, threads)
    if len(pieces) == 1:
        fn(0, n)
        return
    pool = _executor(len(pieces) - 1)
    futures = [pool.submit(fn, lo, hi) for lo, hi in pieces[1:]]
    try:
        fn(*pieces[0])
    finally:
        for f in futures:
            f.result()
