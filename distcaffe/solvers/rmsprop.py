"""RMSPropSolver (Caffe type "RMSProp"): Caffe's RMSPropSolver::ComputeUpdateValue."""
from .. import backend
from ..errors import SolverError
from .sgd import F32, SGDSolver, as_f32


class RMSPropSolver(SGDSolver):
    """h = (1-rms_decay)*g^2 + rms_decay*h; step = lr * g / (sqrt(h) + delta)."""

    type = "RMSProp"

    def pre_solve(self):
        if self.param.momentum != 0:
            raise SolverError("%s: momentum cannot be used with RMSProp" % self._where)
        if not 0 <= self.param.rms_decay < 1:
            raise SolverError("%s: rms_decay should lie in [0, 1) (got %g)" % (self._where, self.param.rms_decay))
        super().pre_solve()

    def compute_update_value(self, i, g, local_rate):
        xp = backend.xp()
        decay = self.param.rms_decay
        h = self.hist(i)
        h *= F32(decay)
        h += F32(1 - decay) * (g * g)
        self.set_hist(i, h)
        g[...] = as_f32(local_rate) * (g / (xp.sqrt(h) + F32(self.param.delta)))
