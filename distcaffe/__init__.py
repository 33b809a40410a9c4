"""distcaffe: Caffe rebuilt in Python, cluster first. `import distcaffe as caffe` works like pycaffe.

Every name loads on first use, so `import distcaffe.launcher.cli` pays for no numpy before the command has
sized its thread pools, and `import distcaffe` stays light.
"""
import importlib
import os
import sys

# OpenBLAS's idle threads spin for 2^28 cycles after each GEMM (its default), holding the cores that the layers'
# own split work (layers/cpu_split.py) needs between GEMMs: a part run next to a spinning thread took 1.9x as
# long (benchmarks/RESULTS.md). OpenBLAS reads this as it loads, so it is set only before numpy is imported and
# only when the site has not chosen its own.
if "numpy" not in sys.modules:
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")

__version__ = "0.1.0"

# public name -> (module, attribute or None for the module itself)
_LAZY = {
    "backend": (".backend", None), "set_device": (".backend", "set_device"),
    "set_mode_cpu": (".backend", "set_mode_cpu"), "set_mode_gpu": (".backend", "set_mode_gpu"),
    "set_random_seed": (".backend", "set_random_seed"),
    "Blob": (".blob", "Blob"), "CaffeError": (".errors", "CaffeError"),
    "Layer": (".layers", "Layer"), "layer_types": (".layers", "layer_types"),
    "TEST": (".net", "TEST"), "TRAIN": (".net", "TRAIN"), "Net": (".net", "Net"),
    "caffe_pb2": (".proto.caffe_pb2", None),
    "io": (".io", None), "net_spec": (".net_spec", None), "solvers": (".solvers", None),
    "layers": (".layers", None), "proto": (".proto", None), "set_lms": (".lms", "set_lms"),
    # pycaffe's surface (the `caffe` package has all of it; `distcaffe.layers` stays the layer implementations)
    "NetSpec": (".net_spec", "NetSpec"), "to_proto": (".net_spec", "to_proto"), "params": (".net_spec", "params"),
    "layer_type_list": (".layers", "layer_types"), "Timer": (".timer", "Timer"), "init_log": (".log", "init_log"),
    "Classifier": (".classifier", "Classifier"), "Detector": (".detector", "Detector"),
    "draw": (".draw", None), "coord_map": (".coord_map", None),
}
for _name in ("solver_count", "set_solver_count", "solver_rank", "set_solver_rank", "set_multiprocess"):
    _LAZY[_name] = (".backend", _name)
for _name in ("get_solver", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver",
              "AdamSolver", "Solver"):
    _LAZY[_name] = (".solvers", _name)


def __getattr__(name):
    """Resolve a public name on first use and cache it on the module."""
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError("module 'distcaffe' has no attribute '%s'" % name) from None
    value = importlib.import_module(module, __name__)
    value = value if attr is None else getattr(value, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["Blob", "CaffeError", "Layer", "Net", "TEST", "TRAIN", "backend", "caffe_pb2", "layer_types",
           "set_device", "set_mode_cpu", "set_mode_gpu", "set_random_seed"]
