"""AdaGradSolver (Caffe type "AdaGrad"): Caffe's AdaGradSolver::ComputeUpdateValue."""
from .. import backend
from ..errors import SolverError
from .sgd import F32, SGDSolver, as_f32


class AdaGradSolver(SGDSolver):
    """h += g^2; step = lr * g / (sqrt(h) + delta)."""

    type = "AdaGrad"

    def pre_solve(self):
        if self.param.momentum != 0:
            raise SolverError("%s: momentum cannot be used with AdaGrad" % self._where)
        super().pre_solve()

    def compute_update_value(self, i, g, local_rate):
        xp = backend.xp()
        h = self.hist(i)
        h += g * g
        self.set_hist(i, h)
        g[...] = as_f32(local_rate) * (g / (xp.sqrt(h) + F32(self.param.delta)))
