"""Solvers: Caffe's six update rules with NVCaffe's policies, plus pycaffe's `get_solver` and solver classes."""
import os

from ..errors import SolverError
from .adadelta import AdaDeltaSolver
from .adagrad import AdaGradSolver
from .adam import AdamSolver
from .nesterov import NesterovSolver
from .rmsprop import RMSPropSolver
from .sgd import SGDSolver
from .solver import Solver, load_solver_param

SOLVERS = {cls.type: cls for cls in (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver, AdaDeltaSolver,
                                     AdamSolver)}


def solver_class(param, where="solver"):
    """The class for a SolverParameter's `type`; an unknown type names the known ones."""
    cls = SOLVERS.get(param.type)
    if cls is None:
        raise SolverError("%s: unknown solver type '%s' (known types: %s)" % (where, param.type, ", ".join(SOLVERS)))
    return cls


def get_solver(source, **kwargs):
    """pycaffe's caffe.get_solver: a solver of the type the file (or SolverParameter) names."""
    param, _ = load_solver_param(source)
    where = "solver %s" % (os.fspath(source) if not hasattr(source, "DESCRIPTOR") else "<SolverParameter>")
    return solver_class(param, where)(source, **kwargs)


__all__ = ["Solver", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver",
           "AdamSolver", "SOLVERS", "get_solver", "solver_class"]
