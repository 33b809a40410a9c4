"""AdamSolver (Caffe type "Adam"): Caffe's AdamSolver::ComputeUpdateValue. History holds the first moments,
then (offset by the param count) the second moments."""
import math

from .. import backend
from .sgd import F32, SGDSolver, as_f32


class AdamSolver(SGDSolver):
    """m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2; step = lr*sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v)+delta)."""

    type = "Adam"
    history_sets = 2

    def compute_update_value(self, i, g, local_rate):
        xp = backend.xp()
        b1, b2 = self.param.momentum, self.param.momentum2
        n = len(self.net.learnable_params)
        t = self.iter + 1
        correction = math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        m, v = self.hist(i), self.hist(n + i)
        m *= F32(b1)
        m += F32(1 - b1) * g
        v *= F32(b2)
        v += F32(1 - b2) * (g * g)
        self.set_hist(i, m)
        self.set_hist(n + i, v)
        g[...] = as_f32(local_rate * correction) * (m / (xp.sqrt(v) + F32(self.param.delta)))
