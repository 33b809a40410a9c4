"""NesterovSolver (Caffe type "Nesterov"): Caffe's NesterovSolver::ComputeUpdateValue."""
from .sgd import F32, SGDSolver, as_f32


class NesterovSolver(SGDSolver):
    """Nesterov's accelerated gradient: h' = lr*g + m*h; step = (1+m)*h' - m*h."""

    type = "Nesterov"

    def compute_update_value(self, i, g, local_rate):
        m = F32(self.get_momentum())
        h = self.hist(i)
        previous = h.copy()
        h *= m
        h += as_f32(local_rate) * g
        self.set_hist(i, h)
        g[...] = (F32(1) + m) * h - m * previous
