"""Learning-rate, momentum and weight-decay schedules: Caffe's lr policies plus NVCaffe's `min_lr`,
`rampup_interval`/`rampup_lr`, `momentum_policy` (fixed, poly, opt) and `weight_decay_policy` (fixed, poly).

Formulas follow BVLC SGDSolver::GetLearningRate and NVCaffe's GetLearningRate/GetMomentum/GetWeightDecay.
"""
import math

from ..errors import SolverError

LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


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
    for field in ("larc_turbo", "test_and_snapshot_last_epochs"):
        if param.HasField(field) and getattr(param, field):
            raise SolverError("%s: NVCaffe's %s is not supported by distcaffe yet; remove it" % (where, field))
    if param.min_lr < 0:
        raise SolverError("%s: min_lr must be >= 0 (got %g)" % (where, param.min_lr))


def learning_rate(param, it, current_step):
    """(rate, new current_step) at iteration `it`; `current_step` is the multistep/step state Caffe keeps."""
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
