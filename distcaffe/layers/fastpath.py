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
_full_width = None     # full_width_vectors(), once looked up
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
                full_width_vectors()            # (first: numba's decorators make its target machine)
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


def full_width_vectors():
    """True when numba's LLVM fills 512-bit registers, as this sets up on an AVX-512 CPU: its tuning for those
    CPUs prefers 256-bit vectors, and the tiled convolution's sums then ran on ymm registers (2 threads on the
    12-04 Xeon: CIFAR-10 quick conv2 forward 5.85 -> 4.54 ms, ResNet-50's 3x3 of 64 channels 10.3 -> 8.6). The
    width moves no numbers: nothing is reassociated. NUMBA_CPU_FEATURES, when set, is the user's choice and
    left as it is. numba makes its target machine once a process, at its first decorated function: this makes
    it here, and reads the features it was made with (a process that used numba before keeps LLVM's choice)."""
    global _full_width
    if _full_width is None:
        from numba.core import config
        from numba.core.registry import cpu_target
        if config.CPU_FEATURES is None:
            import llvmlite.binding as llvm
            features = llvm.get_host_cpu_features()
            if features.get("avx512f"):
                config.CPU_FEATURES = features.flatten() + ",-prefer-256-bit"
        made = getattr(cpu_target.target_context.codegen(), "_tm_features", None)   # (numba 0.60-0.68)
        flags = ((config.CPU_FEATURES if made is None else made) or "").split(",")
        _full_width = "+avx512f" in flags and "-prefer-256-bit" in flags
    return _full_width
