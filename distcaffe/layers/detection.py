"""NVCaffe's SSD detection layers: Normalize, Permute, PriorBox and DetectionOutput.

Ported from NVCaffe 0.17 (normalize/permute/prior_box/detection_output layers and util/bbox_util.cpp).
Box arithmetic runs in float32, as Caffe's NormalizedBBox fields are floats.
"""
import numpy as np

from .. import backend
from ..proto import caffe_pb2
from .base import Layer, register
from .bbox_util import decode_boxes, jaccard_overlap
from .detection_results import ResultWriter


def _legacy_dims(blob):
    """Caffe's num/channels/height/width (LegacyShape: missing trailing axes count as 1)."""
    shape = tuple(blob.shape) + (1,) * (4 - len(blob.shape))
    return shape[:4]


@register("Normalize")
class NormalizeLayer(Layer):
    """L2-normalises each sample (across_spatial) or each spatial position across channels, then scales
    by a learned scale (one value, or one per channel)."""

    precise = True

    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.norm_param
        self.check(2 <= bottom[0].num_axes <= 4, "number of axes of bottom blob must be >=2 (and <=4), got %s"
                   % bottom[0].shape_string())
        self.across_spatial = p.across_spatial
        self.channel_shared = p.channel_shared
        self.eps = max(float(p.eps), float(np.finfo(self.dtype).tiny))
        channels = _legacy_dims(bottom[0])[1]
        if not self.blobs:
            filler = p.scale_filler if p.HasField("scale_filler") else caffe_pb2.FillerParameter(type="constant",
                                                                                                    value=1.0)
            shape = () if self.channel_shared else (channels,)
            self.blobs = [self.new_param(shape, filler)]
        want = 1 if self.channel_shared else channels
        self.check(self.blobs[0].count == want, "scale size is inconsistent with prototxt config (%d values, want %d)"
                   % (self.blobs[0].count, want))
        self.param_propagate_down = [True]
        self._norm = None

    def reshape(self, bottom, top):
        self.check(2 <= bottom[0].num_axes <= 4, "number of axes of bottom blob must be >=2 (and <=4), got %s"
                   % bottom[0].shape_string())
        self.check(top[0] is not bottom[0], "does not allow in-place computation")
        top[0].reshape_like(bottom[0])

    def _scale(self, channels):
        """The scale broadcast against (N, C, S) arrays."""
        s = self.m(self.blobs[0].dev_data)
        return s.reshape(1, 1, 1) if self.channel_shared else s.reshape(1, channels, 1)

    def forward(self, bottom, top):
        xp = self.xp
        n, c, h, w = _legacy_dims(bottom[0])
        x = self.m(bottom[0].dev_data).reshape(n, c, h * w)
        sq = x * x
        if self.across_spatial:
            norm = xp.sqrt(sq.reshape(n, -1).sum(axis=1) + self.eps).reshape(n, 1, 1)
        else:
            norm = xp.sqrt(sq.sum(axis=1, keepdims=True) + self.eps)
        self._norm = norm
        y = x / norm * self._scale(c)
        top[0].mut_dev_data[...] = y.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        """Caffe's formula: s * (dy - x (x.dy) / norm^2) / norm. With per-channel scales that differ this is
        not the exact gradient (Caffe leaves s out of x.dy); it is kept for parity with NVCaffe."""
        n, c, h, w = _legacy_dims(bottom[0])
        dy = self.m(top[0].dev_diff).reshape(n, c, h * w)
        scale = self._scale(c)
        if self.param_propagate_down and self.param_propagate_down[0]:
            prod = self.m(top[0].dev_data).reshape(n, c, h * w) * dy
            if self.channel_shared:
                grad = prod.sum() / scale.reshape(())
            else:
                grad = prod.sum(axis=(0, 2)) / scale.reshape(c)
            self.blobs[0].mut_dev_diff[...] += grad.reshape(self.blobs[0].shape)
        if propagate_down[0]:
            x = self.m(bottom[0].dev_data).reshape(n, c, h * w)
            norm = self._norm
            if self.across_spatial:
                a = (x * dy).reshape(n, -1).sum(axis=1).reshape(n, 1, 1)
            else:
                a = (x * dy).sum(axis=1, keepdims=True)
            dx = (dy - x * (a / norm / norm)) / norm * scale
            bottom[0].mut_dev_diff[...] = dx.reshape(bottom[0].shape)


@register("Permute")
class PermuteLayer(Layer):
    """Reorders the axes (`permute_param.order`, unlisted axes follow in their natural order)."""

    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        num_axes = bottom[0].num_axes
        orders = []
        for o in self.layer_param.permute_param.order:
            self.check(o < num_axes, "order should be less than the input dimension (order %d, %d axes)"
                       % (o, num_axes))
            self.check(o not in orders, "there are duplicate orders (%s)" % list(self.layer_param.permute_param.order))
            orders.append(int(o))
        orders += [i for i in range(num_axes) if i not in orders]
        self.num_axes = num_axes
        self.order = tuple(orders)
        self.inverse = tuple(int(i) for i in np.argsort(orders))
        self.need_permute = self.order != tuple(range(num_axes))

    def reshape(self, bottom, top):
        self.check(bottom[0].num_axes == self.num_axes, "bottom %s has %d axes, the layer was set up for %d"
                   % (bottom[0].name, bottom[0].num_axes, self.num_axes))
        self.check(not self.need_permute or top[0] is not bottom[0],
                   "does not allow in-place computation when it reorders axes")
        top[0].reshape(tuple(bottom[0].shape[o] for o in self.order))

    def forward(self, bottom, top):
        if self.need_permute:
            top[0].mut_dev_data[...] = self.xp.transpose(bottom[0].dev_data, self.order)
        elif top[0] is not bottom[0]:
            top[0].share_data(bottom[0])

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0] or top[0] is bottom[0]:
            return
        if self.need_permute:
            bottom[0].mut_dev_diff[...] = self.xp.transpose(top[0].dev_diff, self.inverse)
        else:
            bottom[0].mut_dev_diff[...] = top[0].dev_diff


@register("PriorBox")
class PriorBoxLayer(Layer):
    """SSD prior (default) boxes for every cell of a feature map: top (1, 2, H*W*num_priors*4), the first
    channel the normalised corners, the second the variances. Constants: nothing to backpropagate."""

    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.prior_box_param
        self.check(len(p.min_size) > 0, "must provide min_size")
        self.min_sizes = [float(s) for s in p.min_size]
        self.check(all(s > 0 for s in self.min_sizes), "min_size must be positive")
        ars = [1.0]
        for ar in p.aspect_ratio:
            if all(abs(ar - a) >= 1e-6 for a in ars):
                ars.append(float(ar))
                if p.flip:
                    ars.append(float(np.float32(1.0 / ar)))
        self.aspect_ratios = ars
        self.max_sizes = []
        if len(p.max_size):
            self.check(len(p.max_size) == len(p.min_size), "max_size must be given once per min_size (%d vs %d)"
                       % (len(p.max_size), len(p.min_size)))
            for mn, mx in zip(self.min_sizes, p.max_size):
                self.check(mx > mn, "max_size must be greater than min_size (%g vs %g)" % (mx, mn))
                self.max_sizes.append(float(mx))
        self.num_priors = len(ars) * len(self.min_sizes) + len(self.max_sizes)
        self.clip = p.clip
        if len(p.variance) > 1:
            self.check(len(p.variance) == 4, "must provide exactly 1 or 4 variances, got %d" % len(p.variance))
        self.check(all(v > 0 for v in p.variance), "variance must be positive")
        self.variance = [float(v) for v in p.variance] or [0.1]
        if p.HasField("img_h") or p.HasField("img_w"):
            self.check(not p.HasField("img_size"), "either img_size or img_h/img_w should be specified; not both")
            self.check(p.img_h > 0, "img_h should be larger than 0")
            self.check(p.img_w > 0, "img_w should be larger than 0")
            self.img_h, self.img_w = p.img_h, p.img_w
        elif p.HasField("img_size"):
            self.check(p.img_size > 0, "img_size should be larger than 0")
            self.img_h = self.img_w = p.img_size
        else:
            self.img_h = self.img_w = 0
        if p.HasField("step_h") or p.HasField("step_w"):
            self.check(not p.HasField("step"), "either step or step_h/step_w should be specified; not both")
            self.check(p.step_h > 0, "step_h should be larger than 0")
            self.check(p.step_w > 0, "step_w should be larger than 0")
            self.step_h, self.step_w = p.step_h, p.step_w
        elif p.HasField("step"):
            self.check(p.step > 0, "step should be larger than 0")
            self.step_h = self.step_w = p.step
        else:
            self.step_h = self.step_w = 0.0
        self.offset = p.offset
        self.check(len(bottom) == 2 or (self.img_h and self.img_w),
                   "needs the image blob as its second bottom when img_size (or img_h/img_w) is not given")

    def reshape(self, bottom, top):
        _, _, h, w = _legacy_dims(bottom[0])
        dim = h * w * self.num_priors * 4
        self.check(dim > 0, "feature map %s gives no priors" % bottom[0].shape_string())
        top[0].reshape(1, 2, dim)

    def _box_sizes(self):
        """(width, height) of each prior at one location, in Caffe's order: min, [sqrt(min*max)], aspect ratios.
        Caffe truncates the sizes to int before using them."""
        sizes = []
        for s, mn in enumerate(self.min_sizes):
            mn = int(mn)
            sizes.append((mn, mn))
            if self.max_sizes:
                side = np.sqrt(mn * int(self.max_sizes[s]))
                sizes.append((side, side))
            for ar in self.aspect_ratios:
                if abs(ar - 1.0) < 1e-6:
                    continue
                r = np.sqrt(np.float32(ar))
                sizes.append((mn * r, mn / r))
        return np.array(sizes, np.float64)

    def forward(self, bottom, top):
        xp = self.xp
        _, _, lh, lw = _legacy_dims(bottom[0])
        if self.img_h == 0 or self.img_w == 0:
            _, _, img_h, img_w = _legacy_dims(bottom[1])
        else:
            img_h, img_w = self.img_h, self.img_w
        if self.step_w == 0 or self.step_h == 0:
            step_w, step_h = np.float32(img_w) / np.float32(lw), np.float32(img_h) / np.float32(lh)
        else:
            step_w, step_h = np.float32(self.step_w), np.float32(self.step_h)
        off = np.float32(self.offset)
        cx = ((xp.arange(lw, dtype=np.float32) + off) * step_w).astype(np.float64)
        cy = ((xp.arange(lh, dtype=np.float32) + off) * step_h).astype(np.float64)
        sizes = xp.asarray(self._box_sizes())
        bw = sizes[:, 0].reshape(1, 1, -1)
        bh = sizes[:, 1].reshape(1, 1, -1)
        cx = cx.reshape(1, lw, 1)
        cy = cy.reshape(lh, 1, 1)
        boxes = xp.stack(xp.broadcast_arrays((cx - bw / 2.0) / img_w, (cy - bh / 2.0) / img_h,
                                             (cx + bw / 2.0) / img_w, (cy + bh / 2.0) / img_h), axis=-1)
        boxes = boxes.astype(np.float32)
        if self.clip:
            boxes = xp.minimum(xp.maximum(boxes, 0), 1)
        out = top[0].mut_dev_data
        out[0, 0] = boxes.reshape(-1)
        var = xp.asarray(np.array(self.variance, np.float32))
        out[0, 1] = xp.tile(var, out.shape[2] // len(self.variance))

    def backward(self, top, propagate_down, bottom):
        """Caffe's PriorBox backward does nothing: the priors do not depend on the bottom values."""


def nms_fast(xp, boxes, sizes, scores, score_threshold, nms_threshold, eta, top_k, chunk=512):
    """Caffe's ApplyNMSFast: candidates with score > threshold in descending (stable) score order, cut to top_k,
    each kept when its overlap with every kept box is <= the (eta-adaptive) threshold. Returns kept indices
    (host int64 array, in keep order). Overlaps are computed on the device a chunk at a time; the greedy
    decisions, which are sequential by nature, run on the host."""
    cand = xp.nonzero(scores > np.float32(score_threshold))[0]
    if cand.size == 0:
        return np.zeros(0, np.int64)
    s = scores[cand]
    order = cand[xp.lexsort(xp.stack([cand.astype(np.float64), -s.astype(np.float64)]))]
    if top_k > -1:
        order = order[:top_k]
    thr = np.float32(nms_threshold)
    eta = np.float32(eta)
    kept = []
    for start in range(0, int(order.size), chunk):
        ids = order[start:start + chunk]
        cb, cs = boxes[ids], sizes[ids]
        if kept:
            kept_ids = xp.asarray(np.array(kept, np.int64))
            vs_kept = backend.to_host(jaccard_overlap(xp, cb, cs, boxes[kept_ids], sizes[kept_ids]))
        else:
            vs_kept = np.zeros((int(ids.size), 0), np.float32)
        within = backend.to_host(jaccard_overlap(xp, cb, cs, cb, cs))
        ids_host = backend.to_host(ids)
        kept_here = []
        for j in range(ids_host.size):
            keep = bool(np.all(vs_kept[j] <= thr)) and bool(np.all(within[j, kept_here] <= thr))
            if keep:
                kept_here.append(j)
                if eta < 1 and thr > 0.5:
                    thr = np.float32(thr * eta)
        kept.extend(int(ids_host[j]) for j in kept_here)
    return np.array(kept, np.int64)


@register("DetectionOutput")
class DetectionOutputLayer(Layer):
    """SSD inference: decodes the location predictions against the priors, runs per-class NMS, keeps the
    keep_top_k best; top (1, 1, num_det, 7) rows [image_id, label, score, xmin, ymin, xmax, ymax], or one
    [-1...] row per image (image_id set) when nothing is detected."""

    min_bottom = 3
    max_bottom = 4
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.detection_output_param
        self.check(p.HasField("num_classes"), "must specify num_classes")
        self.num_classes = p.num_classes
        self.share_location = p.share_location
        self.num_loc_classes = 1 if self.share_location else self.num_classes
        self.background_label_id = p.background_label_id
        self.code_type = p.code_type
        self.variance_encoded_in_target = p.variance_encoded_in_target
        self.keep_top_k = p.keep_top_k
        self.confidence_threshold = p.confidence_threshold if p.HasField("confidence_threshold") \
            else -float(np.finfo(np.float32).max)
        self.nms_threshold = p.nms_param.nms_threshold
        self.check(self.nms_threshold >= 0, "nms_threshold must be non negative")
        self.eta = p.nms_param.eta
        self.check(0 < self.eta <= 1, "nms_param.eta must be in (0, 1], got %g" % self.eta)
        self.top_k = p.nms_param.top_k if p.nms_param.HasField("top_k") else -1
        s = p.save_output_param
        # NVCaffe writes result files only when all three are given (it skips saving otherwise); the writer
        # (which reads the label map and sizes, and makes the directory) starts at the first forward, so a
        # deploy net naming another machine's paths still builds
        self.save = s if s.output_directory and s.label_map_file and s.name_size_file else None
        self.writer = None
        self.visualize = p.visualize

    def reshape(self, bottom, top):
        self.check(bottom[0].shape[0] == bottom[1].shape[0], "loc %s and conf %s must have the same num"
                   % (bottom[0].shape_string(), bottom[1].shape_string()))
        self.num_priors = _legacy_dims(bottom[2])[2] // 4
        self.check(self.num_priors * self.num_loc_classes * 4 == _legacy_dims(bottom[0])[1],
                   "number of priors must match number of location predictions (%d priors x %d x 4 vs %s)"
                   % (self.num_priors, self.num_loc_classes, bottom[0].shape_string()))
        self.check(self.num_priors * self.num_classes == _legacy_dims(bottom[1])[1],
                   "number of priors must match number of confidence predictions (%d priors x %d classes vs %s)"
                   % (self.num_priors, self.num_classes, bottom[1].shape_string()))
        top[0].reshape(1, 1, 1, 7)

    def forward(self, bottom, top):
        self._detect(bottom, top)
        if self.save is not None and self.writer is None:
            self.writer = ResultWriter(self.save, self.num_classes, self.background_label_id,
                                       "layer '%s' (DetectionOutput)" % self.name)
        if self.writer is not None:
            rows = backend.to_host(top[0].dev_data).reshape(-1, 7).astype(np.float64)
            for i in range(bottom[0].shape[0]):
                mine = rows[(rows[:, 0] == i) & (rows[:, 1] != -1)]
                self.writer.add_image(mine[:, 1:])

    def _detect(self, bottom, top):
        if self.visualize:
            raise self.error("visualize is not supported; read the detections from the top blob")
        xp = self.xp
        f32 = np.float32
        num, npri, ncls, nloc = bottom[0].shape[0], self.num_priors, self.num_classes, self.num_loc_classes
        loc = bottom[0].dev_data.astype(f32).reshape(num, npri, nloc, 4).transpose(0, 2, 1, 3)
        conf = bottom[1].dev_data.astype(f32).reshape(num, npri, ncls).transpose(0, 2, 1)
        prior = bottom[2].dev_data.astype(f32).reshape(-1)
        priors = prior[:npri * 4].reshape(npri, 4)
        variances = prior[npri * 4:npri * 8].reshape(npri, 4)
        if self.code_type != caffe_pb2.PriorBoxParameter.CORNER:
            self.check(bool(((priors[:, 2] - priors[:, 0] > 0) & (priors[:, 3] - priors[:, 1] > 0)).all()),
                       "priors must have positive width and height for code_type %s"
                       % caffe_pb2.PriorBoxParameter.CodeType.Name(self.code_type))
        boxes, sizes = decode_boxes(xp, loc, priors, variances, self.code_type, self.variance_encoded_in_target)
        rows = []  # per image: list of (label, prior indices) in output order
        for i in range(num):
            per_label = {}
            for c in range(ncls):
                if c == self.background_label_id:
                    continue
                lc = 0 if self.share_location else c
                per_label[c] = nms_fast(xp, boxes[i, lc], sizes[i, lc], conf[i, c], self.confidence_threshold,
                                        self.nms_threshold, self.eta, self.top_k)
            num_det = sum(v.size for v in per_label.values())
            if self.keep_top_k > -1 and num_det > self.keep_top_k:
                per_label = self._keep_top_k(conf[i], per_label)
            rows.append(per_label)
        img, lab, idx = [], [], []
        for i, per_label in enumerate(rows):
            for c in sorted(per_label):
                k = per_label[c]
                img.append(np.full(k.size, i, np.int64))
                lab.append(np.full(k.size, c, np.int64))
                idx.append(k)
        n_kept = int(sum(a.size for a in idx))
        if n_kept == 0:
            top[0].reshape(1, 1, num, 7)
            out = top[0].mut_dev_data
            out[...] = -1
            out[0, 0, :, 0] = xp.arange(num, dtype=out.dtype)
            return
        img = xp.asarray(np.concatenate(img))
        lab = xp.asarray(np.concatenate(lab))
        idx = xp.asarray(np.concatenate(idx))
        loc_lab = xp.zeros_like(lab) if self.share_location else lab
        det = xp.concatenate([img[:, None].astype(f32), lab[:, None].astype(f32), conf[img, lab, idx][:, None],
                              boxes[img, loc_lab, idx]], axis=1)
        top[0].reshape(1, 1, n_kept, 7)
        top[0].mut_dev_data[0, 0] = det

    def _keep_top_k(self, conf_i, per_label):
        """The keep_top_k best detections of one image over all classes, regrouped by label (score order)."""
        labels = np.concatenate([np.full(v.size, c, np.int64) for c, v in sorted(per_label.items())])
        indices = np.concatenate([v for _, v in sorted(per_label.items())])
        scores = backend.to_host(conf_i[self.xp.asarray(labels), self.xp.asarray(indices)])
        best = np.argsort(-scores.astype(np.float64), kind="stable")[:self.keep_top_k]
        out = {}
        for j in best:
            out.setdefault(int(labels[j]), []).append(int(indices[j]))
        return {c: np.array(v, np.int64) for c, v in out.items()}
