"""AdaDeltaSolver (Caffe type "AdaDelta"): Caffe's AdaDeltaSolver::ComputeUpdateValue. History holds the
squared-gradient averages, then (offset by the param count) the squared-update averages."""
from .. import backend
from .sgd import F32, SGDSolver, as_f32


class AdaDeltaSolver(SGDSolver):
    """hg = m*hg + (1-m)*g^2; step = g*sqrt((hu+delta)/(hg+delta)); hu = m*hu + (1-m)*step^2; step *= lr."""

    type = "AdaDelta"
    history_sets = 2

    def compute_update_value(self, i, g, local_rate):
        xp = backend.xp()
        m, delta = F32(self.param.momentum), F32(self.param.delta)
        n = len(self.net.learnable_params)
        hg, hu = self.hist(i), self.hist(n + i)
        hg *= m
        hg += (F32(1) - m) * (g * g)
        self.set_hist(i, hg)
        g *= xp.sqrt((hu + delta) / (hg + delta))
        hu *= m
        hu += (F32(1) - m) * (g * g)
        self.set_hist(n + i, hu)
        g *= as_f32(local_rate)
