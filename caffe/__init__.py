"""pycaffe, as distcaffe: `import caffe` scripts written for BVLC Caffe run unchanged on distcaffe.

The names are BVLC's python/caffe/__init__.py's; each is distcaffe's implementation. `caffe.layers` and
`caffe.params` are NetSpec's layer and parameter builders (`from caffe import layers as L, params as P`);
the framework's own layer implementations stay in `distcaffe.layers`.
"""
from distcaffe import __version__
from distcaffe.backend import (set_device, set_mode_cpu, set_mode_gpu, set_multiprocess, set_random_seed,
                               set_solver_count, set_solver_rank, solver_count, solver_rank)
from distcaffe.layers import Layer
from distcaffe.layers import layer_types as layer_type_list
from distcaffe.lms import set_lms
from distcaffe.log import init_log, log
from distcaffe.proto.caffe_pb2 import TEST, TRAIN

from . import io, proto
from .classifier import Classifier
from .detector import Detector
from .net_spec import NetSpec, layers, params, to_proto
from .pycaffe import (NCCL, AdaDeltaSolver, AdaGradSolver, AdamSolver, Blob, Net, NesterovSolver, RMSPropSolver,
                      SGDSolver, Solver, Timer, get_solver, has_nccl)

__all__ = ["AdaDeltaSolver", "AdaGradSolver", "AdamSolver", "Blob", "Classifier", "Detector", "Layer", "NCCL", "Net",
           "NesterovSolver", "NetSpec", "RMSPropSolver", "SGDSolver", "Solver", "TEST", "TRAIN", "Timer",
           "__version__", "get_solver", "has_nccl", "init_log", "io", "layer_type_list", "layers", "log", "params",
           "proto", "set_device", "set_lms", "set_mode_cpu", "set_mode_gpu", "set_multiprocess", "set_random_seed",
           "set_solver_count", "set_solver_rank", "solver_count", "solver_rank", "to_proto"]
