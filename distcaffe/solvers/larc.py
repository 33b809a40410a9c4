"""NVCaffe LARC (layer-wise adaptive rate control) and the global gradient scale.

LARC (NVCaffe 0.17.3 SGDSolver::GetLocalRate): rate_i = (1 - momentum) * larc_eta * ||w_i|| / ||g_i|| (1 when
either norm is 0); `larc_turbo` then subtracts 0.9 * c_i, c_i an exponential average (beta 0.95) of the cosine
between g_i and the momentum history. rate_i replaces lr_mult for params with lr_mult > 0 and is combined with
the global rate by `larc_policy`: `scale` -> rate * rate_i, `clip` -> min(rate, rate_i).
"""
import math

from ..errors import SolverError


TURBO_BETA = 0.95          # NVCaffe's fixed larc_beta
TURBO_WEIGHT = 0.9


def larc_local_rate(eta, w_sumsq, g_sumsq, momentum=0.0):
    """(1 - momentum) * eta * ||w|| / ||g||, or 1 when either norm is zero (or the gradient is not finite)."""
    if math.isnan(g_sumsq):
        g_sumsq = 0.0  # NVCaffe skips a NaN gradient norm
    w_norm, g_norm = math.sqrt(w_sumsq), math.sqrt(g_sumsq)
    if w_norm > 0.0 and g_norm > 0.0:
        return (1.0 - momentum) * eta * w_norm / g_norm
    return 1.0


def turbo_correlation(previous, g_dot_h, g_sumsq, h_sumsq):
    """larc_turbo's running gradient/history correlation after one more iteration (cosine 0 for a zero norm)."""
    g_norm, h_norm = math.sqrt(g_sumsq), math.sqrt(h_sumsq)
    cosine = g_dot_h / (g_norm * h_norm) if g_norm > 0.0 and h_norm > 0.0 else 0.0
    return TURBO_BETA * previous + (1.0 - TURBO_BETA) * cosine


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
