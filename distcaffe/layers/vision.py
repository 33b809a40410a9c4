"""Vision layers: Convolution, Deconvolution, Im2col, Pooling, SPP (Caffe's semantics and numerics).

Convolution is Caffe's im2col + GEMM, batched: the columns of a run of images of a group go into one
(K, images*positions) matrix, so each group is one GEMM per run instead of one per image; on CPU, layers with few
outputs take im2row rows (images*positions, K) instead, large planes Caffe's own per-image GEMMs, and small stride-1
layers (LeNet's and CIFAR-10's first) a direct forward without columns (direct_conv).
"""
import math

import numpy as np

from .. import backend
from ..blob import Blob
from ..proto import caffe_pb2
from . import conv_tiles, cpu_split, cudnn_conv, direct_conv, fastpath
from .base import Layer, register
from .im2col import (accumulate_windows, col2im, col2im_rows, conv_out_size, crop, im2col, padded, prod, windows,
                     workspace)


def _spatial_values(layer, cp, name, num_spatial, default):
    """Per-axis kernel/stride/pad/dilation from a ConvolutionParameter, with Caffe's checks."""
    repeated = list(getattr(cp, name))
    prefix = {"kernel_size": "kernel"}.get(name, name)
    if name != "dilation" and (cp.HasField(prefix + "_h") or cp.HasField(prefix + "_w")):
        if num_spatial != 2:
            raise layer.error("%s_h & %s_w can only be used for 2D convolution." % (prefix, prefix))
        if repeated:
            raise layer.error("Either %s or %s_h/w should be specified; not both." % (name, prefix))
        if name == "kernel_size" and not (cp.HasField("kernel_h") and cp.HasField("kernel_w")):
            raise layer.error("For non-square filters both kernel_h and kernel_w are required.")
        return [getattr(cp, prefix + "_h"), getattr(cp, prefix + "_w")]
    if len(repeated) not in ((1, num_spatial) if name == "kernel_size" else (0, 1, num_spatial)):
        raise layer.error("%s must be specified once, or once per spatial dimension (%s specified %d times; "
                          "%d spatial dims)." % (name, name, len(repeated), num_spatial))
    if not repeated:
        return [default] * num_spatial
    return [repeated[0 if len(repeated) == 1 else i] for i in range(num_spatial)]


class _ConvGeometry:
    """Kernel/stride/pad/dilation and axis bookkeeping of Caffe's BaseConvolutionLayer (and Im2col)."""

    def parse_geometry(self, bottom):
        cp = self.layer_param.convolution_param
        self.force_nd_im2col = cp.force_nd_im2col
        self.channel_axis = bottom[0].canonical_axis(cp.axis)
        first_spatial = self.channel_axis + 1
        self.num_axes = bottom[0].num_axes
        self.num_spatial = self.num_axes - first_spatial
        self.check(self.num_spatial >= 0, "needs spatial axes after the channel axis %d (bottom shape %s)"
                   % (self.channel_axis, bottom[0].shape_string()))
        self.kernel = _spatial_values(self, cp, "kernel_size", self.num_spatial, 0)
        self.check(all(k > 0 for k in self.kernel), "Filter dimensions must be nonzero.")
        self.stride = _spatial_values(self, cp, "stride", self.num_spatial, 1)
        self.check(all(s > 0 for s in self.stride), "Stride dimensions must be nonzero.")
        self.pad = _spatial_values(self, cp, "pad", self.num_spatial, 0)
        self.dilation = _spatial_values(self, cp, "dilation", self.num_spatial, 1)
        self.channels = bottom[0].shape[self.channel_axis]

    def check_bottom_shape(self, bottom):
        self.check(bottom[0].num_axes == self.num_axes, "bottom num_axes may not change.")
        self.check(bottom[0].shape[self.channel_axis] == self.channels,
                   "Input size incompatible with convolution kernel (%d channels, expected %d)."
                   % (bottom[0].shape[self.channel_axis], self.channels))
        for b in bottom[1:]:
            self.check(b.shape == bottom[0].shape, "Shape mismatch - bottom[0]: %s vs. bottom[%d]: %s"
                       % (bottom[0].shape_string(), bottom.index(b), b.shape_string()))
        self.num = bottom[0].count_range(0, self.channel_axis)

    def conv_output_shape(self, spatial):
        return [conv_out_size(s, k, st, p, d)
                for s, k, st, p, d in zip(spatial, self.kernel, self.stride, self.pad, self.dilation)]


class _BaseConvolution(_ConvGeometry, Layer):
    """Caffe's BaseConvolutionLayer; `reverse` (Deconvolution) swaps the roles of bottom and top."""

    min_bottom = 1
    min_top = 1
    equal_num_bottom_top = True
    reverse = False

    def layer_setup(self, bottom, top):
        self.parse_geometry(bottom)
        cp = self.layer_param.convolution_param
        self.num_output = cp.num_output
        self.check(self.num_output > 0, "num_output must be positive")
        self.group = cp.group
        self.check(self.group > 0, "group must be positive")
        self.check(self.channels % self.group == 0,
                   "channels (%d) must be a multiple of group (%d)" % (self.channels, self.group))
        self.check(self.num_output % self.group == 0, "Number of output should be multiples of group.")
        if self.reverse:
            self.conv_out_channels, self.conv_in_channels = self.channels, self.num_output
        else:
            self.conv_out_channels, self.conv_in_channels = self.num_output, self.channels
        self.bias_term = cp.bias_term
        weight_shape = [self.conv_out_channels, self.conv_in_channels // self.group] + list(self.kernel)
        if not self.blobs:
            self.blobs = [self.new_param(weight_shape, cp.weight_filler)]
            if self.bias_term:
                self.blobs.append(self.new_param([self.num_output], cp.bias_filler))
        else:
            expect = [tuple(weight_shape)] + ([(self.num_output,)] if self.bias_term else [])
            self.check(len(self.blobs) == len(expect), "Incorrect number of weight blobs.")
            for b, shape in zip(self.blobs, expect):
                self.check(b.shape == shape, "Incorrect weight shape: expected shape %s; instead, shape was %s"
                           % (shape, b.shape))
        self.kernel_dim = prod(weight_shape[1:])
        self.param_propagate_down = [True] * len(self.blobs)
        self.policy = cudnn_conv.conv_policy(self.layer_param)
        self._cudnn_engine = None

    def reshape(self, bottom, top):
        self.check_bottom_shape(bottom)
        spatial = list(bottom[0].shape[self.channel_axis + 1:])
        out = self.compute_output_shape(spatial)
        if not all(o > 0 for o in out):           # (the message is built only when raised: reshape runs every pass)
            raise self.error("output spatial shape %s is empty for input %s" % (out, bottom[0].shape_string()))
        top_shape = tuple(bottom[0].shape[:self.channel_axis]) + (self.num_output,) + tuple(out)
        for i, t in enumerate(top):
            if t is bottom[i]:
                raise self.error("does not allow in-place computation")
            t.reshape(top_shape)
        # im2col runs over the conv input (bottom for Convolution, top for Deconvolution)
        self.conv_input_shape = out if self.reverse else spatial
        self.col_shape = spatial if self.reverse else out

    # --- GEMM layout helpers (batch-last: GEMM columns are (position, image), image fastest) ----------
    # Columns, GEMM products and the reordered top diff live in `workspace` scratch buffers shared by all
    # layers, so a pass allocates none of them. Each helper works on a run of `n` images (x.shape[0]).
    # Batch-last makes the strided copies run over rows of n images; for output rows of IMAGE_MAJOR_WIDTH and
    # more, image-major columns (image, position) copy as fast and spare the transposes of the input, the top
    # and its diff (CIFAR-10 quick conv1: ~3 ms a pass). col2im (the data gradient) stays batch-last.
    IMAGE_MAJOR_WIDTH = 24

    def _image_major(self, want_dx=False):
        return not (self.reverse or want_dx) and self.col_shape[-1] >= self.IMAGE_MAJOR_WIDTH

    def _im2col_gemm(self, x, image_major=False):
        """(n, conv_in_channels, *conv_input_shape) -> columns (group, kernel_dim, positions*n)."""
        n = x.shape[0]
        buf = workspace(self.xp, "col", (self.group, self.kernel_dim, prod(self.col_shape) * n), x.dtype)
        if image_major:
            view = im2col(self.xp, x, self.kernel, self.stride, self.pad, self.dilation, self.col_shape)
            buf.reshape((self.conv_in_channels,) + tuple(self.kernel) + (n,) + tuple(self.col_shape))[...] = \
                self.xp.moveaxis(view, 0, 1 + len(self.kernel))
            return buf
        im2col(self.xp, self.xp.moveaxis(x, 0, -1), self.kernel, self.stride, self.pad, self.dilation,
               self.col_shape, axis=1, out=buf)
        return buf

    def _col2im_gemm(self, col, n):
        """Inverse layout of batch-last `_im2col_gemm` for n images, summing overlapping windows (col2im)."""
        col = col.reshape((self.conv_in_channels,) + tuple(self.kernel) + tuple(self.col_shape) + (n,))
        xt = col2im(self.xp, col, self.conv_input_shape, self.stride, self.pad, self.dilation, axis=1)
        return self.xp.moveaxis(xt, -1, 0)

    def _to_gemm(self, y, image_major=False):
        """(n, channels, *col_shape) -> (group, channels/group, positions*n), copied into scratch."""
        n, c = y.shape[:2]
        buf = workspace(self.xp, "top", (self.group, c // self.group, y[0, 0].size * n), y.dtype)
        if image_major:
            buf.reshape(c, n, -1)[...] = y.reshape(n, c, -1).transpose(1, 0, 2)
        else:
            buf.reshape(c, -1, n)[...] = y.reshape(n, c, -1).transpose(1, 2, 0)
        return buf

    def _from_gemm(self, g, channels, n, image_major=False):
        """(group, channels/group, positions*n) -> (n, channels, positions)."""
        if image_major:
            return g.reshape(channels, n, -1).transpose(1, 0, 2)
        return g.reshape(channels, -1, n).transpose(2, 0, 1)

    # Batched columns for at most this many bytes at a time (runs of images), so that the scratch stays small
    # (CIFAR-10 quick: 78 MB of columns for the whole batch) while each GEMM still spans thousands of columns.
    # With one BLAS thread, runs that stay in the cache from im2col to the GEMM where 4 MB still hold 4 images
    # (interleaved A/B: CIFAR-10 quick conv2 37 -> 28 ms forward, 63 -> 58 ms backward; LeNet conv2 5%); fewer
    # images per run lose (short batch-last rows, per-run weight-diff adds: AlexNet/ResNet shapes 10-25%), and
    # with more threads so do the extra GEMM calls (each wakes the pool: 3-5x at 2 threads on a loaded machine).
    # With T threads the small runs are T times as large and must hold 4T images (interleaved A/B at 2 threads,
    # quiet: CIFAR-10 quick 149 -> 142 ms with 8 MB runs, and 24 MB less peak memory; AlexNet and GoogLeNet,
    # whose images take 1-2 per 8 MB, lost 7-10% on 8 MB runs and keep 32 MB).
    COLUMN_BYTES = 32 << 20
    # im2row rows (`_rows`) have no batch-last rows to keep long, and their large runs fall out of the cache:
    # ResNet-50's 56x56 3x3 layers (7.2 MB of rows an image), 1 thread, two interleaved A/Bs in the net: 51-52 ->
    # 47 and 55-56 -> 51-53 ms each forward+backward with 8 MB runs, where the same runs over columns lost 8-11%
    # (res3's 3x3 layers) and AlexNet's conv2 backward 23%.
    ROWS_COLUMN_BYTES = 8 << 20
    COLUMN_BYTES_PER_THREAD = 4 << 20
    MIN_RUN_PER_THREAD = 4

    def _image_bytes(self):
        """Bytes of one image's columns (at least 1)."""
        return max(1, self.kernel_dim * self.group * prod(self.col_shape) * self.mdtype.itemsize)

    def _chunks(self, threads=None):
        """Runs of images [a, b) whose columns fit the column budget of `threads` BLAS threads (the pool's size
        unless given; at least one image each); on a GPU one run."""
        if self.xp is not np:
            return [(0, self.num)]
        per_image = self._image_bytes()
        threads = backend.blas_threads() if threads is None else threads
        step = self.COLUMN_BYTES_PER_THREAD * threads // per_image
        if step < self.MIN_RUN_PER_THREAD * threads:
            step = (self.ROWS_COLUMN_BYTES if self._rows() else self.COLUMN_BYTES) // per_image
        step = max(1, min(self.num, step))
        return [(a, min(a + step, self.num)) for a in range(0, self.num, step)]

    # With T > 1 BLAS threads, the runs of images go to T threads that each run their GEMMs on one BLAS thread
    # (as PyTorch splits a convolution over the batch): the skinny GEMMs of small images scale far better so
    # than inside one OpenBLAS call (CIFAR-10 quick at 2 threads: see benchmarks/RESULTS.md). The runs are the
    # one-thread runs, computed as one thread computes them, and the weight diff adds each run's product in
    # run order, so the results are those of one thread bit for bit. Used where there are at least T such runs,
    # each the cache-sized kind (larger runs of large images run faster as one GEMM on all threads: interleaved
    # A/B at 2 threads, AlexNet 719 ms splitting every run, 639 splitting the cache-sized ones only, 666 not
    # splitting; GoogLeNet 950 / 894 / 986; it also keeps a second thread's 32 MB of columns out of memory),
    # and the runs' weight-diff products fit RUN_PRODUCT_BYTES.
    RUN_PRODUCT_BYTES = 16 << 20

    def _thread_runs(self, want_w=False, runs=None):
        """(runs, threads) to split over threads, or None (one run after another, T BLAS threads per GEMM).
        `runs`: the one-thread runs unless given (the per-image passes give one image each)."""
        threads = backend.blas_threads() if self.xp is np else 1
        if threads < 2 or self.num < threads:
            return None
        if runs is None:
            runs = self._chunks(threads=1)
            if (runs[0][1] - runs[0][0]) * self._image_bytes() > self.COLUMN_BYTES_PER_THREAD:
                return None
        if len(runs) < threads:     # (other runs would change the GEMMs' bits: OpenBLAS's edge kernels)
            return None
        if want_w and len(runs) * self.blobs[0].count * self.mdtype.itemsize > self.RUN_PRODUCT_BYTES:
            return None
        return runs, threads

    def _each_run(self, body, split, runs=None):
        """body(a, b) for every run: with `split` ((runs, threads) from `_thread_runs`) the runs split over the
        threads, each GEMM on its calling thread; else `runs` (the chunks unless given) one after another."""
        if not split:
            for a, z in self._chunks() if runs is None else runs:
                body(a, z)
            return
        runs, threads = split

        def part(lo, hi):
            for a, z in runs[lo:hi]:
                body(a, z)
        with backend.one_blas_thread():
            cpu_split.run(part, len(runs), cpu_split.MIN_PART * threads, threads, pieces=len(runs))

    def _image_runs(self):
        """One run per image (the per-image passes)."""
        return [(n, n + 1) for n in range(self.num)]

    def _weights(self):
        return self.m(self.blobs[0].dev_data).reshape(self.group, self.conv_out_channels // self.group, -1)

    def _gmm(self, a, b, slot="gemm"):
        """Per-group GEMM of (G, m, k) and (G, k, n) stacks into a scratch (G, m, n) (2-D GEMMs: numpy's
        stacked matmul is slower); fp16 goes through backend.matmul (fp32 accumulation)."""
        out = workspace(self.xp, slot, (self.group, a.shape[1], b.shape[2]), a.dtype)
        for i in range(self.group):
            if a.dtype == np.float16:
                out[i] = backend.matmul(a[i], b[i])
            else:
                self.xp.matmul(a[i], b[i], out=out[i])
        return out

    # The transposed add of a (k, m) product falls out of the cache once the product is large (~3.7 ns an
    # element at 512 x 4608 on 1 thread, 8.7 ms, and no faster on 2 threads), while the GEMM gain of that
    # layout is ~10% at most: products of STRAIGHT_PRODUCT_BYTES and more are computed as a^T col^T (m, k). On
    # the Zen 4 VM of 12-02 long runs (1568+ columns) were ~7% faster transposed, so they kept it; on the Xeon
    # of 12-04 (2 threads, backward ms, transposed -> straight) the straight product won at every length:
    # 256 -> 256 3x3 on 14x14 19.1 -> 15.9 (1568 columns) and on 28x28 72.1 -> 64.2 (6272), AlexNet's conv2
    # 62.2 -> 59.1 and conv4 15.5 -> 14.1, whole passes AlexNet 514 -> 491, ResNet-50 1409 -> 1405, so every
    # large product is. A property of the layer, so every path and thread count computes the same products.
    STRAIGHT_PRODUCT_BYTES = 1 << 20

    def _straight_product(self):
        """True when the weight-diff products are computed as (m, k) (else (k, m), added transposed)."""
        per_group = self.kernel_dim * (self.conv_out_channels // self.group) * self.mdtype.itemsize
        return per_group >= self.STRAIGHT_PRODUCT_BYTES

    def _weight_product(self, a, col, straight):
        """a (G, m, N) times the columns (G, k, N) transposed: (G, m, k) when `straight`, else computed as
        col a^T, (G, k, m)."""
        if straight:
            return self._gmm(a, col.transpose(0, 2, 1), "dw")
        return self._gmm(col, a.transpose(0, 2, 1), "dw")

    def _in_diff_layout(self, product, straight):
        """A `_weight_product` (of im2row rows where `_rows` says: kernel_dim ordered (*kernel, channel)) in the
        weight diff's shape and order."""
        shape = self.blobs[0].shape
        product = product if straight else product.transpose(0, 2, 1)
        if self._rows():
            product = np.moveaxis(product.reshape((shape[0],) + tuple(self.kernel) + (shape[1],)), -1, 1)
        return product.reshape(shape)

    def _add_weight_product(self, product, straight):
        """weight diff += a `_weight_product`."""
        self.blobs[0].mut_dev_diff[...] += self._in_diff_layout(product, straight)

    def _diff_in_product_layout(self, straight):
        """A copy of the weight diff laid out as a `_weight_product` (the inverse of `_in_diff_layout`): several
        runs' products are added onto it contiguously and it is stored back once, the sums in the same order as
        adding each product to the diff (CIFAR-10 quick conv2: 20 reordered adds a pass less)."""
        d = self.blobs[0].dev_diff
        if self._rows():
            d = np.moveaxis(d, 1, -1)
        d = d.reshape(self.group, -1, self.kernel_dim)
        return np.array(d if straight else d.transpose(0, 2, 1), order="C")

    def _add_weight_diff(self, a, col):
        """weight diff += a (G, m, N) times the columns (G, k, N) transposed."""
        straight = self._straight_product()
        self._add_weight_product(self._weight_product(a, col, straight), straight)

    # --- receptive-field rows (im2row, CPU): one output position's window per row, channels fastest ----------
    # For few outputs per group OpenBLAS runs all three GEMMs faster with the long (image, position) axis as the
    # rows of the product (1 thread, in cache: 32x75x13312 49 -> 73 GFLOP/s, 32x800x1280 76 -> 78), and the rows
    # copy from a zero-padded channels-last copy of the run in contiguous runs of kw x channels (CIFAR-10 quick
    # conv2 forward, whole pass: columns 28.8 ms, rows ~21). The data gradient then is col2im of rows
    # (col2im_rows). Used for at most ROWS_OUTPUTS outputs per group and kernel_dim >= ROWS_KERNEL_DIM.
    ROWS_OUTPUTS = 64
    ROWS_KERNEL_DIM = 400

    def _rows(self):
        return (self.xp is np and not self.reverse and self.conv_out_channels // self.group <= self.ROWS_OUTPUTS
                and self.kernel_dim >= self.ROWS_KERNEL_DIM and prod(self.kernel) > 1)

    def _row_weights(self, w, transposed=False):
        """The weights (G, M/G, kernel_dim) with each row reordered (*kernel, channel), contiguous; as
        (G, kernel_dim, M/G) when `transposed` (one copy either way)."""
        cg = self.conv_in_channels // self.group
        wk = np.moveaxis(w.reshape(w.shape[:2] + (cg,) + tuple(self.kernel)), 2, -1)
        if transposed:
            return np.ascontiguousarray(np.moveaxis(wk, 1, -1)).reshape(w.shape[0], w.shape[2], w.shape[1])
        return np.ascontiguousarray(wk).reshape(w.shape)

    def _im2row(self, x):
        """Rows (G, n*positions, kernel_dim) of a run x (n, C, *spatial): image-major, each row one receptive
        field ordered (*kernel, channel), copied from a zero-padded channels-last copy of the run."""
        n, groups, nd = x.shape[0], self.group, len(self.kernel)
        cg = self.conv_in_channels // groups
        spatial = tuple(self.conv_input_shape)
        src = workspace(np, "rows_in", (groups, n) + tuple(s + 2 * p for s, p in zip(spatial, self.pad)) + (cg,),
                        x.dtype)
        if any(self.pad):
            src[...] = 0
        inner = src[(slice(None),) * 2 + tuple(slice(p, p + s) for p, s in zip(self.pad, spatial))]
        inner[...] = np.moveaxis(x.reshape((n, groups, cg) + spatial), 2, -1).swapaxes(0, 1)
        view = windows(np, src, self.kernel, self.stride, self.dilation, self.col_shape, axis=2)
        rows = workspace(np, "col", (groups, n * prod(self.col_shape), self.kernel_dim), x.dtype)
        rows.reshape((groups, n) + tuple(self.col_shape) + tuple(self.kernel) + (cg,))[...] = view.transpose(
            (0, 1) + tuple(range(2 + nd, 2 + 2 * nd)) + tuple(range(2, 2 + nd)) + (2 + 2 * nd,))
        return rows

    def _to_rows(self, y):
        """A top (diff) run (n, M, *col_shape) as rows (G, n*positions, M/G), copied into scratch."""
        n, groups = y.shape[0], self.group
        mg = y.shape[1] // groups
        buf = workspace(np, "top", (groups, n * prod(self.col_shape), mg), y.dtype)
        buf.reshape(groups, n, -1, mg)[...] = y.reshape(n, groups, mg, -1).transpose(1, 0, 3, 2)
        return buf

    def _rows_forward(self, x, out, w, bias):
        """Forward by im2row into out (num, M, positions): per group the rows times the weights transposed."""
        groups, mg = self.group, self.num_output // self.group
        wt = self._row_weights(w, transposed=True)

        def one_run(a, z):
            y = self._gmm(self._im2row(x[a:z]), wt).reshape(groups, z - a, -1, mg).transpose(1, 0, 3, 2)
            dst = out[a:z].reshape(y.shape)
            if bias is not None:
                np.add(y, bias.reshape(groups, mg, 1), out=dst)
            else:
                dst[...] = y
        self._each_run(one_run, self._thread_runs())

    def _as_batch(self, arr, channels):
        return self.m(arr).reshape((self.num, channels) + tuple(arr.shape[self.channel_axis + 1:]))

    # --- direct forward (CPU, direct_conv): stride-1 2-D layers with few weights ------------------------------
    # OpenBLAS runs their GEMMs (K = C x kh x kw small, few outputs) at ~30 GFLOP/s after an im2col copy; the
    # direct loop makes the products at ~37 without columns. Measured forward, 1 thread (GEMM -> direct ms):
    # LeNet conv1 (500 weights) 2.0 -> 0.96, CIFAR-10 quick conv1 (2400) 16.0 -> 11.7, 3x3 from 3 channels to
    # 64 on 32x32 (1728) 5.0 -> 3.3, 4 -> 96 channels (3456) 9.1 -> 6.2; level from ~3500 to 6400 weights, and
    # slower for 32 -> 16 channels 3x3 (4608: 2.4 -> 2.9), 5x5 to 128 outputs and the per-image planes (3 -> 64
    # channels on 112x112: 6.9 -> 9.8). The backward keeps the GEMMs.
    DIRECT_WEIGHTS = 3072

    def _direct(self, top):
        """True on numpy for an ungrouped stride-1, undilated 2-D convolution (not 1x1) with at most
        DIRECT_WEIGHTS weights and below the per-image size, in float32/64 straight into the top."""
        weights = self.num_output * self.kernel_dim
        return (self.xp is np and not self.reverse and self.group == 1 and len(self.kernel) == 2
                and prod(self.kernel) > 1 and weights <= self.DIRECT_WEIGHTS
                and prod(self.col_shape) * weights < self.PER_IMAGE_MACS
                and self.stride == [1, 1] and self.dilation == [1, 1]
                and self.mdtype in (np.float32, np.float64) and top.dtype == self.mdtype)

    # --- register-tiled direct convolution (CPU with numba, conv_tiles): stride-1 2-D layers, forward, data and
    # weight gradients, in place of im2col + GEMM (whose sums round differently: with numba off the GEMMs run).
    # Measured, 1 thread (layer path -> tiled ms): CIFAR-10 quick forward conv1 13.3 -> 8.5, conv2 22.4 -> 15.6,
    # conv3 10.1 -> 8.8; weight diff conv1 14.6 -> 6.2, conv2 23.2 -> 16.6, conv3 12.1 -> 8.3. LeNet conv1 (25
    # taps) is faster on direct_conv's loop (1.1 vs 1.5 ms forward), hence the tap floor. The output bound, A/B
    # in the nets (1 thread, forward+backward of the layers it would take): GoogLeNet's 3x3/5x5 layers 700-715 ms
    # tiled to 64 outputs, 663-682 to 128, 684-731 to 32; ResNet-50's res3 3x3 (128 outputs) level, and all its
    # stride-1 3x3 layers tiled 1168-1223 -> 1470-1526 ms (256-512 outputs: OpenBLAS's GEMMs are efficient).
    # Where numba fills 512-bit registers (fastpath.full_width_vectors: 32-position tiles, fused float32 sums)
    # the tiles also beat the GEMMs up to 256 outputs (2 threads, 12-04 Xeon, GEMM -> tiled ms, forward /
    # backward: ResNet-50's 3x3 of 256 on 14x14 8.9 -> 7.6 / 18.2 -> 18.8, GoogLeNet's 160 -> 224 on 14x14
    # 5.6 -> 4.2 / 10.3 -> 9.8, 128 -> 192 on 28x28 11.9 -> 11.1 / 28.1 -> 25.8; ResNet-50's pass 1426 -> 1374,
    # its 3x3 of 512 on 7x7 tiled too 1475).
    TILED_KERNEL_DIM = 48
    TILED_OUTPUTS = 128
    WIDE_TILED_OUTPUTS = 256
    # The tiled data gradient sums every input position over all kh x kw taps of the top diff padded kernel - 1 -
    # pad, zeros too: for an unpadded layer on small planes that is H*W / (OH*OW) times the useful products (LeNet
    # conv2: 2.25x; 1 thread, backward 15.2-19.3 ms tiled against 7.5-12.1 with im2row + GEMM + col2im_rows), so
    # it is tiled only up to TILED_DATA_SPAN (same-padded layers: 1).
    TILED_DATA_SPAN = 1.3

    def _tiled(self, blob, what="forward"):
        """True where the tiled kernel computes `what` ("forward" into blob's data, "data" or "weights" from
        its diff / data): numpy with the compiled loops on, ungrouped, stride 1, undilated, 2-D, at least
        TILED_KERNEL_DIM taps and at most TILED_OUTPUTS (WIDE_TILED_OUTPUTS) outputs, in float32/64, rows (or
        window rows) the kernel fills; the data gradient also needs the padding below the kernel size and no
        more than TILED_DATA_SPAN input positions an output position."""
        if what == "weights":
            fills = conv_tiles.weights_apply(self.kernel, self.channels)
        else:
            fills = conv_tiles.applies(self.kernel, (self.conv_input_shape if what == "data" else self.col_shape)[-1])
        return (fills and self.xp is np and not self.reverse and self.group == 1 and len(self.kernel) == 2
                and self.stride == [1, 1] and self.dilation == [1, 1] and self.kernel_dim >= self.TILED_KERNEL_DIM
                and self.mdtype in (np.float32, np.float64)
                and (blob.diff_dtype if what == "data" else blob.dtype) == self.mdtype
                and (what != "data" or (all(p < k for p, k in zip(self.pad, self.kernel))
                                        and prod(self.conv_input_shape) <= self.TILED_DATA_SPAN * prod(self.col_shape)))
                and fastpath.loops(np, self.mdtype) is not None
                and self.num_output <= (self.WIDE_TILED_OUTPUTS if fastpath.full_width_vectors()
                                        else self.TILED_OUTPUTS))

    # --- per-image passes (CPU, large images): Caffe's own loop, GEMMs straight into the top / bottom diff --
    # With many output positions per image the per-image GEMMs are as efficient as one batched GEMM, and they
    # need no batch-last reordering of the input, the top or its diff; a 1x1/stride-1 convolution then copies
    # nothing at all. Measured (1 thread): forward 1.1-2x faster from 14x14 planes up (ResNet-50's 14x14 1x1
    # layers 10-20% forward and backward; 7x7, 8x8 and 13x13 planes are faster batched: AlexNet's 13x13 3x3
    # forward 51 vs 61 ms); backward (ResNet-50 shapes) 1.4-1.9x for 1x1 but slower for larger kernels
    # (per-image col2im), which keep the batched backward. Small per-image GEMMs lose with 2 BLAS threads (each
    # call wakes the pool: CIFAR-10 quick went 3.4x -> 5.1x PyTorch's CPU time), hence the work floor.
    PER_IMAGE_POSITIONS = 196
    PER_IMAGE_MACS = 8 << 20

    def _per_image(self, blob, diff=False):
        """True on numpy for large output planes and GEMMs, when `blob`'s data (or diff) is the math dtype."""
        positions = prod(self.col_shape)
        return (not self.reverse and self.xp is np and positions >= self.PER_IMAGE_POSITIONS
                and positions * self.kernel_dim * self.num_output >= self.PER_IMAGE_MACS
                and (blob.diff_dtype if diff else blob.dtype) == self.mdtype)

    def _unit_kernel(self):
        """1x1 kernels without padding, at any stride: the windows do not overlap, so the per-image data
        gradient is a strided scatter (stride-2 1x1 layers of ResNet-50: 8-25% faster backward than batched)."""
        return all(k == 1 for k in self.kernel) and not any(self.pad)

    def _pointwise(self):
        return (all(k == 1 for k in self.kernel) and all(s == 1 for s in self.stride) and not any(self.pad))

    def _image_col(self, xn):
        """Columns (group, kernel_dim, positions) of one image (C, *spatial); a view for 1x1 kernels."""
        shape = (self.group, self.kernel_dim, prod(self.col_shape))
        if self._pointwise():
            return xn.reshape(shape)
        return im2col(np, xn, self.kernel, self.stride, self.pad, self.dilation, self.col_shape, axis=1,
                      out=workspace(np, "col", shape, xn.dtype)).reshape(shape)

    def _forward_per_image(self, x, out, w):
        mg = self.num_output // self.group

        def image(n, _):
            col = self._image_col(x[n])
            for gi in range(self.group):
                np.matmul(w[gi], col[gi], out=out[n, gi * mg:(gi + 1) * mg])
        runs = self._image_runs()
        self._each_run(image, self._thread_runs(runs=runs), runs)

    def _per_image_transposed(self):
        """True when the per-image weight products are computed as (kernel_dim, outputs) and added transposed:
        OpenBLAS runs a product over one image's positions faster with the larger of the two as its rows (1
        thread; 3136 positions: 64 x 256 106 -> 140 GFLOP/s, 64 x 576 121 -> 183; 784: 128 x 256 130 -> 153,
        256 x 512 171 -> 199). A property of the layer, so any thread count gives the same bits."""
        return self.kernel_dim > self.conv_out_channels // self.group

    def _backward_per_image(self, g, x, dx, w, want_w):
        """Weight diff accumulated image by image, from each image's columns (a view for 1x1 kernels) and its top
        diff as it lies, and for 1x1 kernels the bottom diff (when dx is given) one GEMM each (at stride 1
        straight into dx, else into columns added at their strided positions). Any kernel takes it when only the
        weight diff is wanted (a net's first convolution, as Caffe runs it; 1 thread: AlexNet conv1 36 -> 29 ms,
        GoogLeNet's 27 -> 24, ResNet-50's 30 -> 29; 2 threads 35 -> 27 and 24 -> 17 ms).
        Split over threads, each image's weight product is kept and the products are added in image order."""
        mg, cg = self.num_output // self.group, self.channels // self.group
        gw = g.reshape(self.num, self.group, mg, -1)
        runs = self._image_runs()
        if want_w:
            transposed = self._per_image_transposed()
            acc = np.zeros((self.group,) + ((self.kernel_dim, mg) if transposed else (mg, self.kernel_dim)),
                           dtype=g.dtype)

            def product(n, out):
                col = self._image_col(x[n])
                for gi in range(self.group):
                    if transposed:
                        np.matmul(col[gi], gw[n, gi].T, out=out[gi])
                    else:
                        np.matmul(gw[n, gi], col[gi].T, out=out[gi])
            split = self._thread_runs(want_w=True, runs=runs)
            if split:
                products = workspace(np, "dw_runs", (self.num,) + acc.shape, g.dtype)
                self._each_run(lambda n, _: product(n, products[n]), split)
                for n in range(self.num):
                    acc += products[n]
            else:                                       # (one thread: each product added as it comes)
                part = workspace(np, "dw", acc.shape, g.dtype)
                for n in range(self.num):
                    product(n, part)
                    acc += part
            if transposed:
                acc = acc.transpose(0, 2, 1)
            self.blobs[0].mut_dev_diff[...] += acc.reshape(self.blobs[0].shape)
        if dx is None:
            return

        pointwise = self._pointwise()
        col_shape = (self.group, self.kernel_dim, prod(self.col_shape))          # (strided: the columns)

        def image_x(n, _):
            dxn = dx[n].reshape(self.group, cg, -1) if pointwise else workspace(np, "dcol", col_shape, g.dtype)
            for gi in range(self.group):
                np.matmul(w[gi].T, gw[n, gi], out=dxn[gi])
            if not pointwise:          # windows apart: zeros, then 0 + each column's value (col2im's sums)
                dst = dx[n]
                dst[...] = 0
                hit = dst[(slice(None),) + tuple(slice(None, o * s, s) for o, s in zip(self.col_shape, self.stride))]
                np.add(hit, dxn.reshape(hit.shape), out=hit)
        self._each_run(image_x, self._thread_runs(runs=runs), runs)

    # --- cuDNN (GPU mode, when the frontend is installed and the layer's engine allows it) ----------
    def _cudnn_run(self):
        """(CuDNNConvolution, ConvSpec) when this pass runs on cuDNN, else None (im2col + GEMM)."""
        if not backend.is_gpu() or not self.policy.use_cudnn:
            return None
        if self._cudnn_engine is None:
            cudnn = cudnn_conv.frontend()
            self._cudnn_engine = cudnn_conv.CuDNNConvolution(cudnn, self.policy, self.name) if cudnn else False
        if not self._cudnn_engine:
            return None
        spec = cudnn_conv.conv_spec(self, (self.num, self.conv_in_channels) + tuple(self.conv_input_shape),
                                    self.mdtype)
        return None if spec is None else (self._cudnn_engine, spec)

    def _cudnn(self, run, direction, out_shape, **arrays):
        """A fresh array of `out_shape` holding `direction`'s output of the arrays (x, w, y roles of cuDNN)."""
        engine, spec = run
        out = self.xp.empty(tuple(out_shape), spec.dtype)
        engine.run(spec, direction, dict(arrays, **{{"fprop": "y", "dgrad": "x", "wgrad": "w"}[direction]: out}))
        return out

    # --- passes ---------------------------------------------------------------------------------
    def forward(self, bottom, top):
        w = self._weights()
        run = self._cudnn_run()
        for b, t in zip(bottom, top):
            x = self._as_batch(b.dev_data, self.channels)
            bias = self.m(self.blobs[1].dev_data)[:, None] if self.bias_term else None
            if run:          # Deconvolution is the data gradient of the convolution whose image is its top
                y = self._cudnn(run, "dgrad" if self.reverse else "fprop", t.shape,
                                **({"y": x} if self.reverse else {"x": x}), w=self.m(self.blobs[0].dev_data))
                y = y.reshape(self.num, self.num_output, -1)
            elif self._tiled(t):
                conv_tiles.forward(x, w[0], bias[:, 0] if bias is not None else None, self.pad, self.kernel,
                                   t.mut_dev_data.reshape((self.num, self.num_output) + tuple(self.col_shape)))
                continue
            elif self._direct(t):
                direct_conv.forward(x, w[0], bias[:, 0] if bias is not None else None, self.pad, self.kernel,
                                    t.mut_dev_data.reshape((self.num, self.num_output) + tuple(self.col_shape)))
                continue
            elif self._per_image(t):
                out = t.mut_dev_data.reshape(self.num, self.num_output, -1)
                self._forward_per_image(x, out, w)
                if bias is not None:
                    out += bias
                continue
            elif self._rows():
                self._rows_forward(x, t.mut_dev_data.reshape(self.num, self.num_output, -1), w, bias)
                continue
            elif self.reverse:
                y = self._col2im_gemm(self._gmm(w.transpose(0, 2, 1), self._to_gemm(x)), self.num)
                y = y.reshape(self.num, self.num_output, -1)
            else:
                out = t.mut_dev_data.reshape(self.num, self.num_output, -1)
                wide = self._image_major()

                def one_run(a, z):
                    y = self._from_gemm(self._gmm(w, self._im2col_gemm(x[a:z], wide)), self.num_output, z - a, wide)
                    if bias is not None:
                        self.xp.add(y, bias, out=out[a:z])
                    else:
                        out[a:z] = y
                self._each_run(one_run, self._thread_runs())
                continue
            out = t.mut_dev_data.reshape(y.shape)
            if bias is not None:
                self.xp.add(y, bias, out=out)
            else:
                out[...] = y

    def backward(self, top, propagate_down, bottom):
        w = self._weights()
        want_w = self.param_propagate_down[0] if self.param_propagate_down else False
        want_b = self.bias_term and len(self.param_propagate_down) > 1 and self.param_propagate_down[1]
        for i, (t, b) in enumerate(zip(top, bottom)):
            g = self._as_batch(t.dev_diff, self.num_output)
            if want_b:
                self.blobs[1].mut_dev_diff[...] += g.reshape(self.num, self.num_output, -1).sum(axis=(0, 2))
            if not (want_w or propagate_down[i]):
                continue
            run = self._cudnn_run()
            if run:
                self._cudnn_backward(run, g, b, want_w, propagate_down[i])
            elif self.reverse:
                col = self._im2col_gemm(g)                   # columns of the top diff
                if want_w:
                    self._add_weight_diff(self._to_gemm(self._as_batch(b.dev_data, self.channels)), col)
                if propagate_down[i]:
                    b.mut_dev_diff[...] = self._from_gemm(self._gmm(w, col), self.channels, self.num).reshape(
                        b.shape)
            elif not propagate_down[i] or self._tiled(b, "weights") or self._tiled(b, "data"):
                if want_w:                                   # the two diffs apart
                    self._weight_diff(g, b, w)
                if propagate_down[i]:
                    self._data_diff(g, b, w)
            elif self._unit_kernel() and self._per_image(b, diff=True):
                dx = b.mut_dev_diff.reshape((self.num, self.channels) + tuple(self.conv_input_shape))
                self._backward_per_image(g, self._as_batch(b.dev_data, self.channels), dx, w, want_w)
            else:
                self._batched_backward(g, b, w, want_w, True)

    def _weight_diff(self, g, b, w):
        """The weight diff alone (a net's first convolution, or beside a tiled bottom diff, or tiled itself)."""
        if self._tiled(b, "weights"):
            self.blobs[0].mut_dev_diff[...] += conv_tiles.weight_gradient(
                self._as_batch(b.dev_data, self.channels), g, self.pad, self.kernel)
        elif self._per_image(b, diff=True):
            self._backward_per_image(g, self._as_batch(b.dev_data, self.channels), None, w, True)
        else:
            self._batched_backward(g, b, w, True, False)

    def _data_diff(self, g, b, w):
        """The bottom diff alone (beside a tiled weight diff, or tiled itself)."""
        dx = b.mut_dev_diff.reshape((self.num, self.channels) + tuple(self.conv_input_shape))
        if self._tiled(b, "data"):
            conv_tiles.data_gradient(g, self.m(self.blobs[0].dev_data), self.pad, self.kernel, dx)
        elif self._unit_kernel() and self._per_image(b, diff=True):
            self._backward_per_image(g, self._as_batch(b.dev_data, self.channels), dx, w, False)
        else:
            self._batched_backward(g, b, w, False, True)

    def _batched_backward(self, g, b, w, want_w, want_x):
        """Weight and bottom diffs run by run of images (split over threads where `_thread_runs` says), over
        columns or, where `_rows` says, im2row rows."""
        x = self._as_batch(b.dev_data, self.channels)
        dx = b.mut_dev_diff.reshape(x.shape) if want_x else None
        rows = self._rows()
        wide = None if rows else self._image_major(dx is not None)
        wr = self._row_weights(w) if rows and dx is not None else None
        split = self._thread_runs(want_w)
        products = slot = None
        straight = want_w and self._straight_product()
        if split and want_w:                 # each run's weight product, added below in run order
            m, k = self.conv_out_channels // self.group, self.kernel_dim
            products = workspace(np, "dw_runs", (len(split[0]), self.group) + ((m, k) if straight else (k, m)),
                                 self.mdtype)
            slot = {run: i for i, run in enumerate(split[0])}

        runs = split[0] if split else self._chunks()
        acc = (self._diff_in_product_layout(straight) if want_w and self.xp is np and len(runs) > 1
               and self.blobs[0].diff_dtype == self.mdtype else None)

        def add(product):
            if acc is not None:
                np.add(acc, product, out=acc)
            else:
                self._add_weight_product(product, straight)

        def one_run(a, z):
            gg = self._to_rows(g[a:z]) if rows else self._to_gemm(g[a:z], wide)
            if want_w:
                if rows:                     # (as (G, m, N) and (G, k, N) views)
                    product = self._weight_product(gg.transpose(0, 2, 1), self._im2row(x[a:z]).transpose(0, 2, 1),
                                                   straight)
                else:
                    product = self._weight_product(gg, self._im2col_gemm(x[a:z], wide), straight)
                if products is not None:
                    products[slot[(a, z)]] = product
                else:
                    add(product)
            if dx is not None and rows:
                grad = self._gmm(gg, wr).reshape((self.group, z - a) + tuple(self.col_shape) + tuple(self.kernel)
                                                 + (self.conv_in_channels // self.group,))
                dx[a:z] = col2im_rows(np, grad, self.conv_input_shape, self.stride, self.pad,
                                      self.dilation).reshape(dx[a:z].shape)
            elif dx is not None:
                dx[a:z] = self._col2im_gemm(self._gmm(w.transpose(0, 2, 1), gg), z - a)
        self._each_run(one_run, split)
        if products is not None:
            for product in products:                    # in run order: one thread's sums
                add(product)
        if acc is not None:
            self.blobs[0].mut_dev_diff[...] = self._in_diff_layout(acc, straight)

    def backward_reads_data(self, bottom, top):
        return range(len(bottom)), ()

    def _cudnn_backward(self, run, g, b, want_w, want_x):
        """Weight and bottom diffs through cuDNN (for Deconvolution the top diff is the convolution's image)."""
        x = self._as_batch(b.dev_data, self.channels)
        image, loss = (g, x) if self.reverse else (x, g)
        if want_w:
            self.blobs[0].mut_dev_diff[...] += self._cudnn(run, "wgrad", self.blobs[0].shape, x=image, y=loss)
        if want_x:
            w = self.m(self.blobs[0].dev_data)
            dx = (self._cudnn(run, "fprop", b.shape, x=g, w=w) if self.reverse
                  else self._cudnn(run, "dgrad", b.shape, y=g, w=w))
            b.mut_dev_diff[...] = dx


@register("Convolution")
class ConvolutionLayer(_BaseConvolution):
    """Caffe's Convolution (N-D, groups, dilation): im2col + GEMM."""

    def compute_output_shape(self, spatial):
        return self.conv_output_shape(spatial)


@register("Deconvolution")
class DeconvolutionLayer(_BaseConvolution):
    """Caffe's Deconvolution: the convolution's backward pass as forward (weights C_in x C_out/g x k)."""

    reverse = True

    def compute_output_shape(self, spatial):
        return [s * (i - 1) + d * (k - 1) + 1 - 2 * p
                for i, k, s, p, d in zip(spatial, self.kernel, self.stride, self.pad, self.dilation)]


@register("Im2col")
class Im2colLayer(_ConvGeometry, Layer):
    """Caffe's Im2col: each output position's receptive field as channels (C*prod(kernel))."""

    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        self.parse_geometry(bottom)

    def reshape(self, bottom, top):
        self.check_bottom_shape(bottom)
        self.spatial = list(bottom[0].shape[self.channel_axis + 1:])
        self.out = self.conv_output_shape(self.spatial)
        self.check(all(o > 0 for o in self.out), "output spatial shape %s is empty" % self.out)
        top[0].reshape(tuple(bottom[0].shape[:self.channel_axis]) + (self.channels * prod(self.kernel),)
                       + tuple(self.out))

    def forward(self, bottom, top):
        x = bottom[0].dev_data.reshape((self.num, self.channels) + tuple(self.spatial))
        col = im2col(self.xp, x, self.kernel, self.stride, self.pad, self.dilation, self.out)
        top[0].mut_dev_data[...] = col.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        col = top[0].dev_diff.reshape((self.num, self.channels) + tuple(self.kernel) + tuple(self.out))
        bottom[0].mut_dev_diff[...] = col2im(self.xp, col, self.spatial, self.stride, self.pad,
                                             self.dilation).reshape(bottom[0].shape)


_PP = caffe_pb2.PoolingParameter


@register("Pooling")
class PoolingLayer(Layer):
    """Caffe's Pooling: MAX (optional mask top), AVE (padded divisor), STOCHASTIC; ceil/floor rounding."""

    exact_num_bottom = 1
    min_top = 1
    max_top = 2

    def layer_setup(self, bottom, top):
        pp = self.layer_param.pooling_param
        self.method = pp.pool
        if self.method != _PP.MAX and len(top) > 1:
            raise self.error("only MAX pooling has a second (mask) top; got %d tops" % len(top))
        self.global_pooling = pp.global_pooling
        if self.global_pooling:
            self.check(not (pp.HasField("kernel_size") or pp.HasField("kernel_h") or pp.HasField("kernel_w")),
                       "With Global_pooling: true Filter size cannot specified")
        else:
            self.check((not pp.HasField("kernel_size")) != (not (pp.HasField("kernel_h") and pp.HasField("kernel_w"))),
                       "Filter size is kernel_size OR kernel_h and kernel_w; not both")
            self.check(pp.HasField("kernel_size") or (pp.HasField("kernel_h") and pp.HasField("kernel_w")),
                       "For non-square filters both kernel_h and kernel_w are required.")
        self.check((not pp.HasField("pad") and pp.HasField("pad_h") and pp.HasField("pad_w"))
                   or (not pp.HasField("pad_h") and not pp.HasField("pad_w")),
                   "pad is pad OR pad_h and pad_w are required.")
        self.check((not pp.HasField("stride") and pp.HasField("stride_h") and pp.HasField("stride_w"))
                   or (not pp.HasField("stride_h") and not pp.HasField("stride_w")),
                   "Stride is stride OR stride_h and stride_w are required.")
        self.check(bottom[0].num_axes == 4, "Input must have 4 axes, corresponding to (num, channels, height, "
                   "width); got %s" % bottom[0].shape_string())
        if self.global_pooling:
            self.kernel = list(bottom[0].shape[2:])
        elif pp.HasField("kernel_size"):
            self.kernel = [pp.kernel_size] * 2
        else:
            self.kernel = [pp.kernel_h, pp.kernel_w]
        self.check(all(k > 0 for k in self.kernel), "Filter dimensions cannot be zero.")
        self.pad = [pp.pad_h, pp.pad_w] if pp.HasField("pad_h") else [pp.pad] * 2
        self.stride = [pp.stride_h, pp.stride_w] if pp.HasField("stride_h") else [pp.stride] * 2
        self.check(all(s > 0 for s in self.stride), "Stride dimensions must be nonzero.")
        if self.global_pooling:
            self.check(self.pad == [0, 0] and self.stride == [1, 1],
                       "With Global_pooling: true; only pad = 0 and stride = 1")
        if any(self.pad):
            self.check(self.method in (_PP.AVE, _PP.MAX), "Padding implemented only for average and max pooling.")
            self.check(self.pad[0] < self.kernel[0] and self.pad[1] < self.kernel[1],
                       "pad (%d, %d) must be smaller than the kernel (%d, %d)" % tuple(self.pad + self.kernel))
        # NVCaffe's torch_pooling is Torch's floor rule, the same as BVLC's round_mode: FLOOR
        self.round_ceil = pp.round_mode == _PP.CEIL and not pp.torch_pooling

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:                # (messages built only when raised: reshape runs every pass)
            raise self.error("Input must have 4 axes, corresponding to (num, channels, height, width); got %s"
                             % bottom[0].shape_string())
        self.in_shape = list(bottom[0].shape[2:])
        if self.global_pooling:
            self.kernel = list(self.in_shape)
        rnd = math.ceil if self.round_ceil else math.floor
        out = [int(rnd(float(s + 2 * p - k) / st)) + 1
               for s, p, k, st in zip(self.in_shape, self.pad, self.kernel, self.stride)]
        if any(self.pad):
            # the last pooling window must start strictly inside the image, else clip it
            out = [o - 1 if (o - 1) * st >= s + p else o
                   for o, st, s, p in zip(out, self.stride, self.in_shape, self.pad)]
        if not all(o > 0 for o in out):
            raise self.error("pooled output %s is empty for input %s" % (out, bottom[0].shape_string()))
        self.out = out
        # padded plane that holds every window: left pad, then at least up to the last window's end
        self.padded_shape = [max(p + s, (o - 1) * st + k)
                             for p, s, o, st, k in zip(self.pad, self.in_shape, out, self.stride, self.kernel)]
        shape = tuple(bottom[0].shape[:2]) + tuple(out)
        for t in top:
            t.reshape(shape)
        self._divisor = None

    def _windows(self, x, fill):
        """(N, C, kh, kw, PH, PW) strided view of x padded with `fill`."""
        xpad = padded(self.xp, x, self.pad, self.padded_shape, fill)
        return windows(self.xp, xpad, self.kernel, self.stride, [1, 1], self.out)

    def _offsets(self):
        return [(i, j) for i in range(self.kernel[0]) for j in range(self.kernel[1])]

    def _ave_divisor(self):
        """Caffe's AVE pool size per output: the window clipped to the padded image (H + 2 pad)."""
        if self._divisor is None:
            sizes = []
            for o, st, p, k, s in zip(self.out, self.stride, self.pad, self.kernel, self.in_shape):
                start = np.arange(o) * st - p
                sizes.append(np.minimum(start + k, s + p) - start)
            self._divisor = self.xp.asarray(np.outer(sizes[0], sizes[1]).astype(self.mdtype))
        return self._divisor

    def _loop_args(self):
        return (self.kernel[0], self.kernel[1], self.stride[0], self.stride[1], self.pad[0], self.pad[1])

    def _fast_pool(self, loops, x, out):
        """MAX/AVE forward by the compiled loops (same numbers as the offset loops below), into `out`."""
        x3 = np.ascontiguousarray(x).reshape((-1,) + tuple(self.in_shape))
        result = np.empty(x.shape[:2] + tuple(self.out), dtype=x.dtype) if out is None else out
        out3 = result.reshape((x3.shape[0],) + tuple(self.out))
        if self.method == _PP.MAX:
            arg = getattr(self, "arg", None)         # the last pass's winners: refilled, not reallocated,
            if not (type(arg) is np.ndarray and arg.shape == result.shape and arg.dtype == np.int32
                    and arg.flags.c_contiguous and arg.flags.owndata):    # unless LMS moved it into its pool
                arg = np.empty(result.shape, dtype=np.int32)
            loops.max_pool(x3, out3, arg.reshape(out3.shape), *self._loop_args(),
                           x.dtype.type(np.finfo(x.dtype).min))
            self.arg = arg
        else:
            loops.ave_pool(x3, out3, self._ave_divisor(), *self._loop_args(), x.dtype.type(0))
        return result

    def pool(self, x, want_mask=False, out=None):
        """Pooled output of x (N, C, H, W) in the math dtype, and the MAX mask when asked for. The compiled
        loops write into `out` (a contiguous array of x's dtype) when given; the numpy code returns new arrays.
        MAX and STOCHASTIC remember the chosen kernel offset per output (`self.arg`, -1 for none)."""
        xp = self.xp
        loops = fastpath.loops(xp, x.dtype)
        if loops is not None and self.method in (_PP.MAX, _PP.AVE):
            best = self._fast_pool(loops, x, out)
        elif self.method == _PP.MAX:
            # Caffe's scan: start at -FLT_MAX, take an element only when strictly greater (first max kept,
            # a NaN never wins)
            lowest = np.finfo(self.mdtype).min
            win = self._windows(x, lowest)
            best = xp.full(x.shape[:2] + tuple(self.out), lowest, dtype=x.dtype)
            arg = xp.full(best.shape, -1, dtype="int32")
            for k, (i, j) in enumerate(self._offsets()):
                v = win[:, :, i, j]
                better = v > best
                best = xp.where(better, v, best)
                arg += (k - arg) * better
            self.arg = arg
        if self.method == _PP.MAX:
            mask = None
            if want_mask:
                kw = self.kernel[1]
                h = xp.arange(self.out[0])[:, None] * self.stride[0] - self.pad[0] + self.arg // kw
                w = xp.arange(self.out[1])[None, :] * self.stride[1] - self.pad[1] + self.arg % kw
                mask = xp.where(self.arg >= 0, h * self.in_shape[1] + w, -1)
            return best, mask
        if self.method == _PP.AVE:
            if loops is not None:
                return best, None
            win = self._windows(x, 0)
            total = xp.zeros(x.shape[:2] + tuple(self.out), dtype=x.dtype)
            for i, j in self._offsets():                 # Caffe's order: row by row, starting from zero
                total += win[:, :, i, j]
            return total / self._ave_divisor(), None
        win = self._windows(x, 0)
        total = win.sum(axis=(2, 3))
        if self.phase == caffe_pb2.TRAIN:
            # pick each window's element with probability proportional to its (non-negative) value
            thres = xp.asarray(backend.rng().random(total.shape).astype(self.mdtype)) * total
            csum = xp.zeros_like(total)
            val = xp.zeros_like(total)
            arg = xp.full(total.shape, -1, dtype="int32")
            for k, (i, j) in enumerate(self._offsets()):
                v = win[:, :, i, j]
                csum = csum + v
                hit = (csum >= thres) & (arg < 0)
                val = xp.where(hit, v, val)
                arg += (k - arg) * hit
            self.arg = arg
            return val, None
        sq = (win * win).sum(axis=(2, 3))
        return xp.where(total > 0, sq / xp.where(total > 0, total, 1), 0), None

    def _tiled(self):
        """True when the windows tile the input exactly (kernel = stride, no padding, nothing left over)."""
        return (self.kernel == self.stride and not any(self.pad)
                and all(o * k == s for o, k, s in zip(self.out, self.kernel, self.in_shape)))

    def unpool(self, g, out=None):
        """Bottom diff (N, C, H, W) for the top diff g, from the last `pool` call (written into `out`, a
        contiguous array of g's dtype, by the compiled loops)."""
        xp = self.xp
        if self.method == _PP.STOCHASTIC and self.phase != caffe_pb2.TRAIN:
            raise self.error("STOCHASTIC pooling backpropagates only in the TRAIN phase")
        if self.method == _PP.AVE:
            g = g / self._ave_divisor()
        loops = fastpath.loops(xp, g.dtype)
        if loops is not None and self.method in (_PP.MAX, _PP.AVE):
            g3 = np.ascontiguousarray(g).reshape((-1,) + tuple(self.out))
            result = np.empty(g.shape[:2] + tuple(self.in_shape), dtype=g.dtype) if out is None else out
            dx = result.reshape((g3.shape[0],) + tuple(self.in_shape))
            if self.method == _PP.MAX and self._tiled():
                loops.max_unpool_tiled(g3, np.ascontiguousarray(self.arg).reshape(g3.shape), dx, *self.kernel)
                return result
            if self.method == _PP.MAX:
                arg3 = np.ascontiguousarray(self.arg).reshape(g3.shape)
                loops.max_unpool(g3, arg3, dx, *self._loop_args())
            else:
                loops.ave_unpool(g3, dx, *self._loop_args())
            return result
        if self.method == _PP.AVE:
            def piece(offs):
                return g
        else:
            def piece(offs):                             # branch-free select of the winners
                return xp.where(self.arg == offs[0] * self.kernel[1] + offs[1], g, 0)
        acc = accumulate_windows(xp, piece, self.padded_shape, self.stride, [1, 1], kernel=self.kernel,
                                 dtype=g.dtype)
        return crop(acc, self.pad, self.in_shape)

    def forward(self, bottom, top):
        x = self.m(bottom[0].dev_data)
        dst = top[0].mut_dev_data
        out, mask = self.pool(x, len(top) > 1, dst if dst.dtype == x.dtype else None)
        if out is not dst:
            dst[...] = out
        if mask is not None:
            top[1].mut_dev_data[...] = mask

    def backward_reads_data(self, bottom, top):
        return (), ()                                    # the winners are kept in self.arg

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            g = self.m(top[0].dev_diff)
            dst = bottom[0].mut_dev_diff
            dx = self.unpool(g, dst if dst.dtype == g.dtype else None)
            if dx is not dst:
                dst[...] = dx


@register("SPP")
class SPPLayer(Layer):
    """Caffe's spatial pyramid pooling: pooling at 1, 2, 4, ... bins per side, flattened and concatenated."""

    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        sp = self.layer_param.spp_param
        self.pyramid_height = sp.pyramid_height
        self.check(self.pyramid_height > 0, "pyramid_height must be positive")
        self.in_shape = None

    def _pooling_param(self, level, h, w):
        sp = self.layer_param.spp_param
        lp = caffe_pb2.LayerParameter(name="%s_level%d" % (self.name, level), type="Pooling")
        lp.phase = self.phase
        bins = 2 ** level
        pp = lp.pooling_param
        kh, kw = int(math.ceil(h / float(bins))), int(math.ceil(w / float(bins)))
        pp.pad_h, pp.pad_w = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        pp.kernel_h, pp.kernel_w = kh, kw
        pp.stride_h, pp.stride_w = kh, kw
        pp.pool = {caffe_pb2.SPPParameter.MAX: _PP.MAX, caffe_pb2.SPPParameter.AVE: _PP.AVE,
                   caffe_pb2.SPPParameter.STOCHASTIC: _PP.STOCHASTIC}[sp.pool]
        return lp

    def reshape(self, bottom, top):
        self.check(bottom[0].num_axes == 4, "Input must have 4 axes, corresponding to (num, channels, height, "
                   "width); got %s" % bottom[0].shape_string())
        h, w = bottom[0].shape[2:]
        self.check(h > 0 and w > 0, "Input dimensions cannot be zero.")
        if self.in_shape != bottom[0].shape:
            self.in_shape = bottom[0].shape
            self.pools = []
            for level in range(self.pyramid_height):
                layer = PoolingLayer(self._pooling_param(level, h, w), dtype=self.dtype)
                layer.setup(bottom, [Blob(dtype=self.dtype)])
                self.pools.append(layer)
        n = bottom[0].shape[0]
        self.widths = [bottom[0].shape[1] * p.out[0] * p.out[1] for p in self.pools]
        if self.pyramid_height == 1:
            top[0].reshape(tuple(bottom[0].shape[:2]) + tuple(self.pools[0].out))
        else:
            top[0].reshape(n, sum(self.widths))

    def forward(self, bottom, top):
        x = self.m(bottom[0].dev_data)
        n = x.shape[0]
        out = top[0].mut_dev_data.reshape(n, -1)
        start = 0
        for layer, width in zip(self.pools, self.widths):
            out[:, start:start + width] = layer.pool(x)[0].reshape(n, width)
            start += width

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n = bottom[0].shape[0]
        g = self.m(top[0].dev_diff).reshape(n, -1)
        total = None
        start = 0
        for layer, width in zip(self.pools, self.widths):
            d = layer.unpool(g[:, start:start + width].reshape((n, -1) + tuple(layer.out)))
            total = d if total is None else total + d
            start += width
        bottom[0].mut_dev_diff[...] = total
