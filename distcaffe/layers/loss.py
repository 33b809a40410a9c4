"""Caffe's loss layers: SoftmaxWithLoss, Euclidean, Hinge, Infogain, MultinomialLogistic, SigmoidCrossEntropy,
Contrastive. Each keeps Caffe's exact normalisation, clamps (FLT_MIN / 1e-20 before log) and label handling."""
import numpy as np

from ..errors import CaffeError
from ..proto import caffe_pb2
from .base import LossLayer, register
from .softmax import softmax, split_axis

FLT_MIN = float(np.finfo(np.float32).tiny)   # SoftmaxWithLoss clamps probabilities at FLT_MIN before log
LOG_THRESHOLD = 1e-20                        # Caffe's kLOG_THRESHOLD (Infogain, MultinomialLogistic)
_LP = caffe_pb2.LossParameter


def legacy_dim(layer, blob, index):
    """Caffe's Blob::LegacyShape: num/channels/height/width, 1 past the last axis; blobs of > 4 axes refuse."""
    if blob.num_axes > 4:
        raise layer.error("cannot use legacy accessors (num/channels/height/width) on blob %s with %d > 4 axes"
                          % (blob.name, blob.num_axes))
    return blob.shape[index] if index < blob.num_axes else 1


def read_labels(layer, blob, n, num_classes, ignore_label=None):
    """The first `n` labels of `blob` as ints (C++ static_cast: truncation) and the valid mask (None: all valid).

    Labels outside [0, num_classes) that are not the ignore label are an error naming the bad value (Caffe
    only DCHECKs them and then reads out of bounds)."""
    xp = layer.xp
    raw = blob.dev_data.reshape(-1)[:n]
    lab = raw.astype(np.int64)
    valid = None if ignore_label is None else lab != ignore_label
    bad = (lab < 0) | (lab >= num_classes)
    if valid is not None:
        bad &= valid
    layer.check_values(bad, raw, lambda value, _: "label %g in bottom %s is outside [0, %d)%s" % (
        value, blob.name, num_classes, "" if ignore_label is None else " and is not ignore_label %d" % ignore_label))
    return xp.where(bad if valid is None else bad | ~valid, 0, lab), valid


def _check_no_label_backward(layer, propagate_down, indices=(1,)):
    for i in indices:
        if i < len(propagate_down) and propagate_down[i]:
            raise layer.error("cannot backpropagate to label inputs (bottom %d)" % i)


class _NormalizedLoss(LossLayer):
    """ignore_label + normalization (and the legacy `normalize` bool) of loss_param, as Caffe's get_normalizer.
    With neither field set the mode is `default_normalization` (the proto's VALID; BATCH_SIZE for sigmoid CE)."""

    default_normalization = _LP.VALID

    def read_loss_param(self):
        lp = self.layer_param.loss_param
        self.ignore_label = lp.ignore_label if lp.HasField("ignore_label") else None
        if lp.HasField("normalization"):
            self.normalization = lp.normalization
        elif lp.HasField("normalize"):
            self.normalization = _LP.VALID if lp.normalize else _LP.BATCH_SIZE
        else:
            self.normalization = self.default_normalization

    def normalizer(self, valid):
        """max(1, normalizer) for outer_num x inner_num predictions; `valid` is the counted-label mask or None."""
        mode = self.normalization
        if mode == _LP.VALID and valid is not None:
            return self.xp.maximum(valid.sum(), 1).astype(self.mdtype)
        if mode in (_LP.FULL, _LP.VALID):
            n = self.outer * self.inner
        elif mode == _LP.BATCH_SIZE:
            n = self.outer
        else:
            n = 1
        return float(max(1, n))

    def scale(self, top):
        """loss_weight / normalizer for the backward pass (the loss weight is the top's diff)."""
        return self.m(top[0].dev_diff) / self.norm


class _SoftmaxLoss(_NormalizedLoss):
    """Softmax over an axis followed by a loss on the class probabilities; optional second top = the probabilities."""

    exact_num_top = -1
    min_top = 1
    max_top = 2
    axis_param = None

    def layer_setup(self, bottom, top):
        super().layer_setup(bottom, top)
        self.read_loss_param()

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.axis = bottom[0].canonical_axis(self.axis_param().axis)
        self.outer, self.channels, self.inner = split_axis(bottom[0].shape, self.axis)
        self.check(self.outer * self.inner == bottom[1].count,
                   "Number of labels must match number of predictions; e.g., if the axis is 1 and prediction shape "
                   "is (N, C, H, W), label count (number of labels) must be N*H*W, with integer values in "
                   "{0, 1, ..., C-1} (predictions %s, labels %s)"
                   % (bottom[0].shape_string(), bottom[1].shape_string()))
        if len(top) >= 2:
            top[1].reshape_like(bottom[0])

    def forward_prob(self, bottom, top):
        """Softmax probabilities (outer, C, inner) and the labels; writes the probability top when present."""
        x = self.m(bottom[0].dev_data).reshape(self.outer, self.channels, self.inner)
        self.prob = softmax(self.xp, x, 1)
        lab, valid = read_labels(self, bottom[1], self.outer * self.inner, self.channels, self.ignore_label)
        self.lab = lab.reshape(self.outer, self.inner)
        self.valid = None if valid is None else valid.reshape(self.outer, self.inner)
        self.norm = self.normalizer(self.valid)
        if len(top) == 2:
            top[1].mut_dev_data[...] = self.prob.reshape(bottom[0].shape)

    def write_masked_diff(self, diff, top, bottom):
        if self.valid is not None:
            diff *= self.valid[:, None, :]
        diff *= self.scale(top)
        bottom[0].mut_dev_diff[...] = diff.reshape(bottom[0].shape)


@register("SoftmaxWithLoss")
class SoftmaxWithLossLayer(_SoftmaxLoss):
    """-log softmax(x)[label] over `softmax_param.axis`, skipping ignore_label, normalised per loss_param.

    NVCaffe's `loss_param.label_smoothing` e changes the gradient only, as NVCaffe's SoftmaxWithLoss GPU kernel
    does (its CPU path ignores the field): diff = prob - e/(dim-1) - (1-e) onehot with dim = C * inner (C-1 for a
    classifier); the reported loss stays the unsmoothed -log prob[label], so loss curves compare with NVCaffe's."""

    def axis_param(self):
        return self.layer_param.softmax_param

    def layer_setup(self, bottom, top):
        super().layer_setup(bottom, top)
        self.label_smoothing = float(self.layer_param.loss_param.label_smoothing)
        self.check(0 <= self.label_smoothing < 1, "loss_param.label_smoothing must lie in [0, 1) (got %g)"
                   % self.label_smoothing)

    def forward(self, bottom, top):
        self.forward_prob(bottom, top)
        xp = self.xp
        p = xp.take_along_axis(self.prob, self.lab[:, None, :], axis=1)[:, 0, :]
        logp = xp.log(xp.maximum(p, FLT_MIN))
        if self.valid is not None:
            logp = xp.where(self.valid, logp, 0)
        top[0].mut_dev_data[...] = -logp.sum() / self.norm

    def backward(self, top, propagate_down, bottom):
        _check_no_label_backward(self, propagate_down)
        if propagate_down[0]:
            xp = self.xp
            onehot = xp.arange(self.channels)[None, :, None] == self.lab[:, None, :]
            e = self.label_smoothing
            if not e:
                self.write_masked_diff(self.prob - onehot, top, bottom)
                return
            dim = self.channels * self.inner
            f = self.prob.dtype.type
            diff = self.prob - f(e / (dim - 1) if dim > 1 else 0.0)
            diff -= onehot * f(1 - e)
            self.write_masked_diff(diff, top, bottom)


@register("InfogainLoss")
class InfogainLossLayer(_SoftmaxLoss):
    """-sum_l H[label, l] log softmax(x)_l; H from `infogain_loss_param.source` (binaryproto) or a third bottom."""

    exact_num_bottom = -1
    min_bottom = 2
    max_bottom = 3

    def axis_param(self):
        return self.layer_param.infogain_loss_param

    def layer_setup(self, bottom, top):
        super().layer_setup(bottom, top)
        self.h_host = None
        self._h_dev = None
        if len(bottom) < 3:
            p = self.layer_param.infogain_loss_param
            self.check(p.source, "Infogain matrix source must be specified (infogain_loss_param.source, or H as a "
                                 "third bottom)")
            from ..io import blobproto_to_array, read_blobproto
            try:
                self.h_host = np.asarray(blobproto_to_array(read_blobproto(p.source), where=p.source), self.dtype)
            except (CaffeError, OSError) as e:
                raise self.error("cannot read the infogain matrix: %s" % e) from None

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        count = self.h_host.size if len(bottom) < 3 else bottom[2].count
        self.check(count == self.channels * self.channels,
                   "the infogain matrix H must be %d x %d (one row and column per label), got %d values"
                   % (self.channels, self.channels, count))

    def matrix(self, bottom):
        L = self.channels
        if len(bottom) >= 3:
            return self.m(bottom[2].dev_data).reshape(L, L)
        if self._h_dev is None or not isinstance(self._h_dev, self.xp.ndarray):
            self._h_dev = self.xp.asarray(self.h_host, dtype=self.mdtype).reshape(L, L)
        return self._h_dev

    def forward(self, bottom, top):
        self.forward_prob(bottom, top)
        xp = self.xp
        rows = self.matrix(bottom)[self.lab].transpose(0, 2, 1)        # (outer, L, inner): H[label, l]
        terms = (rows * xp.log(xp.maximum(self.prob, LOG_THRESHOLD))).sum(axis=1)
        if self.valid is not None:
            terms = xp.where(self.valid, terms, 0)
        top[0].mut_dev_data[...] = -terms.sum() / self.norm

    def backward(self, top, propagate_down, bottom):
        _check_no_label_backward(self, propagate_down)
        if len(propagate_down) > 2 and propagate_down[2]:
            raise self.error("cannot backpropagate to the infogain matrix (bottom 2)")
        if propagate_down[0]:
            H = self.matrix(bottom)
            sum_rows = H.sum(axis=1)
            diff = self.prob * sum_rows[self.lab][:, None, :] - H[self.lab].transpose(0, 2, 1)
            self.write_masked_diff(diff, top, bottom)

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLossLayer(_NormalizedLoss):
    """Cross entropy of sigmoid(x) against targets in [0, 1], computed stably; ignore_label and normalization
    (BATCH_SIZE unless loss_param says otherwise, as in Caffe)."""

    default_normalization = _LP.BATCH_SIZE

    def layer_setup(self, bottom, top):
        super().layer_setup(bottom, top)
        self.read_loss_param()

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.outer = bottom[0].shape[0]
        self.inner = bottom[0].count_range(1)
        self.check(bottom[0].count == bottom[1].count,
                   "SIGMOID_CROSS_ENTROPY_LOSS layer inputs must have the same count (%s vs %s)"
                   % (bottom[0].shape_string(), bottom[1].shape_string()))

    def forward(self, bottom, top):
        xp = self.xp
        x = self.m(bottom[0].dev_data).reshape(-1)
        t = self.m(bottom[1].dev_data).reshape(-1)
        pos = (x >= 0).astype(x.dtype)
        terms = x * (t - pos) - xp.log(1 + xp.exp(x - 2 * x * pos))
        self.valid = None
        if self.ignore_label is not None:
            self.valid = t.astype(np.int64) != self.ignore_label
            terms = xp.where(self.valid, terms, 0)
        self.norm = self.normalizer(self.valid)
        self.sigmoid = 0.5 * xp.tanh(0.5 * x) + 0.5
        top[0].mut_dev_data[...] = -terms.sum() / self.norm

    def backward(self, top, propagate_down, bottom):
        _check_no_label_backward(self, propagate_down)
        if propagate_down[0]:
            diff = self.sigmoid - self.m(bottom[1].dev_data).reshape(-1)
            if self.valid is not None:
                diff *= self.valid
            diff *= self.scale(top)
            bottom[0].mut_dev_diff[...] = diff.reshape(bottom[0].shape)


@register("EuclideanLoss")
class EuclideanLossLayer(LossLayer):
    """sum((a - b)^2) / (2 num); gradients flow to both bottoms."""

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.check(bottom[0].count_range(1) == bottom[1].count_range(1),
                   "Inputs must have the same dimension (%s vs %s)"
                   % (bottom[0].shape_string(), bottom[1].shape_string()))

    def forward(self, bottom, top):
        self.diff = self.m(bottom[0].dev_data) - self.m(bottom[1].dev_data).reshape(bottom[0].shape)
        top[0].mut_dev_data[...] = (self.diff * self.diff).sum() / legacy_dim(self, bottom[0], 0) / 2

    def backward(self, top, propagate_down, bottom):
        for i, sign in ((0, 1), (1, -1)):
            if propagate_down[i]:
                alpha = sign * self.m(top[0].dev_diff) / legacy_dim(self, bottom[i], 0)
                bottom[i].mut_dev_diff[...] = (alpha * self.diff).reshape(bottom[i].shape)

    def allow_force_backward(self, bottom_index):
        return True


@register("L1Loss")
class L1LossLayer(EuclideanLossLayer):
    """NVCaffe's L1Loss (DetectNet): sum|a - b| / num; gradients sign(a - b) / num to both bottoms."""

    def forward(self, bottom, top):
        xp = self.xp
        diff = self.m(bottom[0].dev_data) - self.m(bottom[1].dev_data).reshape(bottom[0].shape)
        self.sign = xp.sign(diff)
        top[0].mut_dev_data[...] = xp.abs(diff).sum() / legacy_dim(self, bottom[0], 0)

    def backward(self, top, propagate_down, bottom):
        for i, sign in ((0, 1), (1, -1)):
            if propagate_down[i]:
                alpha = sign * self.m(top[0].dev_diff) / legacy_dim(self, bottom[i], 0)
                bottom[i].mut_dev_diff[...] = (alpha * self.sign).reshape(bottom[i].shape)


@register("HingeLoss")
class HingeLossLayer(LossLayer):
    """One-vs-all hinge loss sum(max(0, 1 - y_k x_k)) / num, y = +1 for the label and -1 elsewhere; L1 or L2.

    As in Caffe, forward leaves the margins in bottom[0]'s diff and backward turns that diff into the gradient,
    so whatever touches that diff in between changes the result exactly as it does in Caffe."""

    holds_bottom_diff = True

    def forward(self, bottom, top):
        xp = self.xp
        num = legacy_dim(self, bottom[0], 0)
        dim = bottom[0].count // num
        self.lab, _ = read_labels(self, bottom[1], num, dim)
        self.rows = xp.arange(num)
        d = self.m(bottom[0].dev_data).reshape(num, dim).copy()
        d[self.rows, self.lab] *= -1
        d = xp.maximum(0, 1 + d)
        bottom[0].mut_dev_diff[...] = d.reshape(bottom[0].shape)
        norm = self.layer_param.hinge_loss_param.norm
        if norm == caffe_pb2.HingeLossParameter.L1:
            loss = xp.abs(d).sum()
        elif norm == caffe_pb2.HingeLossParameter.L2:
            loss = (d * d).sum()
        else:
            raise self.error("unknown norm %d (use L1 or L2)" % norm)
        top[0].mut_dev_data[...] = loss / num

    def backward(self, top, propagate_down, bottom):
        _check_no_label_backward(self, propagate_down)
        if propagate_down[0]:
            num = legacy_dim(self, bottom[0], 0)
            g = self.m(bottom[0].dev_diff).reshape(num, -1).copy()
            g[self.rows, self.lab] *= -1
            lw = self.m(top[0].dev_diff)
            if self.layer_param.hinge_loss_param.norm == caffe_pb2.HingeLossParameter.L1:
                g = self.xp.sign(g) * (lw / num)
            else:
                g *= lw * 2 / num
            bottom[0].mut_dev_diff[...] = g.reshape(bottom[0].shape)


@register("MultinomialLogisticLoss")
class MultinomialLogisticLossLayer(LossLayer):
    """-log p[label] / num for probabilities p (clamped at 1e-20); labels are N x 1 x 1 x 1."""

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.check(all(legacy_dim(self, bottom[1], i) == 1 for i in (1, 2, 3)),
                   "the label blob %s must be N x 1 x 1 x 1 (one label per item), got %s"
                   % (bottom[1].name, bottom[1].shape_string()))

    def forward(self, bottom, top):
        xp = self.xp
        num = legacy_dim(self, bottom[0], 0)
        p = self.m(bottom[0].dev_data).reshape(num, -1)
        lab, _ = read_labels(self, bottom[1], num, p.shape[1])
        self.rows, self.lab = xp.arange(num), lab
        self.p_label = xp.maximum(p[self.rows, lab], LOG_THRESHOLD)
        top[0].mut_dev_data[...] = -xp.log(self.p_label).sum() / num

    def backward(self, top, propagate_down, bottom):
        _check_no_label_backward(self, propagate_down)
        if propagate_down[0]:
            num = legacy_dim(self, bottom[0], 0)
            diff = self.xp.zeros((num, bottom[0].count // num), self.mdtype)
            diff[self.rows, self.lab] = -self.m(top[0].dev_diff) / num / self.p_label
            bottom[0].mut_dev_diff[...] = diff.reshape(bottom[0].shape)


@register("ContrastiveLoss")
class ContrastiveLossLayer(LossLayer):
    """Hadsell et al.'s contrastive loss on pairs (a, b) with similarity labels; `legacy_version` uses
    max(margin - d^2, 0) for dissimilar pairs instead of max(margin - d, 0)^2."""

    exact_num_bottom = 3

    def layer_setup(self, bottom, top):
        super().layer_setup(bottom, top)
        ld = legacy_dim
        self.check(ld(self, bottom[0], 1) == ld(self, bottom[1], 1),
                   "bottoms a and b must have the same channels (%s vs %s)"
                   % (bottom[0].shape_string(), bottom[1].shape_string()))
        for i, what in ((0, "a"), (1, "b")):
            self.check(ld(self, bottom[i], 2) == 1 and ld(self, bottom[i], 3) == 1,
                       "bottom %s must be N x C x 1 x 1, got %s" % (what, bottom[i].shape_string()))
        self.check(all(ld(self, bottom[2], i) == 1 for i in (1, 2, 3)),
                   "the similarity bottom must be N x 1 x 1 x 1, got %s" % bottom[2].shape_string())

    def forward(self, bottom, top):
        xp = self.xp
        p = self.layer_param.contrastive_loss_param
        num, channels = legacy_dim(self, bottom[0], 0), legacy_dim(self, bottom[0], 1)
        self.diff = (self.m(bottom[0].dev_data) - self.m(bottom[1].dev_data)).reshape(num, channels)
        self.dist_sq = (self.diff * self.diff).sum(axis=1)
        self.similar = bottom[2].dev_data.reshape(-1)[:num].astype(np.int64) != 0
        if p.legacy_version:
            dissimilar = xp.maximum(p.margin - self.dist_sq, 0)
        else:
            dissimilar = xp.maximum(p.margin - xp.sqrt(self.dist_sq), 0) ** 2
        top[0].mut_dev_data[...] = xp.where(self.similar, self.dist_sq, dissimilar).sum() / num / 2

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        p = self.layer_param.contrastive_loss_param
        for i, sign in ((0, 1), (1, -1)):
            if not propagate_down[i]:
                continue
            alpha = sign * self.m(top[0].dev_diff) / legacy_dim(self, bottom[i], 0)
            if p.legacy_version:
                mdist = p.margin - self.dist_sq
                beta = -alpha
            else:
                dist = xp.sqrt(self.dist_sq)
                mdist = p.margin - dist
                beta = -alpha * mdist / (dist + 1e-4)
            coef = xp.where(self.similar, alpha, xp.where(mdist > 0, beta, 0))
            bottom[i].mut_dev_diff[...] = (coef[:, None] * self.diff).reshape(bottom[i].shape)
        if propagate_down[2]:
            bottom[2].mut_dev_diff[...] = 0

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2
