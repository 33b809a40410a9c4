"""SSD's MultiBoxLoss (NVCaffe 0.17.3 multibox_loss_layer.cpp + util/bbox_util.cpp).

Bottoms: loc predictions (N, P*4), confidences (N, P*C), priors (1, 2, P*4) and ground truth (1, 1, G, 8) rows
[item_id, label, instance, xmin, ymin, xmax, ymax, difficult]. Each image's priors (or decoded predictions) are
matched to its ground truth; negatives are mined (MAX_NEGATIVE: the highest-loss unmatched priors with overlap
< neg_overlap, neg_pos_ratio per positive; HARD_EXAMPLE: the sample_size highest-loss priors of all, optionally
after NMS); loss = loc_weight * loc_loss / norm + conf_loss / norm with the SmoothL1/L2 loc loss on encoded
boxes and the softmax/logistic confidence loss, norm per loss_param.normalization (VALID: the match count).

Matching and mining run on the host (sequential by nature); the per-prior confidence losses, the loss and its
gradients run on the device (`xp`). As in Caffe, with encode_variance_in_target the loc gradient is the one of
the variance-scaled targets, copied back unscaled. Not supported (clear errors): share_location: false.
Deviation: unmatched priors of a LOGISTIC loss without mining get all-zero targets (Caffe fills them with the
value background_label_id and offsets them per image by num_priors, a slip that is only harmless for
background 0 and batch 1).
"""
import numpy as np

from .. import backend
from ..proto import caffe_pb2
from .base import LossLayer, register
from .bbox_util import apply_nms, decode_boxes, encode_boxes, match_boxes

F32 = np.float32
FLT_MIN = np.finfo(np.float32).tiny
_MB = caffe_pb2.MultiBoxLossParameter
_LP = caffe_pb2.LossParameter


def ground_truth(rows, background_label_id, use_difficult):
    """Caffe's GetGroundTruth: {item_id: (boxes (G, 4) float32, labels (G,), difficult (G,))} from (R, 8) rows,
    skipping item -1 rows, background (or lower) labels and, unless `use_difficult`, difficult boxes."""
    out = {}
    for r in rows:
        item = int(r[0])
        if item == -1:
            continue
        label = int(np.round(r[1]))
        difficult = bool(r[7])
        if label <= background_label_id or (difficult and not use_difficult):
            continue
        out.setdefault(item, []).append((r[3:7], label, difficult))
    return {k: (np.array([b for b, _, _ in v], F32).reshape(-1, 4), np.array([lab for _, lab, _ in v], np.int64),
                np.array([d for _, _, d in v], bool)) for k, v in out.items()}


def normalizer(mode, num, num_priors, num_matches):
    """Caffe's LossLayer::GetNormalizer for this layer, at least 1."""
    value = {_LP.FULL: num * num_priors, _LP.VALID: num_matches, _LP.BATCH_SIZE: num, _LP.NONE: 1}[mode]
    return max(1.0, float(value))


@register("MultiBoxLoss")
class MultiBoxLossLayer(LossLayer):
    """SSD's matching + hard-negative-mining detection loss (loc + conf) against ground-truth boxes."""

    exact_num_bottom = 4

    def layer_setup(self, bottom, top):
        super().layer_setup(bottom, top)
        p = self.param = self.layer_param.multibox_loss_param
        self.check(p.HasField("num_classes"), "must provide multibox_loss_param.num_classes")
        self.check(p.num_classes >= 1, "num_classes should not be less than 1")
        self.check(p.share_location, "share_location: false is not supported (every SSD net shares locations)")
        self.num_classes = p.num_classes
        self.bg = int(p.background_label_id)
        self.mining = p.mining_type
        if p.HasField("do_neg_mining"):
            self.check(p.do_neg_mining == (self.mining != _MB.NONE),
                       "do_neg_mining (deprecated) contradicts mining_type %s" % _MB.MiningType.Name(self.mining))
        if p.conf_loss_type == _MB.SOFTMAX:
            self.check(0 <= self.bg < self.num_classes,
                       "background_label_id should be within [0, num_classes) for Softmax (got %d)" % self.bg)
        if self.mining == _MB.HARD_EXAMPLE:
            self.check(p.sample_size > 0, "HARD_EXAMPLE mining needs sample_size > 0")
        if p.map_object_to_agnostic:
            self.check(self.num_classes == (2 if self.bg >= 0 else 1),
                       "map_object_to_agnostic needs num_classes 2 (1 without background)")
        lp = self.layer_param.loss_param
        if not lp.HasField("normalization") and lp.HasField("normalize"):
            self.normalization = _LP.VALID if lp.normalize else _LP.BATCH_SIZE
        else:
            self.normalization = lp.normalization
        pd = list(self.layer_param.propagate_down) or [True, True, False, False]
        self.use_loc, self.use_conf = bool(pd[0]), bool(pd[1])
        self.use_difficult = p.use_difficult_gt and not p.ignore_difficult_gt

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.num_priors = (tuple(bottom[2].shape) + (1, 1))[2] // 4
        self.check(self.num_priors * 4 == bottom[0].count_range(1),
                   "number of priors must match number of location predictions (%d priors, loc %s)"
                   % (self.num_priors, bottom[0].shape_string()))
        self.check(self.num_priors * self.num_classes == bottom[1].count_range(1),
                   "number of priors must match number of confidence predictions (%d priors x %d classes, conf %s)"
                   % (self.num_priors, self.num_classes, bottom[1].shape_string()))
        self.check(bottom[3].count % 8 == 0, "ground truth %s must hold rows of 8 values" % bottom[3].shape_string())

    # --- forward -----------------------------------------------------------------------------------
    def forward(self, bottom, top):
        xp, p = self.xp, self.param
        num, npri, ncls = bottom[0].shape[0], self.num_priors, self.num_classes
        prior = backend.to_host(bottom[2].dev_data).astype(F32).reshape(-1)
        priors, variances = prior[:npri * 4].reshape(npri, 4), prior[npri * 4:npri * 8].reshape(npri, 4)
        gts = ground_truth(backend.to_host(bottom[3].dev_data).reshape(-1, 8), self.bg, self.use_difficult)
        for _, glab, _ in gts.values():
            self.check(not glab.size or glab.max() < ncls, "ground truth label %d in %s is not below num_classes %d"
                       % (glab.max() if glab.size else 0, bottom[3].name, ncls))
        loc = self.m(bottom[0].dev_data).reshape(num, npri, 4)
        conf = self.m(bottom[1].dev_data).reshape(num, npri, ncls)
        need_decoded = not p.use_prior_for_matching or (self.mining != _MB.NONE and p.HasField("nms_param")
                                                         and p.nms_param.nms_threshold > 0 and not p.use_prior_for_nms)
        decoded = None
        if need_decoded:
            decoded, _ = decode_boxes(np, backend.to_host(loc).astype(F32), priors, variances, p.code_type,
                                      p.encode_variance_in_target)
        match = np.full((num, npri), -1, np.int64)
        overlap = np.zeros((num, npri), F32)
        for i, (boxes, _, _) in gts.items():
            if 0 <= i < num:
                against = priors if p.use_prior_for_matching else decoded[i]
                match[i], overlap[i] = match_boxes(boxes, against, p.match_type, p.overlap_threshold,
                                                   p.ignore_cross_boundary_bbox)
        labels = np.full((num, npri), self.bg, np.int64)
        for i, (_, glab, _) in gts.items():
            if 0 <= i < num:
                pos = match[i] > -1
                labels[i, pos] = self.bg + 1 if p.map_object_to_agnostic else glab[match[i, pos]]
        neg = np.zeros((num, npri), bool)
        if self.mining != _MB.NONE:
            per_prior = self._conf_loss_per_prior(xp, conf, labels)
            if self.mining == _MB.HARD_EXAMPLE and (match > -1).any():
                pred, target = self._loc_pairs(xp, loc, match, gts, priors, variances, decoded)
                per_prior = per_prior + self._loc_loss_per_prior(xp, pred, target, match)
            self._mine(backend.to_host(per_prior).astype(np.float64), match, overlap, neg, gts, priors, decoded)
            labels[match == -1] = self.bg                 # HARD_EXAMPLE may drop positives
            select = (match > -1) | neg
        else:
            select = np.ones((num, npri), bool)
        loc_pred, loc_target = self._loc_pairs(xp, loc, match, gts, priors, variances, decoded)
        self.match, self.select = match, select
        self.num_matches = int((match > -1).sum())
        self.norm = normalizer(self.normalization, num, npri, self.num_matches)
        loss = 0.0
        self.loc_grad = None
        if loc_pred is not None:
            d = loc_pred - loc_target
            if p.loc_loss_type == _MB.SMOOTH_L1:
                small = xp.abs(d) < 1
                loc_loss = xp.where(small, 0.5 * d * d, xp.abs(d) - 0.5).sum()
                self.loc_grad = xp.where(small, d, xp.sign(d))
            else:
                loc_loss = (d * d).sum() / 2
                self.loc_grad = d
            if self.use_loc:
                loss = loss + p.loc_weight * loc_loss / self.norm
        conf_loss, self.conf_grad = self._conf_loss(xp, conf, labels, select)
        if self.use_conf:
            loss = loss + conf_loss / self.norm
        top[0].mut_dev_data[...] = loss

    def _loc_pairs(self, xp, loc, match, gts, priors, variances, decoded):
        """(predictions, encoded targets) of the matched priors, (M, 4) in image then prior order, or Nones.
        bp_inside: coordinates whose matched box leaves the image take the target (no gradient)."""
        p = self.param
        img, pri = np.nonzero(match > -1)
        self._loc_index = (img, pri)
        if not img.size:
            return None, None
        gt = np.stack([gts[int(i)][0][int(match[i, j])] for i, j in zip(img, pri)])
        target = encode_boxes(np, gt, priors[pri], variances[pri], p.code_type, p.encode_variance_in_target)
        pred = loc[xp.asarray(img), xp.asarray(pri)]
        target = xp.asarray(target.astype(pred.dtype))
        if p.bp_inside:
            box = priors[pri] if p.use_prior_for_matching else decoded[img, pri]
            outside = xp.asarray((box < 0) | (box > 1))
            pred = xp.where(outside, target, pred)
        if p.encode_variance_in_target:
            var = xp.asarray(variances[pri].astype(pred.dtype))
            pred, target = pred / var, target / var
        return pred, target

    def _loc_loss_per_prior(self, xp, pred, target, match):
        """Caffe's ComputeLocLoss: each matched prior's SmoothL1/L2 loss (N, P), 0 elsewhere."""
        d = pred - target
        if self.param.loc_loss_type == _MB.SMOOTH_L1:
            per = xp.where(xp.abs(d) < 1, 0.5 * d * d, xp.abs(d) - 0.5).sum(axis=1)
        else:
            per = (0.5 * d * d).sum(axis=1)
        out = xp.zeros(match.shape, per.dtype)
        img, pri = self._loc_index
        out[xp.asarray(img), xp.asarray(pri)] = per
        return out

    def _targets(self, xp, labels, dtype):
        """One-hot logistic targets (N, P, C) of `labels`; a label outside [0, C) (background -1) gives zeros."""
        ncls = self.num_classes
        lab = xp.asarray(labels)
        return ((lab[..., None] == xp.arange(ncls)) & (lab[..., None] >= 0)).astype(dtype)

    def _conf_loss_per_prior(self, xp, conf, labels):
        """Caffe's ComputeConfLoss: each prior's confidence loss against its matched label (background if none)."""
        if self.param.conf_loss_type == _MB.SOFTMAX:
            prob = self._softmax(xp, conf)
            picked = xp.take_along_axis(prob, xp.asarray(labels)[..., None], axis=2)[..., 0]
            return -xp.log(xp.maximum(picked, FLT_MIN))
        t = self._targets(xp, labels, conf.dtype)
        return self._logistic(xp, conf, t).sum(axis=2)

    @staticmethod
    def _softmax(xp, x):
        e = xp.exp(x - x.max(axis=2, keepdims=True))
        return e / e.sum(axis=2, keepdims=True)

    @staticmethod
    def _logistic(xp, x, t):
        """Sigmoid cross-entropy per element, Caffe's stable form."""
        pos = (x >= 0).astype(x.dtype)
        return -(x * (t - pos) - xp.log(1 + xp.exp(x - 2 * x * pos)))

    def _conf_loss(self, xp, conf, labels, select):
        """(sum of the selected priors' confidence losses, their gradient (N, P, C) with 0 elsewhere)."""
        sel = xp.asarray(select)[..., None].astype(conf.dtype)
        if self.param.conf_loss_type == _MB.SOFTMAX:
            prob = self._softmax(xp, conf)
            onehot = self._targets(xp, labels, conf.dtype)
            picked = (prob * onehot).sum(axis=2)
            loss = (-xp.log(xp.maximum(picked, FLT_MIN)) * sel[..., 0]).sum()
            return loss, (prob - onehot) * sel
        if self.mining != _MB.NONE:
            t = self._targets(xp, labels, conf.dtype)     # mined negatives: one-hot background
        else:
            matched = np.where(self.match > -1, labels, -1)
            t = self._targets(xp, matched, conf.dtype)    # unmatched priors: all zeros
        loss = (self._logistic(xp, conf, t) * sel).sum()
        return loss, (1 / (1 + xp.exp(-conf)) - t) * sel

    def _mine(self, loss, match, overlap, neg, gts, priors, decoded):
        """Caffe's MineHardExamples on the host, per image with ground truth: updates `match` (HARD_EXAMPLE
        drops unselected positives, which do not become negatives) and marks the selected negatives in `neg`."""
        p = self.param
        nms = p.HasField("nms_param") and p.nms_param.nms_threshold > 0
        top_k = p.nms_param.top_k if p.nms_param.HasField("top_k") else -1
        for i in gts:
            if not 0 <= i < match.shape[0]:
                continue
            m = match[i]
            if self.mining == _MB.MAX_NEGATIVE:
                eligible = np.nonzero((m == -1) & (overlap[i] < F32(p.neg_overlap)))[0]
                num_sel = min(int(int((m > -1).sum()) * F32(p.neg_pos_ratio)), eligible.size)
            else:
                eligible = np.arange(m.size)
                num_sel = min(int(p.sample_size), eligible.size)
            if nms:
                boxes = priors if p.use_prior_for_nms else decoded[i]
                order = apply_nms(boxes[eligible], loss[i, eligible].astype(F32), p.nms_param.nms_threshold, top_k)
                chosen = eligible[np.array(order[:num_sel], np.int64)]
            else:
                chosen = eligible[np.argsort(-loss[i, eligible], kind="stable")[:num_sel]]
            selected = np.zeros(m.size, bool)
            selected[chosen] = True
            was_pos = m > -1
            if self.mining == _MB.HARD_EXAMPLE:
                m[was_pos & ~selected] = -1
            neg[i] = selected & (m == -1) & ~was_pos

    # --- backward ----------------------------------------------------------------------------------
    def backward(self, top, propagate_down, bottom):
        for k in (2, 3):
            if propagate_down[k]:
                raise self.error("cannot backpropagate to %s inputs (%s)" % (("prior", "label")[k - 2],
                                                                             bottom[k].name))
        xp = self.xp
        scale = self.m(top[0].dev_diff).reshape(()) / self.norm
        if propagate_down[0]:
            diff = xp.zeros(bottom[0].shape[:1] + (self.num_priors, 4), self.mdtype)
            if self.loc_grad is not None:
                img, pri = self._loc_index
                diff[xp.asarray(img), xp.asarray(pri)] = self.param.loc_weight * scale * self.loc_grad
            bottom[0].mut_dev_diff[...] = diff.reshape(bottom[0].shape)
        if propagate_down[1]:
            bottom[1].mut_dev_diff[...] = (scale * self.conf_grad).reshape(bottom[1].shape)
