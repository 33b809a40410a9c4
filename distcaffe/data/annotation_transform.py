"""SSD's image + box augmentation (NVCaffe data_transformer.cpp annotated paths, util/sampler.cpp,
util/im_transforms.cpp) for the AnnotatedData layer, per image on the host.

Order (AnnotatedDataLayer::load_batch): photometric `distort_param` (brightness, contrast, saturation, hue,
channel order; OpenCV's 8-bit HSV to within a grey level), `expand_param` (zoom out onto a mean-filled
canvas), one of the `batch_sampler` crops (random scale/aspect boxes meeting overlap constraints), then the
transform: `resize_param` (WARP, FIT_SMALL_SIZE, FIT_LARGE_SIZE_AND_PAD per distcaffe.data.resize_policy;
interp_mode picked at random), `noise_param` (distcaffe.data.noise, OpenCV), crop (crop_size or crop_h/crop_w:
random in TRAIN, centre in TEST), mirror, mean and scale. Boxes follow every geometric step (projected, clipped
and filtered by `emit_constraint`); a box that leaves the image is dropped. Distortion, resize and noise apply
to raw records as well as encoded ones (NVCaffe applies them to encoded records only). NVCaffe also re-encodes
an encoded record as JPEG (OpenCV's default quality 95) after each of distortion, expansion and the sampler
crop; here the decoded pixels go through losslessly.
"""
import numpy as np

from ..errors import DataError
from ..proto import caffe_pb2
from . import resize_policy

F32 = np.float32
TRAIN = caffe_pb2.TRAIN
UNIT = np.array([0, 0, 1, 1], F32)


# --- boxes -----------------------------------------------------------------------------------------------
def _area(b):
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    return np.where((w < 0) | (h < 0), F32(0), w * h)


def _intersection(a, b):
    """Caffe's IntersectBBox of boxes (..., 4) with one box b (4,): the overlap box, zeros when apart."""
    apart = (b[0] > a[..., 2]) | (b[2] < a[..., 0]) | (b[1] > a[..., 3]) | (b[3] < a[..., 1])
    inter = np.stack([np.maximum(a[..., 0], b[0]), np.maximum(a[..., 1], b[1]),
                      np.minimum(a[..., 2], b[2]), np.minimum(a[..., 3], b[3])], axis=-1)
    return np.where(apart[..., None], F32(0), inter).astype(F32)


def coverage(a, b):
    """Caffe's BBoxCoverage: the fraction of each box a (..., 4) that box b (4,) covers."""
    inter = _area(_intersection(a, b))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / _area(a), F32(0)).astype(F32)


def jaccard(a, b):
    """Caffe's JaccardOverlap of boxes a (..., 4) with box b (4,)."""
    inter_box = _intersection(a, b)
    iw, ih = inter_box[..., 2] - inter_box[..., 0], inter_box[..., 3] - inter_box[..., 1]
    inter = iw * ih
    ok = (iw > 0) & (ih > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, inter / (_area(a) + _area(b) - inter), F32(0)).astype(F32)


def transform_boxes(boxes, crop, emit=None, mirror=False):
    """Caffe's TransformAnnotation: boxes meeting the emit constraint w.r.t. `crop` (4,), projected into it
    (clipped to [0, 1]; boxes outside or of zero size dropped), then mirrored."""
    c = boxes.corners
    keep = np.ones(len(boxes), bool)
    if emit is not None:
        if emit.emit_type == caffe_pb2.EmitConstraint.CENTER:
            cx, cy = (c[:, 0] + c[:, 2]) / 2, (c[:, 1] + c[:, 3]) / 2
            keep &= (cx >= crop[0]) & (cx <= crop[2]) & (cy >= crop[1]) & (cy <= crop[3])
        else:
            keep &= coverage(c, crop) > F32(emit.emit_overlap)
    keep &= ~((c[:, 0] >= crop[2]) | (c[:, 2] <= crop[0]) | (c[:, 1] >= crop[3]) | (c[:, 3] <= crop[1]))
    size = np.array([crop[2] - crop[0], crop[3] - crop[1]] * 2, F32)
    proj = np.clip((c - np.tile(crop[:2], 2)) / size, 0, 1).astype(F32)
    keep &= _area(proj) > 0
    if mirror:
        proj = np.stack([1 - proj[:, 2], proj[:, 1], 1 - proj[:, 0], proj[:, 3]], axis=1).astype(F32)
    return boxes.take(keep, proj)


# --- batch samplers -------------------------------------------------------------------------------------
def _sample_box(sampler, rng):
    """Caffe's SampleBBox: a random box of the sampler's scale and aspect-ratio ranges inside [0, 1]."""
    scale = F32(rng.uniform(sampler.min_scale, sampler.max_scale))
    ratio = F32(rng.uniform(sampler.min_aspect_ratio, sampler.max_aspect_ratio))
    ratio = min(max(ratio, scale ** 2), 1 / scale ** 2)
    w, h = F32(scale * np.sqrt(ratio)), F32(scale / np.sqrt(ratio))
    x = F32(rng.uniform(0, 1 - w)) if w < 1 else F32(0)
    y = F32(rng.uniform(0, 1 - h)) if h < 1 else F32(0)
    return np.array([x, y, x + w, y + h], F32)


def _satisfies(box, objects, constraint):
    """Caffe's SatisfySampleConstraint: any object meeting every given overlap/coverage bound."""
    c = constraint
    checks = [(c.HasField("min_jaccard_overlap") or c.HasField("max_jaccard_overlap"), "jaccard_overlap",
               lambda: jaccard(objects, box)),
              (c.HasField("min_sample_coverage") or c.HasField("max_sample_coverage"), "sample_coverage",
               lambda: np.array([coverage(box[None], o)[0] for o in objects], F32).reshape(-1)),
              (c.HasField("min_object_coverage") or c.HasField("max_object_coverage"), "object_coverage",
               lambda: coverage(objects, box))]
    active = [(name, fn()) for on, name, fn in checks if on]
    if not active:
        return True
    ok = np.ones(len(objects), bool)
    for name, values in active:
        if c.HasField("min_" + name):
            ok &= values >= F32(getattr(c, "min_" + name))
        if c.HasField("max_" + name):
            ok &= values <= F32(getattr(c, "max_" + name))
    return bool(ok.any())


def sample_crops(boxes, batch_samplers, rng):
    """Caffe's GenerateBatchSamples: candidate crop boxes of every batch_sampler (max_trials tries each, at most
    max_sample kept), for the image's object boxes."""
    out = []
    for bs in batch_samplers:
        if not bs.use_original_image:
            continue
        found = 0
        for _ in range(bs.max_trials):
            if bs.HasField("max_sample") and found >= bs.max_sample:
                break
            box = _sample_box(bs.sampler, rng)
            if _satisfies(box, boxes.corners, bs.sample_constraint):
                found += 1
                out.append(box)
    return out


def crop_image(img, box):
    """Caffe's CropImage: the pixels of the clipped normalized `box` (offsets and sizes truncated)."""
    _, h, w = img.shape
    x0, y0, x1, y1 = (np.clip(box, 0, 1) * np.array([w, h, w, h], F32)).tolist()
    ox, oy = int(x0), int(y0)
    return img[:, oy:oy + int(y1 - y0), ox:ox + int(x1 - x0)]


# --- photometric distortion (OpenCV 8-bit HSV) ------------------------------------------------------------
def _saturate(x):
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def bgr_to_hsv(img):
    """OpenCV's 8-bit BGR2HSV of a (3, H, W) image: H in [0, 180), S and V in [0, 255]."""
    b, g, r = (img[i].astype(np.float64) for i in range(3))
    v = np.maximum(np.maximum(r, g), b)
    d = v - np.minimum(np.minimum(r, g), b)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(v > 0, 255.0 * d / v, 0)
        h = np.where(v == r, 60 * (g - b) / d, np.where(v == g, 120 + 60 * (b - r) / d, 240 + 60 * (r - g) / d))
    h = np.where(d > 0, h, 0)
    h = np.where(h < 0, h + 360, h)
    return np.stack([_saturate(h / 2) % 180, _saturate(s), _saturate(v)])


def hsv_to_bgr(hsv):
    """OpenCV's 8-bit HSV2BGR of a (3, H, W) image."""
    h = (hsv[0].astype(np.float64) * 2) % 360 / 60
    s, v = hsv[1] / 255.0, hsv[2] / 255.0
    i = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return _saturate(np.stack([b, g, r]) * 255)


def distort(img, p, rng):
    """Caffe's ApplyDistort on a uint8 BGR (3, H, W) image: brightness, then contrast before or after
    saturation and hue (coin flip), then channel reordering; each with its own probability."""
    out = img

    def brightness(x):
        if rng.uniform() < p.brightness_prob:
            delta = rng.uniform(-p.brightness_delta, p.brightness_delta)
            if abs(delta) > 0:
                return _saturate(x.astype(np.float64) + delta)
        return x

    def contrast(x):
        if rng.uniform() < p.contrast_prob:
            delta = rng.uniform(p.contrast_lower, p.contrast_upper)
            if abs(delta - 1) > 1e-3:
                return _saturate(x.astype(np.float64) * delta)
        return x

    def saturation(x):
        if rng.uniform() < p.saturation_prob:
            delta = rng.uniform(p.saturation_lower, p.saturation_upper)
            hsv = bgr_to_hsv(x)
            hsv[1] = _saturate(hsv[1] * delta)
            return hsv_to_bgr(hsv)
        return x

    def hue(x):
        if rng.uniform() < p.hue_prob:
            delta = rng.uniform(-p.hue_delta, p.hue_delta)
            if abs(delta) > 0:
                hsv = bgr_to_hsv(x)
                hsv[0] = _saturate(hsv[0].astype(np.float64) + delta)
                return hsv_to_bgr(hsv)
        return x

    steps = (brightness, contrast, saturation, hue) if rng.uniform() > 0.5 else (brightness, saturation, hue,
                                                                                 contrast)
    for step in steps:
        out = step(out)
    if rng.uniform() < p.random_order_prob and out.shape[0] == 3:
        out = out[rng.permutation(3)]
    return out


# --- the whole per-image transform ------------------------------------------------------------------------
class AnnotatedTransformer:
    """The AnnotatedData layer's augmentation and transform of one (image, Boxes) record."""

    def __init__(self, tp, batch_samplers, phase, what):
        self.tp, self.samplers, self.phase, self.what = tp, list(batch_samplers), phase, what
        self.resize = tp.resize_param if tp.HasField("resize_param") else None
        if self.resize is not None:
            resize_policy.check(self.resize, what)
        self.noise = None
        if tp.HasField("noise_param"):
            from .noise import Noise
            self.noise = Noise(tp.noise_param, what)
        self.crop_h = int(tp.crop_size or tp.crop_h)
        self.crop_w = int(tp.crop_size or tp.crop_w)
        self.mean_values = np.asarray(tp.mean_value, F32)
        self.mean = None
        if tp.HasField("mean_file"):
            from .. import io as cio
            try:
                arr = cio.blobproto_to_array(cio.read_blobproto(tp.mean_file))
            except Exception as e:
                raise DataError("%s: cannot read mean_file %s: %s" % (what, tp.mean_file, e)) from None
            self.mean = np.asarray(arr, F32).reshape(arr.shape[-3:])
        self.emit = tp.emit_constraint if tp.HasField("emit_constraint") else None

    def output_shape(self, shape):
        """(C, H, W) of a transformed record whose image is `shape` (checked for every record in a batch)."""
        c, h, w = shape
        if self.resize is not None:
            h, w = resize_policy.new_size(self.resize, h, w)
        if self.crop_h and self.crop_w:
            h, w = self.crop_h, self.crop_w
        return c, h, w

    def _mean_for(self, c):
        if len(self.mean_values) not in (0, 1, c):
            raise DataError("%s: specify either 1 mean_value or as many as channels (%d), got %d"
                            % (self.what, c, len(self.mean_values)))
        return np.broadcast_to(self.mean_values, (c,)) if len(self.mean_values) else None

    def augment(self, img, boxes, rng):
        """Distortion, expansion and batch-sampler crop (load_batch's steps before the transform)."""
        tp = self.tp
        if tp.HasField("distort_param") and img.dtype == np.uint8:
            img = distort(img, tp.distort_param, rng)
        if tp.HasField("expand_param"):
            img, boxes = self._expand(img, boxes, rng)
        if self.samplers:
            crops = sample_crops(boxes, self.samplers, rng)
            if crops:
                box = crops[int(rng.integers(len(crops)))]
                img = crop_image(img, box)
                boxes = transform_boxes(boxes, np.clip(box, 0, 1), self.emit)
        return img, boxes

    def _expand(self, img, boxes, rng):
        ep = self.tp.expand_param
        if rng.uniform() > ep.prob or abs(ep.max_expand_ratio - 1) < 1e-2:
            return img, boxes
        ratio = F32(rng.uniform(1, ep.max_expand_ratio))
        c, h, w = img.shape
        eh, ew = int(h * ratio), int(w * ratio)
        oy, ox = int(np.floor(rng.uniform(0, eh - h))), int(np.floor(rng.uniform(0, ew - w)))
        canvas = np.zeros((c, eh, ew), img.dtype)
        mean = self._mean_for(c)
        if mean is not None:
            canvas[...] = mean.astype(img.dtype)[:, None, None]
        canvas[:, oy:oy + h, ox:ox + w] = img
        bbox = np.array([-ox / w, -oy / h, (ew - ox) / w, (eh - oy) / h], F32)
        return canvas, transform_boxes(boxes, bbox, self.emit)

    def transform(self, img, boxes, rng):
        """Resize, crop, mirror, mean and scale of an augmented record: (float32 (C, H, W), Boxes)."""
        tp, rp = self.tp, self.resize
        h0, w0 = img.shape[1:]
        if rp is not None:
            img = resize_policy.apply(img, rp, resize_policy.pick_interp(rp, rng), self.what)
            boxes = boxes.take(slice(None), resize_policy.update_boxes(rp, h0, w0, boxes.corners))
        if self.noise is not None:
            img = self.noise(img, rng)
        c, h, w = img.shape
        oh, ow = self.output_shape(img.shape)[1:]
        if oh > h or ow > w:
            raise DataError("%s: crop %dx%d is larger than the image (%dx%d)" % (self.what, oh, ow, h, w))
        if self.crop_h and self.crop_w and self.phase == TRAIN:
            oy, ox = int(rng.integers(h - oh + 1)), int(rng.integers(w - ow + 1))
        else:
            oy, ox = (h - oh) // 2, (w - ow) // 2
        mirror = bool(tp.mirror and rng.integers(2))
        out = img[:, oy:oy + oh, ox:ox + ow].astype(F32)
        if self.mean is not None:
            out -= self.mean[:, oy:oy + oh, ox:ox + ow]
        mean = self._mean_for(c)
        if mean is not None:
            out -= mean[:, None, None]
        if tp.scale != 1:
            out *= F32(tp.scale)
        if mirror:
            out = out[:, :, ::-1]
        crop = np.array([ox / w, oy / h, (ox + ow) / w, (oy + oh) / h], F32)
        boxes = transform_boxes(boxes, crop, self.emit, mirror)
        if rp is not None and resize_policy.extrapolates(rp):
            boxes = boxes.take(slice(None), resize_policy.extrapolate(rp, h0, w0, crop, boxes.corners, self.what))
        return np.ascontiguousarray(out), boxes
