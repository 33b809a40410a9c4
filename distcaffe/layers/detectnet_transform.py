"""NVCaffe's DetectNetTransformation: DetectNet's joint image/box augmentation and its ground-truth grid.

Bottoms: images (N, 3, H, W) in 0..255 (BGR) and DIGITS' KITTI "label image" (N, 1, rows, 16): row 0 holds
(number of boxes, 16), each next row one box (x, y, w, h, alpha, class, scenario, roty, truncated, occluded,
dimensions xyz, location xyz). In TRAIN the image is hue-rotated, desaturated, flipped, scaled (cubic),
rotated and crop-shifted as NVCaffe draws them; in TEST it is only resized to image_size. Tops: the image at
(image_size_y, image_size_x) less the mean, and the coverage label (8 + classes, H/stride, W/stride):
foreground, box corners relative to the grid cell, 1/w, 1/h, object norm, one coverage map per class.
NVCaffe's Backward is empty: no gradient flows to either bottom.

Numerics are NVCaffe's CPU path (Forward_cpu) with the OpenCV of its day (3.4, built without IPP as
distributions build it), in its Dtype (float32; float64 in a DOUBLE net), on CPU and GPU alike. Bit for bit:
the rotation (matrix from float32 RotatedRect corners and OpenCV's LU; warpAffine's fixed-point map, 1/32
bilinear grid and transparent border, whose last source row and column stay 0), the cubic scaling
(data/resize.py) and BGR->HSV as OpenCV's scalar code computes it (its vector code, fusing a multiply-add,
rounds the hue up to 3e-5 degrees apart); HSV->BGR is its scalar code too (the vector code differs in the last
bit). Not followed: hue shifted below 0 degrees, where OpenCV's HSV->BGR disagrees between its own scalar and
vector code and versions (3.4's scalar code gives hue 0, the vector code of 3.4 and 4.x extrapolates the
sector below 0): we wrap it mod 360, as the scalar code of OpenCV 4+ does; and NVCaffe's GPU path
(Forward_gpu), a different geometry (one bicubic pass, corner-aligned scaling, the hue shifted the other way),
which we do not copy.
"""
import math

import numpy as np

from .. import backend
from ..proto import caffe_pb2
from ..data.resize import CUBIC, resize
from .base import Layer, register
from .data_layers import _layer_seed

FLT_EPSILON = float(np.finfo(np.float32).eps)
BBOX_LEN = 16                  # floats per box in the label image (NVCaffe's BboxLabel)
TRANSFORMED_LABEL_SIZE = 8     # foreground, tl x/y, br x/y, 1/w, 1/h, obj_norm
_GT = caffe_pb2.DetectNetGroundTruthParameter


def c_round(x):
    """C's round(): halves away from zero."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def intersect(a, b):
    """cv::Rect_ & for (x, y, w, h) tuples: the overlap, or an empty rect."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    w, h = min(a[0] + a[2], b[0] + b[2]) - x1, min(a[1] + a[3], b[1] + b[3]) - y1
    return (x1, y1, w, h) if w > 0 and h > 0 else (0.0, 0.0, 0.0, 0.0)


class CoverageGrid:
    """NVCaffe's RectangularCoverageGenerator: boxes (image coordinates) -> the (8 + classes, gh, gw) label."""

    def __init__(self, g):
        self.g, self.stride = g, int(g.stride)
        self.image = (0.0, 0.0, float(g.image_size_x), float(g.image_size_y))
        self.gw, self.gh = int(g.image_size_x / g.stride), int(g.image_size_y / g.stride)
        self.classes = {int(m.src): int(m.dst) for m in g.object_class} or {1: 0}
        self.channels = max(self.classes.values()) + 1 + TRANSFORMED_LABEL_SIZE
        self.min_obj_norm = 0.0 if g.obj_norm else 1.0

    def shape(self):
        return self.channels, self.gh, self.gw

    def prune(self, boxes):
        """Boxes cropped to the image (truncation updated) when crop_bboxes, of a mapped class and non-empty."""
        kept = []
        for b in boxes:
            b = np.array(b, np.float64)
            if self.g.crop_bboxes:
                cropped = intersect(tuple(b[:4]), self.image)
                truncation = (1.0 - max(b[8], 0.0)) * cropped[2] * cropped[3] / max(b[2] * b[3], FLT_EPSILON)
                b[8] = max(0.0, min(1.0, 1.0 - truncation))
                b[:4] = cropped
            if int(b[5]) not in self.classes or b[2] * b[3] < FLT_EPSILON:
                continue
            kept.append(b)
        return kept

    def coverage_box(self, x, y, w, h):
        """The box shrunk by scale_cvg about its centre, bounded by min_cvg_len (GRIDBOX_MIN) or max_cvg_len."""
        g = self.g
        sw, sh = w * g.scale_cvg, h * g.scale_cvg
        if g.gridbox_type == _GT.GRIDBOX_MIN:
            sw, sh = min(w, max(g.min_cvg_len, sw)), min(h, max(g.min_cvg_len, sh))
        else:
            sw, sh = min(g.max_cvg_len, sw), min(g.max_cvg_len, sh)
        cx, cy = x + w * 0.5, y + h * 0.5
        return cx - sw * 0.5, cy - sh * 0.5, sw, sh

    def generate(self, boxes):
        out = np.zeros(self.shape(), np.float64)
        s, area = self.stride, float(self.stride * self.stride)
        for b in self.prune(boxes):
            x, y, w, h = b[:4]
            cov = self.coverage_box(x, y, w, h)
            norm = max(self.min_obj_norm, area / (cov[2] * cov[3]))
            x0, y0 = max(math.floor(cov[0] / s), 0), max(math.floor(cov[1] / s), 0)
            x1 = min(math.ceil((cov[0] + cov[2]) / s), self.gw)
            y1 = min(math.ceil((cov[1] + cov[3]) / s), self.gh)
            for gy in range(y0, y1):
                for gx in range(x0, x1):
                    cell = (gx * s, gy * s, s, s)
                    c = intersect(cov, cell)
                    if c[2] * c[3] / area <= FLT_EPSILON:
                        continue
                    out[TRANSFORMED_LABEL_SIZE:, gy, gx] = 0.0
                    out[TRANSFORMED_LABEL_SIZE + self.classes[int(b[5])], gy, gx] = 1.0
                    out[:TRANSFORMED_LABEL_SIZE, gy, gx] = (1.0, x - cell[0], y - cell[1], x + w - cell[0],
                                                            y + h - cell[1], 1.0 / w, 1.0 / h, norm)
        return out


def bgr_to_hsv(img, xp):
    """OpenCV's float BGR2HSV (its scalar code, in the image's dtype) of a (3, H, W) image in [0, 1]: H in
    degrees [0, 360), S and V in [0, 1]; FLT_EPSILON keeps grey and black pixels finite, as there."""
    f = img.dtype.type
    eps = f(FLT_EPSILON)
    b, g, r = img[0], img[1], img[2]
    v = xp.maximum(xp.maximum(b, g), r)
    diff = v - xp.minimum(xp.minimum(b, g), r)
    s = diff / (xp.abs(v) + eps)
    d = (60.0 / (diff + eps).astype(np.float64)).astype(img.dtype)
    h = xp.where(v == r, (g - b) * d, xp.where(v == g, (b - r) * d + f(120), (r - g) * d + f(240)))
    return xp.stack([xp.where(h < 0, h + f(360), h), s, v])


def hsv_to_bgr(hsv, xp):
    """OpenCV's float HSV2BGR (its scalar code): hue scaled by 6/360 and wrapped into [0, 6), the sector's
    (v, v(1 - s), v(1 - s f), v(1 - s (1 - f))) picked per channel; grey where s is 0."""
    f = hsv.dtype.type
    h, s, v = hsv[0] * f(np.float32(6) / np.float32(360)), hsv[1], hsv[2]
    for _ in range(2):                                   # OpenCV's do { h += 6 } while (h < 0), and -= 6
        h = xp.where(h < 0, h + f(6), xp.where(h >= 6, h - f(6), h))
    sector = xp.floor(h)
    frac = h - sector
    sector = sector.astype(np.int64)
    bad = (sector < 0) | (sector >= 6)
    sector, frac = xp.where(bad, 0, sector), xp.where(bad, f(0), frac)
    one = f(1)
    tab = xp.stack([v, v * (one - s), v * (one - s * frac), v * (one - s * (one - frac))])
    order = xp.asarray(np.array([[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]]))  # b, g, r
    pick = order[sector].transpose(2, 0, 1)              # (3, H, W) indices into tab
    bgr = xp.take_along_axis(tab, pick, axis=0)
    return xp.where(s == 0, v, bgr)


def rotated_rect_points(cx, cy, w, h, degrees):
    """cv::RotatedRect::points in OpenCV's float32 arithmetic: the 4 corners of a w x h box at (cx, cy) turned
    by `degrees` (a float angle, as NVCaffe's AugmentSelection keeps it)."""
    f = np.float32
    angle = float(f(degrees)) * math.pi / 180.0
    b, a = f(math.cos(angle)) * f(0.5), f(math.sin(angle)) * f(0.5)
    cx, cy, w, h = f(cx), f(cy), f(w), f(h)
    p0 = (cx - a * h - b * w, cy + b * h - a * w)
    p1 = (cx + a * h - b * w, cy - b * h - a * w)
    two = f(2)
    return np.array([p0, p1, (two * cx - p0[0], two * cy - p0[1]), (two * cx - p1[0], two * cy - p1[1])], np.float32)


def bounding_rect(points):
    """cv::RotatedRect::boundingRect: integer (x, y, w, h) from floor of the minima to ceil of the maxima."""
    x0, y0 = math.floor(points[:, 0].min()), math.floor(points[:, 1].min())
    x1, y1 = math.ceil(points[:, 0].max()), math.ceil(points[:, 1].max())
    return x0, y0, x1 - x0 + 1, y1 - y0 + 1


def rotated_size(w, h, degrees):
    """NVCaffe's getRotatedSize: the bounding size of a w x h image turned by `degrees` (integer centre)."""
    r = bounding_rect(rotated_rect_points(int(0.5 * w), int(0.5 * h), w, h, degrees))
    return r[2], r[3]


def lu_solve(a, b):
    """OpenCV 3.4's LU solve of a small dense system (LUImpl: partial pivoting, eliminations by the negated
    reciprocal pivot, back substitution dividing by it), in Python floats so that its roundings are OpenCV's."""
    a, b, n = [list(map(float, row)) for row in a], list(map(float, b)), len(b)
    for i in range(n):
        k = max(range(i, n), key=lambda j: (abs(a[j][i]), -j))
        a[i], a[k], b[i], b[k] = a[k], a[i], b[k], b[i]
        d = -1 / a[i][i]
        for j in range(i + 1, n):
            alpha = a[j][i] * d
            for c in range(i + 1, n):
                a[j][c] += alpha * a[i][c]
            b[j] += alpha * b[i]
    for i in range(n - 1, -1, -1):
        s = b[i]
        for c in range(i + 1, n):
            s -= a[i][c] * b[c]
        b[i] = s / a[i][i]
    return np.array(b)


def affine_transform(src, dst):
    """cv::getAffineTransform: the 2x3 affine taking 3 points to 3 others, from OpenCV's 6x6 system."""
    a, b = np.zeros((6, 6)), np.zeros(6)
    for i in range(3):
        a[2 * i, :3] = a[2 * i + 1, 3:] = (src[i, 0], src[i, 1], 1)
        b[2 * i:2 * i + 2] = dst[i]
    return lu_solve(a, b).reshape(2, 3)


def rotation_matrix(w, h, degrees, dtype=np.float64):
    """NVCaffe's getTransformationMatrix: the affine taking the corners of the w x h image (cv::RotatedRect about
    its centre) to those turned by `degrees` and shifted so their bounding box starts at the origin, held in the
    layer's `dtype` (NVCaffe's Mat1v) as OpenCV's warpAffine and the label rotation then read it."""
    cx, cy = np.dtype(dtype).type(w * 0.5), np.dtype(dtype).type(h * 0.5)
    bx, by = bounding_rect(rotated_rect_points(cx, cy, w, h, degrees))[:2]
    m = affine_transform(rotated_rect_points(cx, cy, w, h, 0.0), rotated_rect_points(cx - bx, cy - by, w, h, degrees))
    return m.astype(dtype).astype(np.float64)


AB_BITS, INTER_BITS = 10, 5      # OpenCV's warpAffine: map in 1/1024 pixel, rounded to its 1/32 interpolation grid


def invert_affine(m):
    """warpAffine's inversion of the 2x3 matrix (its own formula, so the roundings are OpenCV's)."""
    m = [float(v) for v in np.asarray(m, np.float64).reshape(-1)]
    d = m[0] * m[4] - m[1] * m[3]
    d = 1.0 / d if d != 0 else 0.0
    a11, a22 = m[4] * d, m[0] * d
    m[0], m[1], m[3], m[4] = a11, m[1] * -d, m[3] * -d, a22
    m[2], m[5] = -m[0] * m[2] - m[1] * m[5], -m[3] * m[2] - m[4] * m[5]
    return m


def warp_affine(img, m, out_w, out_h, xp):
    """cv::warpAffine(INTER_LINEAR, BORDER_TRANSPARENT) of a (C, H, W) float image into zeros, bit for bit as
    OpenCV computes it up to 4.8 (NVCaffe's era): the inverse map in 1/1024 fixed point (cvRound), shifted to
    whole pixels plus a 1/32 sub-pixel index, the bilinear weights OpenCV's float table of multiples of 1/1024,
    summed in the image's dtype in OpenCV's order. A pixel whose 2x2 source neighbourhood leaves the image stays
    0 (the transparent border, the last source row and column included; OpenCV 4.9+ and 5 differ there and in
    5's float coordinates). Sizes under 32768 pixels, as OpenCV's short maps."""
    im = invert_affine(m)
    one, n = 1 << AB_BITS, 1 << INTER_BITS
    x, y = xp.arange(out_w, dtype=np.float64), xp.arange(out_h, dtype=np.float64)
    X = (xp.rint((im[1] * y + im[2]) * one).astype(np.int32)[:, None] + (one // n // 2) +
         xp.rint(im[0] * x * one).astype(np.int32)[None, :]) >> (AB_BITS - INTER_BITS)
    Y = (xp.rint((im[4] * y + im[5]) * one).astype(np.int32)[:, None] + (one // n // 2) +
         xp.rint(im[3] * x * one).astype(np.int32)[None, :]) >> (AB_BITS - INTER_BITS)
    c, h, w = img.shape
    sx, sy = X >> INTER_BITS, Y >> INTER_BITS
    inside = (sx >= 0) & (sx < w - 1) & (sy >= 0) & (sy < h - 1)
    at = xp.where(inside, sy * w + sx, 0)                                 # top-left source pixel, flat
    table = xp.asarray(_bilinear_table(img.dtype))[(Y & (n - 1)) * n + (X & (n - 1))]      # (out_h, out_w, 4)
    src = img.reshape(c, h * w)
    out = (src[:, at] * table[..., 0] + src[:, at + 1] * table[..., 1] + src[:, at + w] * table[..., 2] +
           src[:, at + w + 1] * table[..., 3])
    return xp.where(inside, out, img.dtype.type(0))


def _bilinear_table(dtype):
    """OpenCV's BilinearTab_f: for each of the 32 x 32 sub-pixel positions (ty, tx), the weights of the top-left,
    top-right, bottom-left and bottom-right pixels, multiples of 1/1024 (exact in float32)."""
    n = 1 << INTER_BITS
    ty, tx = np.divmod(np.arange(n * n), n)
    return (np.stack([(n - ty) * (n - tx), (n - ty) * tx, ty * (n - tx), ty * tx], axis=1) / float(n * n)).astype(dtype)


def crop(img, out_w, out_h, ox, oy, xp):
    """NVCaffe's crop_image: the out_h x out_w window at (ox, oy), zeros where it leaves the image."""
    c, h, w = img.shape
    out = xp.zeros((c, out_h, out_w), img.dtype)
    sx0, sy0, sx1, sy1 = max(ox, 0), max(oy, 0), min(ox + out_w, w), min(oy + out_h, h)
    if sx1 > sx0 and sy1 > sy0:
        out[:, sy0 - oy:sy1 - oy, sx0 - ox:sx1 - ox] = img[:, sy0:sy1, sx0:sx1]
    return out


class Augmentation:
    """One image's draw (NVCaffe's AugmentSelection); the identity except `scale` when nothing is drawn."""

    def __init__(self, size, hue=0.0, saturation=1.0, flip=False, scale=None, rotation=0.0, offset=(0, 0)):
        self.hue, self.saturation, self.flip, self.rotation, self.offset = hue, saturation, flip, rotation, offset
        self.scale = scale or size

    def do_hue(self):
        return abs(self.hue) > FLT_EPSILON

    def do_desaturation(self):
        return self.saturation < 1.0 - 1.0 / 255

    def do_rotation(self):
        return abs(self.rotation) > FLT_EPSILON


def draw_augmentation(a, size, out_size, rand):
    """NVCaffe's get_augmentations in TRAIN: the draws in its order from `rand()` (uniform in [0, 1])."""
    aug = Augmentation(size)
    if rand() <= a.hue_rotation_prob:
        aug.hue = max(min((rand() - 0.5) * 2 * a.hue_rotation, 180.0), -180.0)
    if rand() <= a.desaturation_prob:
        aug.saturation = 1.0 - rand() * a.desaturation_max
    aug.flip = rand() <= a.flip_prob
    if rand() <= a.scale_prob:
        scale = np.float32(a.scale_min + (a.scale_max - a.scale_min) * rand())
        aug.scale = (c_round(size[0] * scale), c_round(size[1] * scale))
    if rand() <= a.rotation_prob:
        aug.rotation = (rand() - 0.5) * 2 * a.max_rotate_degree
    before = rotated_size(*aug.scale, aug.rotation) if aug.do_rotation() else aug.scale
    if rand() <= a.crop_prob:
        px, py, sx, sy = rand(), rand(), int(a.shift_x), int(a.shift_y)
    else:
        px, py, sx, sy = 0.5, 0.5, 0, 0
    aug.offset = (c_round(px * (before[0] - out_size[0] + sx) - sx // 2),
                  c_round(py * (before[1] - out_size[1] + sy) - sy // 2))
    return aug


def transform_boxes(boxes, aug, size, dtype=np.float64):
    """NVCaffe's transform_label: flip (x' = W - x - w - 1), scale, rotate the centres (with the image's
    rotation matrix, held in the layer's `dtype`; the products in float64, NVCaffe's in Dtype), shift by the
    crop."""
    boxes = np.array(boxes, np.float64).reshape(-1, BBOX_LEN)
    if aug.flip:
        boxes[:, 0] = size[0] - boxes[:, 0] - boxes[:, 2] - 1
    if aug.scale != size:
        fx, fy = aug.scale[0] / size[0], aug.scale[1] / size[1]
        boxes[:, [0, 2]] *= fx
        boxes[:, [1, 3]] *= fy
    if aug.do_rotation():
        m = rotation_matrix(aug.scale[0], aug.scale[1], aug.rotation, dtype)
        half = boxes[:, 2:4] * 0.5
        centre = boxes[:, :2] + half
        boxes[:, :2] = centre @ m[:, :2].T + m[:, 2] - half
    boxes[:, 0] -= aug.offset[0]
    boxes[:, 1] -= aug.offset[1]
    return boxes


@register("DetectNetTransformation")
class DetectNetTransformationLayer(Layer):
    """Augments DetectNet's images with their boxes and turns the boxes into the coverage/bbox label grid."""

    exact_num_bottom = 2
    exact_num_top = 2

    def layer_setup(self, bottom, top):
        self.aug_param = self.layer_param.detectnet_augmentation_param
        self.grid = CoverageGrid(self.layer_param.detectnet_groundtruth_param)
        g = self.layer_param.detectnet_groundtruth_param
        self.check(g.stride > 0 and g.image_size_x >= g.stride and g.image_size_y >= g.stride,
                   "detectnet_groundtruth_param needs stride > 0 and image_size_x/y of at least one stride "
                   "(stride %d, image %dx%d)" % (g.stride, g.image_size_x, g.image_size_y))
        self.out_size = (int(g.image_size_x), int(g.image_size_y))
        tp = self.layer_param.transform_param
        self.rng = np.random.default_rng(_layer_seed(tp, backend.solver_rank()))
        self.mean_image, self.mean_values = None, None
        if tp.HasField("mean_file"):
            from .. import io as cio
            try:
                arr = cio.blobproto_to_array(cio.read_blobproto(tp.mean_file), where=tp.mean_file)
            except Exception as e:
                raise self.error("cannot read mean_file %s: %s" % (tp.mean_file, e)) from None
            self.mean_image = np.asarray(arr, np.float64).reshape(arr.shape[-3:])
        elif len(tp.mean_value) in (1, 3):
            self.mean_values = np.resize(np.asarray(tp.mean_value, np.float64), 3)
        elif len(tp.mean_value):
            raise self.error("takes 1 or 3 mean_value, got %d" % len(tp.mean_value))

    def reshape(self, bottom, top):
        self.check(len(bottom[0].shape) == 4 and bottom[0].shape[1] == 3,
                   "bottom %s must be (N, 3, H, W) images, got %s" % (bottom[0].name, bottom[0].shape_string()))
        self.check(bottom[0].shape[0] == bottom[1].shape[0],
                   "bottoms %s and %s have different batch sizes (%d vs %d)"
                   % (bottom[0].name, bottom[1].name, bottom[0].shape[0], bottom[1].shape[0]))
        top[0].reshape((bottom[0].shape[0], 3, self.out_size[1], self.out_size[0]))
        top[1].reshape((bottom[1].shape[0],) + self.grid.shape())

    @property
    def work_dtype(self):
        """What NVCaffe's Dtype is for this layer: float64 in a DOUBLE net, float32 otherwise."""
        return np.dtype(np.float64 if self.dtype == np.float64 else np.float32)

    def _mean(self, h, w):
        """The mean in [0, 1] at the source size in the working dtype (a mean_file resized with cubic
        interpolation then scaled by 1/255, mean_value divided by 255, as NVCaffe)."""
        dt = self.work_dtype.type
        if self.mean_image is not None:
            m = self.mean_image
            if m.shape[0] != 3:
                raise self.error("mean_file has %d channels, the images 3" % m.shape[0])
            return self.xp.asarray(resize(m.astype(dt), h, w, CUBIC) * dt(1 / 255.0))
        if self.mean_values is not None:
            return self.xp.asarray(self.mean_values[:, None, None].astype(dt) / dt(255))
        return None

    def read_boxes(self, blob, i):
        """The boxes of image `i` from the label image: row 0 is (count, 16), one box a row after it."""
        flat = backend.to_host(blob.dev_data[i]).reshape(-1).astype(np.float64)
        rows = flat.size // BBOX_LEN
        count, length = int(flat[0]), int(flat[1]) if flat.size > 1 else 0
        self.check(length == BBOX_LEN, "bottom %s item %d is not a DetectNet label image: row 0 gives a box length "
                   "of %d, expected %d" % (blob.name, i, length, BBOX_LEN))
        self.check(0 <= count < rows, "bottom %s item %d lists %d boxes but holds %d rows of %d"
                   % (blob.name, i, count, rows - 1, BBOX_LEN))
        return flat[BBOX_LEN:BBOX_LEN * (count + 1)].reshape(count, BBOX_LEN)

    def augmentation(self, size):
        if self.phase == caffe_pb2.TRAIN:
            return draw_augmentation(self.aug_param, size, self.out_size, self.rng.random)
        return Augmentation(size, scale=self.out_size)

    def transform_image(self, img, aug):
        """NVCaffe's transform_image: [0, 1], HSV, mean, flip, cubic scale, rotate, crop, back to 0..255."""
        xp = self.xp
        img = img * img.dtype.type(1 / 255.0)              # OpenCV's Mat / 255: a multiply by (Dtype) 1/255
        if aug.do_hue() or aug.do_desaturation():
            hsv = bgr_to_hsv(img, xp)
            hsv[0] += aug.hue if aug.do_hue() else 0.0
            hsv[1] *= aug.saturation if aug.do_desaturation() else 1.0
            img = hsv_to_bgr(hsv, xp)
        mean = self._mean(img.shape[1], img.shape[2])
        if mean is not None:
            img = img - mean
        if aug.flip:
            img = img[:, :, ::-1]
        if aug.scale != (img.shape[2], img.shape[1]):
            img = xp.asarray(resize(backend.to_host(img), aug.scale[1], aug.scale[0], CUBIC))
        if aug.do_rotation():
            m = rotation_matrix(img.shape[2], img.shape[1], aug.rotation, img.dtype)
            img = warp_affine(img, m, *rotated_size(img.shape[2], img.shape[1], aug.rotation), xp)
        return crop(img, self.out_size[0], self.out_size[1], aug.offset[0], aug.offset[1], xp) * img.dtype.type(255)

    def forward(self, bottom, top):
        xp = self.xp
        images, labels = top[0].mut_dev_data, top[1].mut_dev_data
        for i in range(bottom[0].shape[0]):
            img = bottom[0].dev_data[i].astype(self.work_dtype)
            size = (img.shape[2], img.shape[1])
            aug = self.augmentation(size)
            images[i] = self.transform_image(img, aug).astype(images.dtype)
            boxes = transform_boxes(self.read_boxes(bottom[1], i), aug, size, self.work_dtype)
            labels[i] = xp.asarray(self.grid.generate(boxes), labels.dtype)

    def backward(self, top, propagate_down, bottom):
        """NVCaffe's Backward_cpu/gpu are empty: augmentation passes no gradient to the images or labels."""

    def allow_force_backward(self, bottom_index):
        return False
