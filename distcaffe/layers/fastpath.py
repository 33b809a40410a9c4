"""Which CPU fast paths apply: numba's compiled loops (`pip install 'distcaffe[fast]'`): window loops (col2im,
pooling, the direct convolution forward), pointwise loops (BatchNorm's, Scale's and ReLU's fused elementwise
steps), LRN's window sums and bottom diff across channels, and the tiled convolution's layout copies.

The loops are used for numpy float32/float64 arrays when numba imports and DISTCAFFE_NUMBA is not 0; otherwise the numpy code
runs, with identical numbers. One exception: the register-tiled convolution (conv_tiles) has no numpy twin, and
without the loops those layers take im2col + GEMM, whose float32 sums round differently. numba is imported on
first use, never by `import distcaffe`.
"""
import importlib
import os

import numpy as np

_modules = None        # None: not looked up yet; False: unavailable or switched off; else {name: module}
NAMES = ("window_loops", "pointwise_loops", "lrn_loops", "layout_loops")


def enabled():
    """True when the compiled loops are switched on (DISTCAFFE_NUMBA unset or not 0) and numba imports."""
    return bool(_lookup())


def _lookup():
    global _modules
    if _modules is None:
        _modules = False
        if os.environ.get("DISTCAFFE_NUMBA", "1") != "0":
            try:
                _modules = {name: importlib.import_module("." + name, __package__) for name in NAMES}
            except ImportError:
                pass
    return _modules


def loops(xp, dtype, name="window_loops"):
    """The compiled loops module `name` for numpy float32/float64 arrays when available, else None (use the
    numpy code; numba has no float16)."""
    if xp is not np or np.dtype(dtype) not in (np.float32, np.float64):
        return None
    modules = _lookup()
    return modules[name] if modules else None


def set_enabled(on):
    """Switch the compiled loops on (if numba imports) or off; returns the previous state (tests, benchmarks)."""
    global _modules
    before = enabled()
    _modules = None if on else False
    if on:
        _lookup()
    return before
