"""Learning-rate, momentum and weight-decay schedules: Caffe's lr policies plus NVCaffe's `min_lr`,
`rampup_interval`/`rampup_lr`, `momentum_policy` (fixed, poly, opt) and `weight_decay_policy` (fixed, poly).

Formulas follow BVLC SGDSolver::GetLearningRate and NVCaffe's GetLearningRate/GetMomentum/GetWeightDecay.
`plateau` (declared in NVCaffe's caffe.proto with `plateau_winsize`) follows the SSD/Intel Caffe solver that
defines it: base_lr * gamma^step, the step advancing when the smoothed loss has not reached a new minimum for
plateau_winsize[step] iterations.
"""
import math

from ..errors import SolverError

LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid", "plateau")
FLT_MAX = 3.4028234663852886e38


def check_policies(param, where="solver"):
    """Reject unknown policy names and missing required fields up front (Caffe would LOG(FATAL) mid-run)."""
    if param.lr_policy not in LR_POLICIES:
        raise SolverError("%s: unknown lr_policy '%s' (known: %s)" % (where, param.lr_policy, ", ".join(LR_POLICIES)))
    if param.lr_policy == "step" and param.stepsize <= 0:
        raise SolverError("%s: lr_policy 'step' needs stepsize > 0" % where)
    if param.momentum_policy not in ("fixed", "poly", "opt"):
        raise SolverError("%s: unknown momentum_policy '%s' (known: fixed, poly, opt)" % (where, param.momentum_policy))
    if param.weight_decay_policy not in ("fixed", "poly"):
        raise SolverError("%s: unknown weight_decay_policy '%s' (known: fixed, poly)"
                          % (where, param.weight_decay_policy))
    if param.larc and param.larc_policy not in ("scale", "clip"):
        raise SolverError("%s: unknown larc_policy '%s' (known: scale, clip)" % (where, param.larc_policy))
    if param.lr_policy == "plateau" and not len(param.plateau_winsize):
        raise SolverError("%s: lr_policy 'plateau' needs plateau_winsize (one window per lr drop)" % where)
    if param.min_lr < 0:
        raise SolverError("%s: min_lr must be >= 0 (got %g)" % (where, param.min_lr))


class Plateau:
    """The `plateau` policy's memory: the lowest smoothed loss so far and the iteration of the last event
    (a new minimum or an lr drop)."""

    def __init__(self):
        self.minimum_loss = FLT_MAX
        self.iter_last_event = 0

    def advance(self, param, it, loss, current_step):
        """current_step after iteration `it` with smoothed loss `loss`."""
        if loss < self.minimum_loss:
            self.minimum_loss, self.iter_last_event = loss, it
        if current_step < len(param.plateau_winsize) and \
                it >= self.iter_last_event + param.plateau_winsize[current_step]:
            current_step += 1
            self.iter_last_event = it
        return current_step


def learning_rate(param, it, current_step, loss=0.0, plateau=None):
    """(rate, new current_step) at iteration `it`; `current_step` is the multistep/step/plateau state Caffe
    keeps; `loss` (the smoothed loss) and `plateau` (a Plateau) serve the plateau policy."""
    p = param.lr_policy
    base = param.base_lr
    if it < param.rampup_interval:
        alpha = float(it) / param.rampup_interval
        rampup = param.rampup_lr if param.HasField("rampup_lr") else 0.0
        rate = rampup + (base - rampup) * alpha * alpha
    elif p == "fixed":
        rate = base
    elif p == "step":
        current_step = it // param.stepsize
        rate = base * math.pow(param.gamma, current_step)
    elif p == "exp":
        rate = base * math.pow(param.gamma, it)
    elif p == "inv":
        rate = base * math.pow(1.0 + param.gamma * it, -param.power)
    elif p == "multistep":
        if current_step < len(param.stepvalue) and it >= param.stepvalue[current_step]:
            current_step += 1
        rate = base * math.pow(param.gamma, current_step)
    elif p == "poly":
        max_iter = float(param.max_iter) if param.max_iter > 0 else 1.0
        rate = (base - param.min_lr) * math.pow(1.0 - it / max_iter, param.power) + param.min_lr
    elif p == "sigmoid":
        rate = base / (1.0 + math.exp(-param.gamma * (it - param.stepsize)))
    elif p == "plateau":
        current_step = plateau.advance(param, it, loss, current_step)
        rate = base * math.pow(param.gamma, current_step)
    else:
        raise SolverError("unknown lr_policy '%s'" % p)
    return max(rate, param.min_lr), current_step


def momentum(param, it, rate):
    """NVCaffe GetMomentum: fixed, poly (base -> max_momentum with momentum_power), or opt (from the lr)."""
    base = param.momentum
    policy = param.momentum_policy
    if policy == "poly":
        frac = float(it) / param.max_iter if param.max_iter else 0.0
        return base + (param.max_momentum - base) * math.pow(frac, param.momentum_power)
    if policy == "opt":
        m = (1.0 - 0.5 * math.sqrt(rate)) ** 2
        return min(param.max_momentum, m) if param.HasField("max_momentum") else m
    return base


def weight_decay(param, it):
    """NVCaffe GetWeightDecay: fixed, or poly from weight_decay at iter 0 to max_weight_decay at max_iter:
    wd + (max_weight_decay - wd) * (iter/max_iter)^weight_decay_power."""
    wd = param.weight_decay
    if param.weight_decay_policy == "poly":
        frac = float(it) / param.max_iter if param.max_iter else 0.0
        return wd + (param.max_weight_decay - wd) * math.pow(frac, param.weight_decay_power)
    return wd
