"""Which CPU fast paths apply: numba's compiled window loops (`pip install 'distcaffe[fast]'`).

The loops are used for numpy float32/float64 arrays when numba imports and DISTCAFFE_NUMBA is not 0; otherwise the numpy code
runs, with identical numbers. numba is imported on first use, never by `import distcaffe`.
"""
import os

import numpy as np

_loops = None          # None: not looked up yet; False: unavailable or switched off


def enabled():
    """True when the compiled loops are switched on (DISTCAFFE_NUMBA unset or not 0) and numba imports."""
    return bool(_lookup())


def _lookup():
    global _loops
    if _loops is None:
        _loops = False
        if os.environ.get("DISTCAFFE_NUMBA", "1") != "0":
            try:
                from . import window_loops
                _loops = window_loops
            except ImportError:
                pass
    return _loops


def loops(xp, dtype):
    """The compiled loops module for numpy float32/float64 arrays when available, else None (use the numpy
    code; numba has no float16)."""
    if xp is not np or np.dtype(dtype) not in (np.float32, np.float64):
        return None
    return _lookup() or None


def set_enabled(on):
    """Switch the compiled loops on (if numba imports) or off; returns the previous state (tests, benchmarks)."""
    global _loops
    before = enabled()
    _loops = None if on else False
    if on:
        _lookup()
    return before
