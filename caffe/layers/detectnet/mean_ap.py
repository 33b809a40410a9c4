"""DetectNet's detection scoring (NVCaffe's python/caffe/layers/detectnet/mean_ap.py, same blobs):
ScoreDetections marks predicted boxes true (1) or false (2) positives at IoU >= 0.7 and unmatched ground truth
as missed (3); mAP reports precision and recall (percent) and their product / 100 over the batch."""
import numpy as np

import caffe

MAX_BOXES = 50
IOU_THRESHOLD = 0.7


def iou(a, b):
    """Intersection over union of two (xl, yt, xr, yb) boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    if w * h == 0:
        return 0.0
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def score_image(gt, det):
    """(K, 5) rows: matched detections (class 1), unmatched detections (2), missed ground truth (3)."""
    gt = [b for b in gt[:, :4].tolist() if b != [0, 0, 0, 0]]
    det = [b for b in det[:, :4].tolist() if b != [0, 0, 0, 0]]
    gt_hit, det_hit = [False] * len(gt), [False] * len(det)
    for i, g in enumerate(gt):
        for j, d in enumerate(det):
            if not det_hit[j] and iou(d, g) >= IOU_THRESHOLD:
                gt_hit[i] = det_hit[j] = True
                break
    rows = ([d + [1] for d, hit in zip(det, det_hit) if hit] + [d + [2] for d, hit in zip(det, det_hit) if not hit]
            + [g + [3] for g, hit in zip(gt, gt_hit) if not hit])
    return np.asarray(rows, np.float64).reshape(-1, 5)[:MAX_BOXES]


class ScoreDetections(caffe.Layer):
    """bottoms: ground-truth and detected box lists (N, MAX_BOXES, 5); top: the marked-up list."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        if bottom[0].data.shape[0] != bottom[1].data.shape[0]:
            raise ValueError("ground truth and detections cover different numbers of images")
        top[0].reshape(bottom[0].data.shape[0], MAX_BOXES, 5)

    def forward(self, bottom, top):
        out = np.zeros((bottom[0].data.shape[0], MAX_BOXES, 5))
        for k in range(out.shape[0]):
            rows = score_image(bottom[0].data[k], bottom[1].data[k])
            out[k, :len(rows)] = rows
        top[0].data[...] = out

    def backward(self, top, propagate_down, bottom):
        pass


def _ratio(a, b):
    return float(a) / b if b else 0.0


class mAP(caffe.Layer):  # noqa: N801 (NVCaffe's class name, which the prototxts give)
    """bottom: the marked-up list; tops: mAP, precision, recall (each a 1-vector)."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        for t in top[:3]:
            t.reshape(1)

    def forward(self, bottom, top):
        marks = bottom[0].data[:, :, 4]
        tp, fp, fn = (int((marks == k).sum()) for k in (1, 2, 3))
        precision, recall = _ratio(tp, tp + fp) * 100.0, _ratio(tp, tp + fn) * 100.0
        for t, v in zip(top, (precision * recall / 100.0, precision, recall)):
            t.data[...] = v

    def backward(self, top, propagate_down, bottom):
        pass
