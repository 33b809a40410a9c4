"""RNN and LSTM as Caffe's RecurrentLayer computes them, without building the unrolled net.

Bottoms: x (T x N x ...), cont (T x N), optional static input x_static (N x ...), and with
`recurrent_param.expose_hidden` the initial states (1 x N x num_output each). Tops: the per-step output
(T x N x num_output) and, when exposed, the final states. Parameter blobs are those of Caffe's unrolled net in
its order (LSTM: W_xc, b_c, [W_xc_static], W_hc; RNN: W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o), so .caffemodel
weights load by position. Caffe semantics kept on purpose:
- cont_t multiplies the previous hidden state (and, in the LSTM, the forget gate), so cont_t = 0 starts a sequence;
- without expose_hidden, each forward starts from the previous forward's final states (Caffe copies h_T -> h_0);
- backward runs BPTT through all T steps, but no gradient leaves through the initial states, the final states of
  exposed tops, or cont (Caffe's unrolled net shares none of those diffs); such bottoms get a zero diff.
"""
import numpy as np

from .base import Layer, register


def _sigmoid(xp, x):
    return 0.5 * xp.tanh(0.5 * x) + 0.5


class _RecurrentLayer(Layer):
    """Shared bottoms/params/shape checks and the input projection W_x x + b (+ W_static x_static)."""

    num_states = 1      # recurrent state blobs (h; LSTM: h, c)
    gates = 1           # rows of W_x per output unit (LSTM: i, f, o, g)

    def __init__(self, layer_param, dtype=np.float32, bwd_dtype=None):
        super().__init__(layer_param, dtype=dtype, bwd_dtype=bwd_dtype)
        exposed = self.num_states if layer_param.recurrent_param.expose_hidden else 0
        self.min_bottom = 2 + exposed
        self.max_bottom = 3 + exposed
        self.exact_num_top = 1 + exposed

    def layer_setup(self, bottom, top):
        p = self.layer_param.recurrent_param
        self.check(bottom[0].num_axes >= 2, "bottom[0] must have at least 2 axes -- (#timesteps, #streams, ...), "
                                            "got %s" % bottom[0].shape_string())
        self.T = bottom[0].shape[0]
        self.expose = p.expose_hidden
        self.static = len(bottom) > 2 + (self.num_states if self.expose else 0)
        self.H = p.num_output
        self.check(self.H > 0, "num_output must be positive")
        self.input_dim = bottom[0].count_range(2)
        if self.static:
            self.check(bottom[2].num_axes >= 1 and bottom[2].shape[0] == bottom[0].shape[1],
                       "the static input bottom[2] must be N x ... with N = %d streams, got %s"
                       % (bottom[0].shape[1], bottom[2].shape_string()))
            self.static_dim = bottom[2].count_range(1)
        GH = self.gates * self.H
        shapes = [((GH, self.input_dim), p.weight_filler), ((GH,), p.bias_filler)]
        if self.static:
            shapes.append(((GH, self.static_dim), p.weight_filler))
        shapes += self.recurrent_param_shapes(p)
        self.blobs = []
        for shape, filler in shapes:
            self.blobs.append(self.new_param(shape, filler))
        self.first = 3 if self.static else 2     # index of the first recurrent-only parameter
        self.state = None

    def reshape(self, bottom, top):
        b0, b1 = bottom[0], bottom[1]
        self.check(b0.num_axes >= 2, "bottom[0] must have at least 2 axes -- (#timesteps, #streams, ...), got %s"
                   % b0.shape_string())
        self.check(b0.shape[0] == self.T, "input number of timesteps changed (was %d, now %d)" % (self.T, b0.shape[0]))
        self.N = b0.shape[1]
        self.check(b1.num_axes == 2 and b1.shape == (self.T, self.N),
                   "bottom[1] (cont) must have exactly 2 axes -- (#timesteps, #streams) = (%d, %d), got %s"
                   % (self.T, self.N, b1.shape_string()))
        self.check(b0.count_range(2) == self.input_dim,
                   "input size per step changed: %d values, the weights expect %d" % (b0.count_range(2), self.input_dim))
        if self.static:
            self.check(bottom[2].shape[0] == self.N and bottom[2].count_range(1) == self.static_dim,
                       "the static input bottom[2] must be %d x (%d values), got %s"
                       % (self.N, self.static_dim, bottom[2].shape_string()))
        state_shape = (1, self.N, self.H)
        for i, b in enumerate(bottom[self.state_offset():]):
            self.check(b.shape == state_shape, "bottom[%d] shape must match hidden state input shape: %s, got %s"
                       % (i + self.state_offset(), " ".join(map(str, state_shape)), b.shape_string()))
        top[0].reshape((self.T, self.N, self.H))
        for t in top[1:]:
            t.reshape(state_shape)

    def state_offset(self):
        return 3 if self.static else 2

    def need_param(self, k):
        return k >= len(self.param_propagate_down) or self.param_propagate_down[k]

    def initial_states(self, bottom):
        """Exposed initial states, else the previous forward's final states (zeros at first or after a resize)."""
        xp = self.xp
        if self.expose:
            return [self.m(b.dev_data).reshape(self.N, self.H) for b in bottom[self.state_offset():]]
        if self.state is None or any(not isinstance(s, xp.ndarray) or s.shape != (self.N, self.H)
                                     for s in self.state):
            return [xp.zeros((self.N, self.H), self.mdtype) for _ in range(self.num_states)]
        return self.state

    def finish_forward(self, top, outputs, states):
        top[0].mut_dev_data[...] = outputs
        if self.expose:
            for t, s in zip(top[1:], states):
                t.mut_dev_data[...] = s.reshape(t.shape)
        else:
            self.state = states

    def project_inputs(self, bottom):
        """W_x x_t + b for all steps at once (T, N, gates*H), plus the static term W_static x_static."""
        self.x = self.m(bottom[0].dev_data).reshape(self.T * self.N, self.input_dim)
        W, b = self.m(self.blobs[0].dev_data), self.m(self.blobs[1].dev_data)
        wx = (self.x @ W.T + b).reshape(self.T, self.N, -1)
        if self.static:
            self.xs = self.m(bottom[2].dev_data).reshape(self.N, self.static_dim)
            wx += (self.xs @ self.m(self.blobs[2].dev_data).T)[None]
        self.cont = self.m(bottom[1].dev_data).reshape(self.T, self.N, 1)
        return wx

    def backward_inputs(self, dwx, propagate_down, bottom):
        """Given d(W_x x_t + b) for every step, accumulate the input-side parameter diffs and write x's diff."""
        dwx = dwx.reshape(self.T * self.N, -1)
        if self.need_param(0):
            self.blobs[0].mut_dev_diff[...] += dwx.T @ self.x
        if self.need_param(1):
            self.blobs[1].mut_dev_diff[...] += dwx.sum(axis=0)
        if propagate_down[0]:
            bottom[0].mut_dev_diff[...] = (dwx @ self.m(self.blobs[0].dev_data)).reshape(bottom[0].shape)
        if self.static:
            dstatic = dwx.reshape(self.T, self.N, -1).sum(axis=0)
            if self.need_param(2):
                self.blobs[2].mut_dev_diff[...] += dstatic.T @ self.xs
            if propagate_down[2]:
                bottom[2].mut_dev_diff[...] = (dstatic @ self.m(self.blobs[2].dev_data)).reshape(bottom[2].shape)
        if propagate_down[1]:
            bottom[1].mut_dev_diff[...] = 0
        for i in range(self.state_offset(), len(bottom)):
            if propagate_down[i]:
                bottom[i].mut_dev_diff[...] = 0

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1


@register("LSTM")
class LSTMLayer(_RecurrentLayer):
    """Long short-term memory (Caffe's LSTM + LSTMUnit): gates (i, f, o, g) = W_xc x_t + b_c + W_hc (cont_t h_{t-1});
    c_t = cont_t f_t c_{t-1} + i_t g_t, h_t = o_t tanh(c_t); the output is h."""

    num_states = 2
    gates = 4

    def recurrent_param_shapes(self, p):
        return [((4 * self.H, self.H), p.weight_filler)]

    def forward(self, bottom, top):
        xp, H = self.xp, self.H
        wx = self.project_inputs(bottom)
        W_hc = self.m(self.blobs[self.first].dev_data)
        h, c = self.initial_states(bottom)
        self.steps = []
        out = xp.empty((self.T, self.N, H), self.mdtype)
        for t in range(self.T):
            ct = self.cont[t]
            hc = ct * h
            pre = hc @ W_hc.T + wx[t]
            i = _sigmoid(xp, pre[:, :H])
            f = xp.where(ct == 0, 0, ct * _sigmoid(xp, pre[:, H:2 * H]))
            o = _sigmoid(xp, pre[:, 2 * H:3 * H])
            g = xp.tanh(pre[:, 3 * H:])
            c_prev = c
            c = f * c_prev + i * g
            tanh_c = xp.tanh(c)
            h = o * tanh_c
            out[t] = h
            self.steps.append((hc, i, f, o, g, c_prev, tanh_c))
        self.finish_forward(top, out, [h, c])

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        dtop = self.m(top[0].dev_diff)
        W_hc = self.m(self.blobs[self.first].dev_data)
        dW_hc = xp.zeros_like(W_hc)
        dgates = xp.empty((self.T, self.N, 4 * self.H), self.mdtype)
        dh_next = xp.zeros((self.N, self.H), self.mdtype)
        dc = xp.zeros((self.N, self.H), self.mdtype)          # c_T's diff: nothing flows back from later batches
        for t in range(self.T - 1, -1, -1):
            hc, i, f, o, g, c_prev, tanh_c = self.steps[t]
            dh = dtop[t] + dh_next
            c_term = dc + dh * o * (1 - tanh_c * tanh_c)
            dpre = xp.concatenate([c_term * g * i * (1 - i), c_term * c_prev * f * (1 - f),
                                   dh * tanh_c * o * (1 - o), c_term * i * (1 - g * g)], axis=1)
            dgates[t] = dpre
            dW_hc += dpre.T @ hc
            dh_next = (dpre @ W_hc) * self.cont[t]
            dc = c_term * f
        if self.need_param(self.first):
            self.blobs[self.first].mut_dev_diff[...] += dW_hc
        self.backward_inputs(dgates, propagate_down, bottom)


@register("RNN")
class RNNLayer(_RecurrentLayer):
    """Elman RNN (Caffe's RNN): h_t = tanh(W_xh x_t + b_h + W_hh (cont_t h_{t-1})), o_t = tanh(W_ho h_t + b_o);
    the output is o."""

    def recurrent_param_shapes(self, p):
        return [((self.H, self.H), p.weight_filler), ((self.H, self.H), p.weight_filler), ((self.H,), p.bias_filler)]

    def forward(self, bottom, top):
        xp = self.xp
        wx = self.project_inputs(bottom)
        W_hh = self.m(self.blobs[self.first].dev_data)
        (h,) = self.initial_states(bottom)
        self.hc = xp.empty((self.T, self.N, self.H), self.mdtype)
        self.h = xp.empty((self.T, self.N, self.H), self.mdtype)
        for t in range(self.T):
            self.hc[t] = self.cont[t] * h
            h = xp.tanh(self.hc[t] @ W_hh.T + wx[t])
            self.h[t] = h
        W_ho, b_o = (self.m(self.blobs[k].dev_data) for k in (self.first + 1, self.first + 2))
        self.o = xp.tanh(self.h @ W_ho.T + b_o)
        self.finish_forward(top, self.o, [h])

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        k = self.first
        W_hh, W_ho = self.m(self.blobs[k].dev_data), self.m(self.blobs[k + 1].dev_data)
        dz = (self.m(top[0].dev_diff) * (1 - self.o * self.o)).reshape(self.T * self.N, self.H)
        if self.need_param(k + 1):
            self.blobs[k + 1].mut_dev_diff[...] += dz.T @ self.h.reshape(self.T * self.N, self.H)
        if self.need_param(k + 2):
            self.blobs[k + 2].mut_dev_diff[...] += dz.sum(axis=0)
        dh_out = (dz @ W_ho).reshape(self.T, self.N, self.H)
        da = xp.empty((self.T, self.N, self.H), self.mdtype)
        dh_next = xp.zeros((self.N, self.H), self.mdtype)
        for t in range(self.T - 1, -1, -1):
            da[t] = (dh_out[t] + dh_next) * (1 - self.h[t] * self.h[t])
            dh_next = (da[t] @ W_hh) * self.cont[t]
        if self.need_param(k):
            self.blobs[k].mut_dev_diff[...] += da.reshape(-1, self.H).T @ self.hc.reshape(-1, self.H)
        self.backward_inputs(da, propagate_down, bottom)
