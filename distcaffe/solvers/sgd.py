"""SGDSolver: Caffe's update, term for term (SGDSolver::ApplyUpdate), shared by every solver type.

Per iteration: lr from the policy; undo NVCaffe's global gradient scale; ClipGradients on the global L2 norm;
then per param Normalize (1/iter_size), Regularize (L2/L1, weight_decay * decay_mult), ComputeUpdateValue
(method-specific, leaves the step in the param diff) and data -= diff. Math runs in float32; weights and history
are stored in `solver_data_type` (a master copy of the weights is kept when the layer stores another type).
"""
import numpy as np

from .. import backend
from ..errors import SolverError
from ..log import get_logger
from . import larc, lr_policy
from .solver import Solver

log = get_logger("sgd_solver")
F32 = np.float32


def as_f32(value):
    """A python number or 0-d (device) array as float32, without reading a device value back."""
    return value.astype(F32) if hasattr(value, "astype") else F32(value)


class SGDSolver(Solver):
    """Stochastic gradient descent with momentum (Caffe type "SGD")."""

    type = "SGD"
    history_sets = 1          # history arrays per learnable param (AdaDelta/Adam keep 2)

    def pre_solve(self):
        xp = backend.xp()
        self.solver_dtype = np.dtype(backend.dtype_of(self.param.solver_data_type))
        params = self.net.learnable_params
        if self.net.lms is not None:        # Large Model Support manages the history like any blob
            from ..blob import Blob
            from ..lms import adopt_history
            self._history = [Blob(p.shape, self.solver_dtype) for _ in range(self.history_sets) for p in params]
            adopt_history(self.net, self._history)
        else:
            self._history = [xp.zeros(p.shape, self.solver_dtype) for _ in range(self.history_sets) for p in params]
        self._master = [None] * len(params)
        self.weights_changed()
        self.wgrad_amax = xp.zeros((), F32)       # device scalars: read back only when displayed
        self.grad_scale = F32(1.0)
        self._plateau = lr_policy.Plateau()
        self._larc_g_corr = [0.0] * len(params)
        net_param = self.net.param
        self._gs_param = net_param.global_grad_scale
        self._gs_adaptive = net_param.global_grad_scale_adaptive
        self._gs_enabled = self._gs_adaptive or (net_param.HasField("global_grad_scale") and self._gs_param != 1.0)

    def weights_changed(self):
        """(Re)build master weight copies for params whose storage type differs from solver_data_type."""
        for i, p in enumerate(self.net.learnable_params):
            self._master[i] = p.dev_data.astype(self.solver_dtype) if p.dtype != self.solver_dtype else None

    @property
    def history(self):
        if self.net.lms is not None:
            return [h.data for h in self._history]
        return self._history

    def restore_history(self, arrays, path):
        if len(arrays) != len(self._history):
            raise SolverError("%s: incorrect length of history blobs (%d in the file, solver %s on this net needs %d)"
                              % (path, len(arrays), self.type, len(self._history)))
        xp = backend.xp()
        for i, (h, arr) in enumerate(zip(self._history, arrays)):
            if arr.size != h.size:
                raise SolverError("%s: history blob %d has %d values, the net's param needs %s"
                                  % (path, i, arr.size, "x".join(map(str, h.shape))))
            if self.net.lms is not None:
                h.data[...] = arr.reshape(h.shape)
            else:
                self._history[i] = xp.asarray(arr.reshape(h.shape), dtype=self.solver_dtype)
        log.info("SGDSolver: restoring history")

    # --- learning rate / scale -----------------------------------------------------------------
    def get_learning_rate(self):
        rate, self.current_step = lr_policy.learning_rate(self.param, self.iter, self.current_step,
                                                          self.smoothed_loss, self._plateau)
        return rate

    def get_momentum(self):
        """Momentum of this iteration (NVCaffe momentum_policy; `opt` derives it from the global rate)."""
        return lr_policy.momentum(self.param, self.iter, self.rate)

    def prepare_gradients(self):
        """NVCaffe global gradient scale: the loss tops' diffs (where backward starts) are multiplied by it."""
        if not self._gs_enabled:
            return
        self.grad_scale = larc.grad_scale_coeff(backend.xp(), self._gs_param, self._gs_adaptive, self.wgrad_amax)
        for name, weight in self.net.blob_loss_weights_by_name.items():
            blob = self.net.blobs.get(name)
            if weight and blob is not None:
                blob.mut_dev_diff[...] = weight * self.grad_scale

    # --- the update ----------------------------------------------------------------------------
    def apply_update(self):
        p = self.param
        rate = self.rate = self.get_learning_rate()
        if self.is_root and p.display and self.iter % p.display == 0:
            log.info("Iteration %d, lr = %g", self.iter, rate)
        xp = backend.xp()
        params = self.net.learnable_params
        unscale = as_f32(1.0 / self.grad_scale) if self._gs_enabled else None
        clip = self.clip_gradients(params, unscale)
        amax = xp.zeros((), F32)
        for i, q in enumerate(params):
            with self.net.memory_step("update", i):      # one param's arrays on the device at a time (LMS)
                g = self._grad32(q)
                if unscale is not None:
                    g *= unscale
                if clip is not None:
                    g *= clip
                self.normalize(g)
                g_sumsq = (g * g).sum(dtype=F32) if p.larc else None
                if self._gs_adaptive and g.size:
                    amax = xp.fmax(amax, abs(g).max())   # fmax: a NaN gradient does not poison the scale
                w = self._weights32(i)
                self.regularize(i, g, w)
                self.compute_update_value(i, g, self.local_rate(i, rate, w, g, g_sumsq))
                self._update(i, q, g, w)
        self.wgrad_amax = amax

    @staticmethod
    def _grad32(blob):
        """The param's diff as a float32 array to work on (the diff itself when it is float32, like Caffe)."""
        d = blob.mut_dev_diff
        return d if d.dtype == F32 else d.astype(F32)

    def _weights32(self, i):
        src = self._master[i] if self._master[i] is not None else self.net.learnable_params[i].dev_data
        return src if src.dtype == F32 else src.astype(F32)

    def clip_gradients(self, params, unscale=None):
        """The factor Caffe's ClipGradients scales every gradient by (None: no clipping), from the L2 norm of
        the (unscaled) gradients, read one param at a time."""
        clip = self.param.clip_gradients
        if clip < 0:
            return None
        xp = backend.xp()
        sumsq = xp.zeros((), F32)
        for i, q in enumerate(params):
            with self.net.memory_step("clip", i):
                g = self._grad32(q)
                if unscale is not None:
                    g = g * unscale
                sumsq = sumsq + (g * g).sum(dtype=F32)
        l2 = xp.sqrt(sumsq)
        if backend.is_gpu():        # no host sync: min(1, clip / l2) stays on the device (and is not logged)
            return xp.minimum(F32(1), F32(clip) / xp.maximum(l2, F32(np.finfo(F32).tiny)))
        if l2 > clip:
            scale = clip / float(l2)
            log.info("Gradient clipping: scaling down gradients (L2 norm %g > %g) by scale factor %g", l2, clip, scale)
            return F32(scale)
        return None

    def normalize(self, g):
        if self.param.iter_size != 1:
            g *= F32(1.0 / self.param.iter_size)

    def regularize(self, i, g, w):
        decay = lr_policy.weight_decay(self.param, self.iter) * self.net.params_weight_decay[i]
        if not decay:
            return
        if self.param.regularization_type == "L2":
            g += F32(decay) * w
        else:
            g += F32(decay) * backend.xp().sign(w)

    def local_rate(self, i, rate, w, g, g_sumsq):
        """rate * lr_mult, or NVCaffe LARC's layer-wise rate (larc_turbo: less the gradient/history
        correlation, measured against the history before this update) combined by larc_policy."""
        p = self.param
        lr_mult = self.net.params_lr[i]
        if not p.larc:
            return rate * lr_mult
        xp = backend.xp()
        local = larc.larc_local_rate(xp, F32(p.larc_eta), (w * w).sum(dtype=F32), g_sumsq, self.get_momentum())
        if p.larc_turbo:
            h = self.hist(i)
            self._larc_g_corr[i] = larc.turbo_correlation(xp, self._larc_g_corr[i], (g * h).sum(dtype=F32),
                                                          g_sumsq, (h * h).sum(dtype=F32))
            local = local - F32(larc.TURBO_WEIGHT) * self._larc_g_corr[i]
        return larc.combine(xp, p.larc_policy, F32(rate), local if lr_mult > 0 else F32(lr_mult))

    def _update(self, i, blob, g, w):
        """Net::Update: data -= diff, in float32, stored back to the master copy and the layer's blob."""
        diff = blob.mut_dev_diff
        if g is not diff:
            diff[...] = g
        if self._master[i] is None and w.dtype == blob.dtype:
            blob.mut_dev_data[...] -= g
            return
        w = w - g
        if self._master[i] is not None:
            self._master[i][...] = w
            w = self._master[i]
        blob.mut_dev_data[...] = w

    def hist(self, k):
        """History array k as float32 (a copy when stored in another type; write it back with set_hist)."""
        h = self._history[k]
        if self.net.lms is not None:
            h = h.mut_dev_data
        return h if h.dtype == F32 else h.astype(F32)

    def set_hist(self, k, value):
        h = self._history[k]
        if self.net.lms is not None:
            h = h.mut_dev_data
            if backend.xp().shares_memory(value, h):
                return
        if value is not h:
            h[...] = value

    def compute_update_value(self, i, g, local_rate):
        """SGD with momentum: h = local_rate * g + momentum * h; the step is h."""
        m = self.get_momentum()
        h = self.hist(i)
        h *= F32(m)
        h += as_f32(local_rate) * g
        self.set_hist(i, h)
        g[...] = h
