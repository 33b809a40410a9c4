"""DetectNet's box clustering (NVCaffe's python/caffe/layers/detectnet/clustering.py, same param_str and
blobs): the coverage/bbox grid -> up to MAX_BOXES boxes (xl, yt, xr, yb, confidence) per image and class.

ClusterGroundtruth lists the distinct boxes of the label grid; ClusterDetections keeps the cells at or above
a coverage threshold and merges their boxes with OpenCV's groupRectangles (reimplemented here in numpy)."""
import math

import numpy as np

import caffe

MAX_BOXES = 50


def _params(param_str, kinds, what):
    """The comma-separated param_str as `kinds` (the last, num_classes, optional and 1 by default)."""
    parts = [p.strip() for p in param_str.split(",") if p.strip()]
    if len(parts) not in (len(kinds) - 1, len(kinds)):
        raise ValueError("%s: param_str '%s' needs %d or %d comma-separated values" % (what, param_str,
                                                                                   len(kinds) - 1, len(kinds)))
    parts += ["1"] * (len(kinds) - len(parts))
    return [k(p) for k, p in zip(kinds, parts)]


def grid_boxes(cvg, boxes, stride, size, threshold):
    """The boxes (N, 4: xl, yt, xr, yb in pixels) of the grid cells whose coverage passes `threshold`
    (a callable on the coverage map); `boxes` holds the cell-relative corners (4, gh, gw)."""
    gw, gh = int(size[0] / stride), int(size[1] / stride)
    cell_w, cell_h = size[0] / gw, size[1] / gh
    cvg = cvg[:gh, :gw]
    y, x = np.nonzero(threshold(cvg))
    mx, my = x * cell_w, y * cell_h
    return np.stack([boxes[0, y, x] + mx, boxes[1, y, x] + my, boxes[2, y, x] + mx, boxes[3, y, x] + my], 1)


def _cv_round(v):
    """cvRound: to nearest, halves to even (Python's round)."""
    return int(round(v))


def group_rectangles(rects, threshold, eps):
    """cv::groupRectangles: cluster (x, y, w, h) integer rects whose corners lie within eps * their mean
    size, average each cluster, keep clusters of more than `threshold` rects not inside a stronger one.
    Returns the rects and their cluster sizes."""
    n = len(rects)
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            a, b = rects[i], rects[j]
            delta = eps * (min(a[2], b[2]) + min(a[3], b[3])) * 0.5
            if (abs(a[0] - b[0]) <= delta and abs(a[1] - b[1]) <= delta and
                    abs(a[0] + a[2] - b[0] - b[2]) <= delta and abs(a[1] + a[3] - b[1] - b[3]) <= delta):
                parent[root(i)] = root(j)
    labels, sums, counts = {}, [], []
    for i in range(n):
        k = labels.setdefault(root(i), len(labels))
        if k == len(sums):
            sums.append([0.0] * 4)
            counts.append(0)
        sums[k] = [s + v for s, v in zip(sums[k], rects[i])]
        counts[k] += 1
    means = [[_cv_round(s / c) for s in sm] for sm, c in zip(sums, counts)]
    out, weights = [], []
    for i, (r1, n1) in enumerate(zip(means, counts)):
        if n1 <= threshold:
            continue
        inside = False
        for j, (r2, n2) in enumerate(zip(means, counts)):
            if j == i or n2 <= threshold:
                continue
            dx, dy = _cv_round(r2[2] * eps), _cv_round(r2[3] * eps)
            if (r1[0] >= r2[0] - dx and r1[1] >= r2[1] - dy and r1[0] + r1[2] <= r2[0] + r2[2] + dx and
                    r1[1] + r1[3] <= r2[1] + r2[3] + dy and (n2 > max(3, n1) or n1 < 3)):
                inside = True
                break
        if not inside:
            out.append(r1)
            weights.append(n1)
    return out, weights


class _Cluster(caffe.Layer):
    """Shared by both layers: one (N, MAX_BOXES, 5) top per class from bottoms coverage and bbox grids."""

    def reshape(self, bottom, top):
        n, classes = bottom[0].data.shape[:2]
        if classes != self.num_classes:
            raise ValueError("the coverage bottom has %d classes, param_str says %d" % (classes, self.num_classes))
        if len(top) != self.num_classes:
            raise ValueError("%d tops for %d classes" % (len(top), self.num_classes))
        for t in top:
            t.reshape(n, MAX_BOXES, 5)

    def forward(self, bottom, top):
        cvg, boxes = bottom[0].data, bottom[1].data
        for c, t in enumerate(top):
            out = np.zeros((cvg.shape[0], MAX_BOXES, 5))
            for i in range(cvg.shape[0]):
                found = np.asarray(self.image_boxes(cvg[i, c], boxes[i]), np.float16).reshape(-1, 5)[:MAX_BOXES]
                out[i, :len(found)] = found
            t.data[...] = out

    def backward(self, top, propagate_down, bottom):
        pass


class ClusterGroundtruth(_Cluster):
    """param_str: image_size_x, image_size_y, stride[, num_classes]; tops carry (xl, yt, xr, yb, 0)."""

    def setup(self, bottom, top):
        self.size_x, self.size_y, self.stride, self.num_classes = _params(
            self.param_str, (int, int, int, int), "ClusterGroundtruth")

    def image_boxes(self, cvg, boxes):
        found = grid_boxes(cvg, boxes, self.stride, (self.size_x, self.size_y), lambda c: c > 0)
        unique = sorted({tuple(b) for b in found.tolist()})
        return [list(b) + [0.0] for b in unique]


class ClusterDetections(_Cluster):
    """param_str: image_size_x, image_size_y, stride, gridbox_cvg_threshold, gridbox_rect_threshold,
    gridbox_rect_eps, min_height[, num_classes]; tops carry (xl, yt, xr, yb, log(cluster size))."""

    def setup(self, bottom, top):
        (self.size_x, self.size_y, self.stride, self.cvg_threshold, self.rect_threshold, self.rect_eps,
         self.min_height, self.num_classes) = _params(self.param_str, (int, int, int, float, int, float, int, int),
                                                      "ClusterDetections")

    def image_boxes(self, cvg, boxes):
        found = grid_boxes(cvg, boxes, self.stride, (self.size_x, self.size_y), lambda c: c >= self.cvg_threshold)
        rects = [[int(b[0]), int(b[1]), int(b[2] - b[0]), int(b[3] - b[1])] for b in found.tolist()]
        merged, weights = group_rectangles(rects, self.rect_threshold, self.rect_eps)
        return [[r[0], r[1], r[0] + r[2], r[1] + r[3], math.log(w)]
                for r, w in zip(merged, weights) if r[3] >= self.min_height]
