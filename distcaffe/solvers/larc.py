"""NVCaffe LARC (layer-wise adaptive rate control) and the global gradient scale, computed on the device.

LARC (NVCaffe 0.17.3 SGDSolver::GetLocalRate): rate_i = (1 - momentum) * larc_eta * ||w_i|| / ||g_i|| (1 when
either norm is 0); `larc_turbo` then subtracts 0.9 * c_i, c_i an exponential average (beta 0.95) of the cosine
between g_i and the momentum history. rate_i replaces lr_mult for params with lr_mult > 0 and is combined with
the global rate by `larc_policy`: `scale` -> rate * rate_i, `clip` -> min(rate, rate_i). Norms and rates stay
0-d arrays of the current device, so an iteration reads nothing back to the host.
"""
from ..errors import SolverError

TURBO_BETA = 0.95          # NVCaffe's fixed larc_beta
TURBO_WEIGHT = 0.9


def _ratio(xp, num, den, ok, otherwise):
    """num / den where `ok`, else `otherwise` (no division by zero evaluated)."""
    return xp.where(ok, num / xp.where(ok, den, 1), otherwise)


def larc_local_rate(xp, eta, w_sumsq, g_sumsq, momentum=0.0):
    """(1 - momentum) * eta * ||w|| / ||g||, or 1 when either norm is zero or the gradient norm is NaN
    (NVCaffe skips a NaN gradient norm)."""
    g_sumsq = xp.where(g_sumsq != g_sumsq, 0, g_sumsq)
    w_norm, g_norm = xp.sqrt(w_sumsq), xp.sqrt(g_sumsq)
    ok = (w_norm > 0) & (g_norm > 0)
    return _ratio(xp, (1.0 - momentum) * eta * w_norm, g_norm, ok, 1).astype(w_sumsq.dtype)


def turbo_correlation(xp, previous, g_dot_h, g_sumsq, h_sumsq):
    """larc_turbo's running gradient/history correlation after one more iteration (cosine 0 for a zero norm)."""
    g_norm, h_norm = xp.sqrt(g_sumsq), xp.sqrt(h_sumsq)
    cosine = _ratio(xp, g_dot_h, g_norm * h_norm, (g_norm > 0) & (h_norm > 0), 0)
    return (TURBO_BETA * previous + (1.0 - TURBO_BETA) * cosine).astype(g_sumsq.dtype)


def combine(xp, policy, rate, local_rate):
    """The rate a param uses under LARC: `scale` multiplies, `clip` takes the smaller."""
    if policy == "scale":
        return rate * local_rate
    if policy == "clip":
        return xp.minimum(local_rate, rate)
    raise SolverError("unknown larc_policy '%s' (known: scale, clip)" % policy)


def grad_scale_coeff(xp, scale_param, adaptive, wgrad_amax):
    """NVCaffe's global gradient scale: adaptive -> max |unscaled weight gradient| of the last iteration
    times global_grad_scale when it is > 0 (NVCaffe measures max |grad|, not the L2 norm its docs and older
    sources name); otherwise the fixed global_grad_scale."""
    if not adaptive:
        return scale_param
    return xp.where(wgrad_amax > 0, wgrad_amax * scale_param, scale_param).astype(wgrad_amax.dtype)
