"""InnerProduct (fully connected, one GEMM) and Embed (table lookup), as Caffe defines them."""
import numpy as np

from .. import backend
from .base import Layer, register


@register("InnerProduct")
class InnerProductLayer(Layer):
    """Caffe's InnerProduct: top (M, N) = bottom flattened from `axis` (M, K) x W^T + b; W is N x K,
    or K x N with `transpose`."""

    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.inner_product_param
        self.num_output = p.num_output
        self.bias_term = p.bias_term
        self.transpose = p.transpose
        self.axis = bottom[0].canonical_axis(p.axis)
        self.K = bottom[0].count_range(self.axis)
        if not self.blobs:
            shape = (self.K, self.num_output) if self.transpose else (self.num_output, self.K)
            self.blobs = [self.new_param(shape, p.weight_filler)]
            if self.bias_term:
                self.blobs.append(self.new_param((self.num_output,), p.bias_filler))
        self.param_propagate_down = [True] * len(self.blobs)

    def reshape(self, bottom, top):
        axis = bottom[0].canonical_axis(self.layer_param.inner_product_param.axis)
        k = bottom[0].count_range(axis)
        self.check(k == self.K, "Input size incompatible with inner product parameters (bottom %s gives K=%d, "
                   "weights expect K=%d)" % (bottom[0].shape_string(), k, self.K))
        self.M = bottom[0].count_range(0, axis)
        top[0].reshape(tuple(bottom[0].shape[:axis]) + (self.num_output,))

    def _weight_nk(self):
        """The weights as (N, K)."""
        w = self.m(self.blobs[0].dev_data)
        return w.T if self.transpose else w

    def forward(self, bottom, top):
        """top = (W x^T)^T + b: OpenBLAS runs W x^T faster than x W^T (1 thread: AlexNet fc6 42 -> 26 ms,
        GoogLeNet/ResNet-50 classifiers 2.3x, LeNet ip1 0.66 -> 0.53 ms)."""
        x = self.m(bottom[0].dev_data).reshape(self.M, self.K)
        y = backend.matmul(self._weight_nk(), x.T).T
        out = top[0].mut_dev_data.reshape(self.M, self.num_output)
        if self.bias_term:
            self.xp.add(y, self.m(self.blobs[1].dev_data), out=out)
        else:
            out[...] = y

    def backward_reads_data(self, bottom, top):
        return (0,), ()

    def backward(self, top, propagate_down, bottom):
        g = self.m(top[0].dev_diff).reshape(self.M, self.num_output)
        pd = self.param_propagate_down
        if pd and pd[0]:
            x = self.m(bottom[0].dev_data).reshape(self.M, self.K)
            a, b = (x, g) if self.transpose else (g, x)
            dw = self.blobs[0].mut_dev_diff.reshape(a.shape[1], b.shape[1])
            for r in _row_blocks(self.xp, dw):
                dw[r] += backend.matmul(a[:, r].T, b)
        if self.bias_term and len(pd) > 1 and pd[1]:
            self.blobs[1].mut_dev_diff[...] += g.sum(axis=0)
        if propagate_down[0]:
            bottom[0].mut_dev_diff[...] = backend.matmul(g, self._weight_nk()).reshape(bottom[0].shape)


_BLOCK_BYTES = 8 << 20


def _row_blocks(xp, dw):
    """Row slices of the weight diff whose products are accumulated one after another, so that a large layer
    (AlexNet's fc6: a 151 MB product) needs an ~8 MB temporary instead of one the size of its weights. Blocks
    of at least 256 rows keep BLAS on its blocked GEMM. Each element is the same dot product as in the
    whole-matrix call; whether its bits match depends on the BLAS kernel (OpenBLAS's SkylakeX kernels: yes;
    its Haswell and Zen kernels round a row differently by where it falls in their tiles, as they do between
    1 and 2 threads). Small layers and the GPU take one block."""
    rows = dw.shape[0]
    step = max(256, _BLOCK_BYTES // max(1, dw[0].nbytes))
    if xp is not np or rows <= step:
        return [slice(None)]
    return [slice(r, r + step) for r in range(0, rows, step)]


def _scatter_add(xp, target, index, values):
    """target[index[i]] += values[i] with repeated indices summed (numpy and cupy)."""
    add_at = getattr(xp.add, "at", None)
    if add_at is not None:
        add_at(target, index, values)
    else:
        import cupyx
        cupyx.scatter_add(target, index, values)


@register("Embed")
class EmbedLayer(Layer):
    """Caffe's Embed: integer indices (any shape) -> rows of a (input_dim, num_output) table, plus bias."""

    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.embed_param
        self.N = p.num_output
        self.check(self.N > 0, "EmbedLayer num_output must be positive.")
        self.K = p.input_dim
        self.check(self.K > 0, "EmbedLayer input_dim must be positive.")
        self.bias_term = p.bias_term
        if not self.blobs:
            self.blobs = [self.new_param((self.K, self.N), p.weight_filler)]
            if self.bias_term:
                self.blobs.append(self.new_param((self.N,), p.bias_filler))
        self.param_propagate_down = [True] * len(self.blobs)

    def reshape(self, bottom, top):
        top[0].reshape(tuple(bottom[0].shape) + (self.N,))

    def allow_force_backward(self, bottom_index):
        return False

    def _indices(self, bottom):
        xp = self.xp
        raw = bottom[0].dev_data.reshape(-1)
        idx = raw.astype("int64")
        bad = (idx < 0) | (idx >= self.K) | (idx != raw)
        self.check_values(bad, raw, lambda v, i: "index %r at position %d of %s is not an integer in [0, %d)"
                          % (v, i, bottom[0].name, self.K))
        return xp.clip(idx, 0, self.K - 1)

    def forward(self, bottom, top):
        self.idx = self._indices(bottom)
        y = self.m(self.blobs[0].dev_data)[self.idx]
        if self.bias_term:
            y = y + self.m(self.blobs[1].dev_data)
        top[0].mut_dev_data[...] = y.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error("Can't backpropagate to EmbedLayer input.")
        g = self.m(top[0].dev_diff).reshape(-1, self.N)
        pd = self.param_propagate_down
        if pd and pd[0]:
            wd = self.m(self.blobs[0].dev_diff).copy()
            _scatter_add(self.xp, wd, self.idx, g)
            self.blobs[0].mut_dev_diff[...] = wd
        if self.bias_term and len(pd) > 1 and pd[1]:
            self.blobs[1].mut_dev_diff[...] += g.sum(axis=0)
