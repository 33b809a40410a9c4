"""NVCaffe LARC (layer-wise adaptive rate control) and the global gradient scale.

LARC (SGDSolver::GetLocalRate): rate_i = larc_eta * ||w_i|| / ||g_i|| (1 when either norm is 0), used in
place of lr_mult for params with lr_mult > 0, then combined with the global rate by `larc_policy`:
`scale` -> rate * rate_i, `clip` -> min(rate, rate_i).
"""
import math

from ..errors import SolverError


def larc_local_rate(eta, w_sumsq, g_sumsq):
    """eta * ||w|| / ||g||, or 1 when either norm is zero (or the gradient is not finite)."""
    if math.isnan(g_sumsq):
        g_sumsq = 0.0  # NVCaffe skips a NaN gradient norm
    w_norm, g_norm = math.sqrt(w_sumsq), math.sqrt(g_sumsq)
    if w_norm > 0.0 and g_norm > 0.0:
        return eta * w_norm / g_norm
    return 1.0


def combine(policy, rate, local_rate):
    """The rate a param uses under LARC: `scale` multiplies, `clip` takes the smaller."""
    if policy == "scale":
        return rate * local_rate
    if policy == "clip":
        return min(rate, local_rate)
    raise SolverError("unknown larc_policy '%s' (known: scale, clip)" % policy)


def grad_scale_coeff(scale_param, adaptive, wgrad_amax):
    """NVCaffe's global gradient scale: adaptive -> max |unscaled weight gradient| of the last iteration
    times global_grad_scale when it is > 0 (NVCaffe measures max |grad|, not the L2 norm its docs and older
    sources name); otherwise the fixed global_grad_scale."""
    if adaptive and wgrad_amax > 0.0:
        return wgrad_amax * scale_param
    return scale_param
