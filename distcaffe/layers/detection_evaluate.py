"""SSD's DetectionEvaluate (NVCaffe detection_evaluate_layer.cpp): per test batch, rows
[image_id, label, score, tp, fp] for every detection (greedy match by score to the same-label ground truth with
overlap >= overlap_threshold), after one [-1, label, num_positives, -1, -1] row per class. The solver's
`eval_type: "detection"` test turns the rows of all test iterations into mAP (`ap_version`).

With `name_size_file` ("name height width" lines, one per test image in order) boxes are clipped, scaled to the
image's pixels (through `resize_param`'s mode, NVCaffe's OutputBBox) and compared with Caffe's pixel (+1)
overlap. Small host-side work: detections and ground truth are a few hundred rows.
"""
import numpy as np

from .. import backend
from ..data import resize_policy
from ..errors import DataError
from .base import Layer, register
from .bbox_util import box_sizes, jaccard_overlap

F32 = np.float32


def _pixel_overlap(a, b):
    """Caffe's unnormalized JaccardOverlap (sizes and intersection count the +1 pixel) of (A, 4) vs (B, 4)."""
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    apart = ((b[None, :, 0] > a[:, None, 2]) | (b[None, :, 2] < a[:, None, 0]) |
             (b[None, :, 1] > a[:, None, 3]) | (b[None, :, 3] < a[:, None, 1]))

    def size(x):
        w, h = x[:, 2] - x[:, 0], x[:, 3] - x[:, 1]
        return np.where((w < 0) | (h < 0), F32(0), (w + 1) * (h + 1)).astype(F32)

    inter = iw * ih
    valid = ~apart & (iw > 0) & (ih > 0)
    denom = size(a)[:, None] + size(b)[None, :] - inter
    return np.where(valid, inter / np.where(valid, denom, F32(1)), F32(0)).astype(F32)


@register("DetectionEvaluate")
class DetectionEvaluateLayer(Layer):
    """True/false positive rows of DetectionOutput's detections against the ground-truth label blob."""

    exact_num_bottom = 2
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.detection_evaluate_param
        self.check(p.HasField("num_classes"), "must provide num_classes")
        self.num_classes, self.bg = p.num_classes, p.background_label_id
        self.overlap_threshold = p.overlap_threshold
        self.check(self.overlap_threshold > 0, "overlap_threshold must be positive")
        self.evaluate_difficult = p.evaluate_difficult_gt
        self.sizes = []
        if p.HasField("name_size_file"):
            try:
                with open(p.name_size_file) as f:
                    words = f.read().split()
            except OSError as e:
                raise DataError("layer '%s' (DetectionEvaluate): cannot read name_size_file %s: %s"
                                % (self.name, p.name_size_file, e.strerror)) from None
            try:
                self.sizes = [(int(words[k + 1]), int(words[k + 2])) for k in range(0, len(words) - 2, 3)]
            except ValueError:
                raise DataError("layer '%s' (DetectionEvaluate): name_size_file %s must hold 'name height width' "
                                "lines" % (self.name, p.name_size_file)) from None
        self.resize = p.resize_param if p.HasField("resize_param") else None
        if self.resize is not None:
            resize_policy.check(self.resize, "layer '%s' (DetectionEvaluate)" % self.name)
        self.count = 0

    def reshape(self, bottom, top):
        det, gt = bottom
        self.check(det.num_axes == 4 and det.shape[:2] == (1, 1) and det.shape[3] == 7,
                   "detections %s must be 1 x 1 x N x 7" % det.shape_string())
        self.check(gt.num_axes == 4 and gt.shape[:2] == (1, 1) and gt.shape[3] == 8,
                   "ground truth %s must be 1 x 1 x N x 8" % gt.shape_string())
        num_pos_classes = self.num_classes if self.bg == -1 else self.num_classes - 1
        labels = backend.to_host(det.dev_data).reshape(-1, 7)[:, 1]
        top[0].reshape(1, 1, num_pos_classes + int((labels != -1).sum()), 5)

    def forward(self, bottom, top):
        det = backend.to_host(bottom[0].dev_data).astype(F32).reshape(-1, 7)
        gt = backend.to_host(bottom[1].dev_data).astype(F32).reshape(-1, 8)
        gts = {}
        for r in gt:
            if int(r[0]) == -1:
                break
            label = int(np.round(r[1]))
            if label <= self.bg:
                continue
            gts.setdefault(int(r[0]), {}).setdefault(label, []).append((r[3:7], bool(r[7])))
        detections = {}
        for r in det:
            if int(r[0]) == -1:
                continue
            label = int(r[1])
            self.check(label != self.bg, "found background label %d in the detection results" % label)
            detections.setdefault(int(r[0]), {}).setdefault(label, []).append((float(r[2]), r[3:7]))
        rows = []
        num_pos = {}
        for labels in gts.values():
            for label, boxes in labels.items():
                n = len(boxes) if self.evaluate_difficult else sum(not d for _, d in boxes)
                num_pos[label] = num_pos.get(label, 0) + n
        for c in range(self.num_classes):
            if c != self.bg:
                rows.append([-1, c, num_pos.get(c, 0), -1, -1])
        for image_id in sorted(detections):
            for label in sorted(detections[image_id]):
                rows.extend(self._evaluate(image_id, label, detections[image_id][label],
                                           gts.get(image_id, {}).get(label)))
            if self.sizes:
                self.count = (self.count + 1) % len(self.sizes)
        out = np.array(rows, F32).reshape(1, 1, -1, 5)
        if tuple(top[0].shape) != out.shape:
            top[0].reshape(out.shape)
        top[0].mut_dev_data[...] = self.xp.asarray(out)

    def _evaluate(self, image_id, label, dets, gt):
        """Rows for one image's detections of one label, in descending score order when there is ground truth."""
        if gt is None:
            return [[image_id, label, s, 0, 1] for s, _ in dets]
        order = np.argsort(-np.array([s for s, _ in dets], F32), kind="stable")
        boxes = np.array([dets[k][1] for k in order], F32).reshape(-1, 4)
        gt_boxes = np.array([b for b, _ in gt], F32).reshape(-1, 4)
        difficult = [d for _, d in gt]
        if self.sizes:
            self.check(self.count < len(self.sizes), "more test images than name_size_file lines")
            h, w = self.sizes[self.count]
            ov = _pixel_overlap(resize_policy.output_boxes(self.resize, h, w, boxes),
                                resize_policy.output_boxes(self.resize, h, w, gt_boxes))
        else:
            ov = jaccard_overlap(np, boxes, box_sizes(np, boxes), gt_boxes, box_sizes(np, gt_boxes))
        visited = [False] * len(gt)
        rows = []
        for k, i in enumerate(order):
            j = int(np.argmax(ov[k]))
            row = [image_id, label, dets[i][0], 0, 1]
            if ov[k, j] >= F32(self.overlap_threshold):
                if self.evaluate_difficult or not difficult[j]:
                    if not visited[j]:
                        row[3:] = [1, 0]
                        visited[j] = True
                else:
                    row[3:] = [0, 0]                    # matched a difficult box: not counted
            rows.append(row)
        return rows
