"""SSD's MultiBoxLoss (NVCaffe 0.17.3 multibox_loss_layer.cpp + util/bbox_util.cpp).

Bottoms: loc predictions (N, P*L*4) with L = 1 location class (share_location) or num_classes, confidences
(N, P*C), priors (1, 2, P*4) and ground truth (1, 1, G, 8) rows [item_id, label, instance, xmin, ymin, xmax,
ymax, difficult]. Each image's priors (or decoded predictions) are matched to its ground truth; negatives are
mined (MAX_NEGATIVE: the highest-loss unmatched priors with overlap < neg_overlap, neg_pos_ratio per positive;
HARD_EXAMPLE: the sample_size highest-loss priors of all, optionally after NMS); loss = loc_weight * loc_loss /
norm + conf_loss / norm with the SmoothL1/L2 loc loss on encoded boxes and the softmax/logistic confidence
loss, norm per loss_param.normalization (VALID: the match count over all location classes).

share_location: false (NVCaffe's FindMatches per label; as there, only with mining_type NONE): the background
class's boxes are never matched; use_prior_for_matching matches the priors once and keeps each matched prior in
its ground truth's class, otherwise class c's decoded boxes are matched against class c's ground truth alone,
so a prior can be a positive of several classes (its softmax label is the highest of them, logistic targets
are 1 for each).

Matching and mining run on the host (sequential by nature); the per-prior confidence losses, the loss and its
gradients run on the device (`xp`). As in Caffe, with encode_variance_in_target the loc gradient is the one of
the variance-scaled targets, copied back unscaled.
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
        self.num_classes = p.num_classes
        self.share_location = p.share_location
        self.loc_classes = 1 if p.share_location else p.num_classes
        self.bg = int(p.background_label_id)
        self.mining = p.mining_type
        self.check(p.share_location or self.mining == _MB.NONE, "share_location: false needs mining_type: NONE "
                   "(NVCaffe: 'Currently only support negative mining if share_location is true')")
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
        self.check(self.num_priors * self.loc_classes * 4 == bottom[0].count_range(1),
                   "number of priors must match number of location predictions (%d priors x %d location classes, "
                   "loc %s)" % (self.num_priors, self.loc_classes, bottom[0].shape_string()))
        self.check(self.num_priors * self.num_classes == bottom[1].count_range(1),
                   "number of priors must match number of confidence predictions (%d priors x %d classes, conf %s)"
                   % (self.num_priors, self.num_classes, bottom[1].shape_string()))
        self.check(bottom[3].count % 8 == 0, "ground truth %s must hold rows of 8 values" % bottom[3].shape_string())

    # --- forward -----------------------------------------------------------------------------------
    def forward(self, bottom, top):
        xp, p = self.xp, self.param
        num, npri, ncls, nloc = bottom[0].shape[0], self.num_priors, self.num_classes, self.loc_classes
        prior = backend.to_host(bottom[2].dev_data).astype(F32).reshape(-1)
        priors, variances = prior[:npri * 4].reshape(npri, 4), prior[npri * 4:npri * 8].reshape(npri, 4)
        gts = ground_truth(backend.to_host(bottom[3].dev_data).reshape(-1, 8), self.bg, self.use_difficult)
        for _, glab, _ in gts.values():
            self.check(not glab.size or glab.max() < ncls, "ground truth label %d in %s is not below num_classes %d"
                       % (glab.max() if glab.size else 0, bottom[3].name, ncls))
        loc = self.m(bottom[0].dev_data).reshape(num, npri, nloc, 4)
        conf = self.m(bottom[1].dev_data).reshape(num, npri, ncls)
        need_decoded = not p.use_prior_for_matching or (self.mining != _MB.NONE and p.HasField("nms_param")
                                                         and p.nms_param.nms_threshold > 0 and not p.use_prior_for_nms)
        decoded = None
        if need_decoded:                                  # (N, L, P, 4): each location class's boxes
            decoded, _ = decode_boxes(np, backend.to_host(loc).astype(F32).transpose(0, 2, 1, 3), priors,
                                      variances, p.code_type, p.encode_variance_in_target)
        match = np.full((num, nloc, npri), -1, np.int64)
        overlap = np.zeros((num, nloc, npri), F32)
        for i, (boxes, glab, _) in gts.items():
            if 0 <= i < num:
                match[i], overlap[i] = self._match_image(boxes, glab, priors, None if decoded is None else decoded[i])
        labels = self._softmax_labels(self._matched_labels(match, gts))
        neg = np.zeros((num, npri), bool)
        if self.mining != _MB.NONE:                       # share_location only: location class 0 is all
            per_prior = self._conf_loss_per_prior(xp, conf, labels)
            if self.mining == _MB.HARD_EXAMPLE and (match > -1).any():
                pred, target = self._loc_pairs(xp, loc, match, gts, priors, variances, decoded)
                per_prior = per_prior + self._loc_loss_per_prior(xp, pred, target, match)
            self._mine(backend.to_host(per_prior).astype(np.float64), match[:, 0], overlap[:, 0], neg, gts, priors,
                       None if decoded is None else decoded[:, 0])
            select = (match[:, 0] > -1) | neg
        else:
            select = np.ones((num, npri), bool)
        matched = self._matched_labels(match, gts)        # HARD_EXAMPLE may have dropped positives
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
        conf_loss, self.conf_grad = self._conf_loss(xp, conf, matched, neg, select)
        if self.use_conf:
            loss = loss + conf_loss / self.norm
        top[0].mut_dev_data[...] = loss

    def _match_image(self, boxes, glab, priors, decoded):
        """Caffe's FindMatches for one image: (match, overlap), each (L, P), per location class. Shared: the
        priors (or decoded boxes) against all ground truth. Per class (share_location: false), the background
        class matching nothing: with use_prior_for_matching one match against all ground truth, each prior kept
        in its ground truth's class only; otherwise class c's decoded boxes against class c's ground truth."""
        p = self.param
        args = (p.match_type, p.overlap_threshold, p.ignore_cross_boundary_bbox)
        if self.share_location:
            m, ov = match_boxes(boxes, priors if p.use_prior_for_matching else decoded[0], *args)
            return m[None], ov[None]
        m = np.full((self.loc_classes, priors.shape[0]), -1, np.int64)
        ov = np.zeros(m.shape, F32)
        if p.use_prior_for_matching:
            m_all, ov_all = match_boxes(boxes, priors, *args)
            label_of = np.where(m_all > -1, glab[np.maximum(m_all, 0)], -1)
        for c in range(self.loc_classes):
            if c == self.bg:
                continue
            if p.use_prior_for_matching:
                m[c], ov[c] = np.where(label_of == c, m_all, -1), ov_all
            else:
                own = np.nonzero(glab == c)[0]
                mc, ov[c] = match_boxes(boxes[own], decoded[c], *args)
                m[c] = np.where(mc > -1, own[np.maximum(mc, 0)], mc)
        return m, ov

    def _matched_labels(self, match, gts):
        """The class each (image, location class, prior) match stands for (N, L, P), -1 where unmatched:
        its ground truth's label, or background_label_id + 1 with map_object_to_agnostic."""
        out = np.full(match.shape, -1, np.int64)
        for i, (_, glab, _) in gts.items():
            if 0 <= i < match.shape[0]:
                pos = match[i] > -1
                out[i][pos] = self.bg + 1 if self.param.map_object_to_agnostic else glab[match[i][pos]]
        return out

    def _softmax_labels(self, matched):
        """Each prior's softmax label (N, P): background unless matched; a prior matched in several location
        classes takes the highest class's label, as Caffe writes them in class order over one another."""
        labels = np.full(matched.shape[::2], self.bg, np.int64)
        for c in range(matched.shape[1]):
            labels = np.where(matched[:, c] > -1, matched[:, c], labels)
        return labels

    def _loc_pairs(self, xp, loc, match, gts, priors, variances, decoded):
        """(predictions, encoded targets) of the matches, (M, 4) in image, location class, prior order (Caffe's),
        or Nones. bp_inside: coordinates whose matched box leaves the image take the target (no gradient)."""
        p = self.param
        img, cls, pri = np.nonzero(match > -1)
        self._loc_index = (img, pri, cls)
        if not img.size:
            return None, None
        gt = np.stack([gts[int(i)][0][int(match[i, c, j])] for i, c, j in zip(img, cls, pri)])
        target = encode_boxes(np, gt, priors[pri], variances[pri], p.code_type, p.encode_variance_in_target)
        pred = loc[xp.asarray(img), xp.asarray(pri), xp.asarray(cls)]
        target = xp.asarray(target.astype(pred.dtype))
        if p.bp_inside:
            box = priors[pri] if p.use_prior_for_matching else decoded[img, cls, pri]
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
        out = xp.zeros(match.shape[::2], per.dtype)
        img, pri, _ = self._loc_index
        out[xp.asarray(img), xp.asarray(pri)] = per
        return out

    def _targets(self, xp, labels, dtype):
        """One-hot logistic targets (..., C) of `labels`; a label outside [0, C) (background -1) gives zeros."""
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

    def _conf_loss(self, xp, conf, matched, neg, select):
        """(sum of the selected priors' confidence losses, their gradient (N, P, C) with 0 elsewhere), from the
        (N, L, P) matched labels and the mined negatives. Logistic targets are Caffe's: a 1 per class a prior is
        matched in (several when location classes match it apart), background for mined negatives, and all
        zeros for unmatched priors without mining."""
        sel = xp.asarray(select)[..., None].astype(conf.dtype)
        if self.param.conf_loss_type == _MB.SOFTMAX:
            prob = self._softmax(xp, conf)
            onehot = self._targets(xp, self._softmax_labels(matched), conf.dtype)
            picked = (prob * onehot).sum(axis=2)
            loss = (-xp.log(xp.maximum(picked, FLT_MIN)) * sel[..., 0]).sum()
            return loss, (prob - onehot) * sel
        t = self._targets(xp, matched, conf.dtype).max(axis=1)
        if self.mining != _MB.NONE:
            t = xp.maximum(t, self._targets(xp, np.where(neg, self.bg, -1), conf.dtype))
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
            diff = xp.zeros(bottom[0].shape[:1] + (self.num_priors, self.loc_classes, 4), self.mdtype)
            if self.loc_grad is not None:
                img, pri, cls = self._loc_index
                diff[xp.asarray(img), xp.asarray(pri), xp.asarray(cls)] = self.param.loc_weight * scale * self.loc_grad
            bottom[0].mut_dev_diff[...] = diff.reshape(bottom[0].shape)
        if propagate_down[1]:
            bottom[1].mut_dev_diff[...] = (scale * self.conf_grad).reshape(bottom[1].shape)
