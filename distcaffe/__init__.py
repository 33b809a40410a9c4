"""distcaffe: Caffe rebuilt in Python, cluster first. `import distcaffe as caffe` works like pycaffe."""
from . import backend
from .backend import set_device, set_mode_cpu, set_mode_gpu, set_random_seed
from .blob import Blob
from .errors import CaffeError
from .layers import Layer, layer_types
from .net import TEST, TRAIN, Net
from .proto import caffe_pb2

__version__ = "0.1.0"


def __getattr__(name):
    """Solvers, io, net_spec load lazily so `import distcaffe` stays light."""
    import importlib
    if name in ("io", "net_spec", "solvers", "draw"):
        return importlib.import_module("." + name, __name__)
    if name == "layers":
        from . import layers
        return layers
    if name == "proto":
        from . import proto
        return proto
    solver_names = ("get_solver", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
                    "AdaDeltaSolver", "AdamSolver", "Solver")
    if name in solver_names:
        from . import solvers
        return getattr(solvers, name)
    raise AttributeError("module 'distcaffe' has no attribute '%s'" % name)


__all__ = ["Blob", "CaffeError", "Layer", "Net", "TEST", "TRAIN", "backend", "caffe_pb2", "layer_types",
           "set_device", "set_mode_cpu", "set_mode_gpu", "set_random_seed"]
