"""NVCaffe LARC (layer-wise adaptive rate control) and the global gradient scale, computed on the device.

LARC (SGDSolver::GetLocalRate): rate_i = larc_eta * ||w_i|| / ||g_i|| (1 when either norm is 0), used in
place of lr_mult for params with lr_mult > 0, then combined with the global rate by `larc_policy`:
`scale` -> rate * rate_i, `clip` -> min(rate, rate_i). Norms and rates stay 0-d device arrays, so an
iteration reads nothing back to the host.
"""
from ..errors import SolverError


def larc_local_rate(xp, eta, w_sumsq, g_sumsq):
    """eta * ||w|| / ||g||, or 1 when either norm is zero or the gradient norm is NaN (NVCaffe skips it)."""
    g_sumsq = xp.where(g_sumsq != g_sumsq, 0, g_sumsq)
    w_norm, g_norm = xp.sqrt(w_sumsq), xp.sqrt(g_sumsq)
    ok = (w_norm > 0) & (g_norm > 0)
    return xp.where(ok, eta * w_norm / xp.where(ok, g_norm, 1), 1).astype(w_sumsq.dtype)


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
