"""SSD's `resize_param` (NVCaffe util/im_transforms.cpp ApplyResize, InferNewSize, UpdateBBoxByResizePolicy;
util/bbox_util.cpp ExtrapolateBBox, OutputBBox): the three resize modes on an image and on its boxes.

WARP stretches to height x width; FIT_SMALL_SIZE keeps the aspect ratio and scales the short side to its
target (the other side comes out longer); FIT_LARGE_SIZE_AND_PAD keeps the aspect ratio, fits the long side and
pads the short one (pad_mode CONSTANT with pad_value, MIRRORED = OpenCV's BORDER_REFLECT_101, REPEAT_NEAREST =
BORDER_REPLICATE) evenly on both ends. Box arithmetic is NVCaffe's, in float32 and in its order: its padding is
the unrounded half of the gap, not the image's whole-pixel padding. height_scale/width_scale re-express
FIT_SMALL_SIZE boxes in a canvas of that many pixels (ExtrapolateBBox) and map detections back (OutputBBox).
"""
import numpy as np

from ..errors import DataError
from ..proto import caffe_pb2
from .resize import AREA, CUBIC, LANCZOS4, LINEAR, NEAREST, resize

F32 = np.float32
RP = caffe_pb2.ResizeParameter
_INTERP = {RP.LINEAR: LINEAR, RP.AREA: AREA, RP.NEAREST: NEAREST, RP.CUBIC: CUBIC, RP.LANCZOS4: LANCZOS4}
_PAD = {RP.CONSTANT: "constant", RP.MIRRORED: "reflect", RP.REPEAT_NEAREST: "edge"}


def check(rp, what):
    """A DataError naming `what` for a resize_param NVCaffe would refuse (or crash on)."""
    if rp.height <= 0 or rp.width <= 0:
        raise DataError("%s: resize_param needs height and width" % what)
    if rp.resize_mode not in (RP.WARP, RP.FIT_SMALL_SIZE, RP.FIT_LARGE_SIZE_AND_PAD):
        raise DataError("%s: resize_param resize_mode %d is unknown" % (what, rp.resize_mode))


def pick_interp(rp, rng):
    """One of interp_mode, uniformly at random (NVCaffe's roll_weighted_die over equal weights); LINEAR if none."""
    modes = list(rp.interp_mode) or [RP.LINEAR]
    return _INTERP[modes[int(rng.integers(len(modes)))]]


def _aspect(h, w):
    return F32(w) / F32(h)


def new_size(rp, h, w):
    """InferNewSize: the (height, width) an h x w image has after the resize."""
    height, width = int(rp.height), int(rp.width)
    if rp.resize_mode == RP.FIT_SMALL_SIZE:
        orig = _aspect(h, w)
        if orig < F32(width) / F32(height):
            height = int(F32(width) / orig)
        else:
            width = int(orig * F32(height))
    return height, width


def _pad_value(rp, c, dtype, what):
    n = len(rp.pad_value)
    if n not in (0, 1, c):
        raise DataError("%s: resize_param: specify either 1 pad_value or as many as channels (%d), got %d"
                        % (what, c, n))
    v = np.broadcast_to(np.asarray(rp.pad_value, np.float64) if n else np.zeros(1), (c,))
    if dtype == np.uint8:
        return np.clip(np.rint(v), 0, 255).astype(np.uint8)          # cv::Scalar -> saturate_cast<uchar>
    return v.astype(dtype)


def apply(img, rp, algo, what):
    """ApplyResize of a (C, H, W) image with OpenCV interpolation `algo`."""
    c, h, w = img.shape
    height, width = int(rp.height), int(rp.width)
    if rp.resize_mode == RP.WARP:
        return resize(img, height, width, algo)
    orig = _aspect(h, w)
    if rp.resize_mode == RP.FIT_SMALL_SIZE:
        nh, nw = new_size(rp, h, w)
        _check_size(nh, nw, h, w, what)
        return resize(img, nh, nw, algo)
    wide = orig > F32(width) / F32(height)
    nh, nw = (int(np.floor(F32(width) / orig)), width) if wide else (height, int(np.floor(orig * F32(height))))
    _check_size(nh, nw, h, w, what)
    out = resize(img, nh, nw, algo)
    gap = (height - nh) if wide else (width - nw)
    first = int(np.floor(gap / 2.0))
    pads = ((0, 0), (first, gap - first), (0, 0)) if wide else ((0, 0), (0, 0), (first, gap - first))
    if rp.pad_mode == RP.CONSTANT:
        canvas = np.empty((c, height, width), img.dtype)
        canvas[...] = _pad_value(rp, c, img.dtype, what)[:, None, None]
        canvas[:, pads[1][0]:pads[1][0] + nh, pads[2][0]:pads[2][0] + nw] = out
        return canvas
    return np.pad(out, pads, mode=_PAD[rp.pad_mode])


def _check_size(nh, nw, h, w, what):
    if nh <= 0 or nw <= 0:
        raise DataError("%s: resize_param turns a %dx%d image into %dx%d" % (what, h, w, nh, nw))


def update_boxes(rp, h, w, corners):
    """UpdateBBoxByResizePolicy: (K, 4) normalized corners of an h x w image -> corners in the resized image."""
    new_h, new_w = F32(rp.height), F32(rp.width)
    oh, ow = F32(h), F32(w)
    orig, new_aspect = _aspect(h, w), new_w / new_h
    c = corners.astype(F32)
    x0, y0, x1, y1 = c[:, 0] * ow, c[:, 1] * oh, c[:, 2] * ow, c[:, 3] * oh
    zero = F32(0)

    def stretch(lo, hi, new, old):
        return np.maximum(zero, lo * new / old), np.minimum(new, hi * new / old)

    def padded(lo, hi, new, old, pad):
        return pad + np.maximum(zero, lo * (new - F32(2) * pad) / old), \
            pad + np.minimum(new, hi * (new - F32(2) * pad) / old)

    if rp.resize_mode == RP.FIT_LARGE_SIZE_AND_PAD:
        if orig > new_aspect:
            pad = (new_h - new_w / orig) / F32(2)
            (x0, x1), (y0, y1) = stretch(x0, x1, new_w, ow), padded(y0, y1, new_h, oh, pad)
        else:
            pad = (new_w - orig * new_h) / F32(2)
            (x0, x1), (y0, y1) = padded(x0, x1, new_w, ow, pad), stretch(y0, y1, new_h, oh)
    else:
        if rp.resize_mode == RP.FIT_SMALL_SIZE:
            if orig < new_aspect:
                new_h = new_w / orig
            else:
                new_w = orig * new_h
        (x0, x1), (y0, y1) = stretch(x0, x1, new_w, ow), stretch(y0, y1, new_h, oh)
    return np.stack([x0 / new_w, y0 / new_h, x1 / new_w, y1 / new_h], axis=1).astype(F32)


def _fit_small_dims(rp, h, w):
    """FIT_SMALL_SIZE's unrounded resized (height, width) as float32 (ExtrapolateBBox's arithmetic)."""
    orig = _aspect(h, w)
    rh, rw = F32(rp.height), F32(rp.width)
    if orig < rw / rh:
        return rw / orig, rw
    return rh, rh * orig


def extrapolates(rp):
    """True when ExtrapolateBBox changes boxes: FIT_SMALL_SIZE with height_scale and width_scale."""
    return rp.resize_mode == RP.FIT_SMALL_SIZE and rp.height_scale > 0 and rp.width_scale > 0


def extrapolate(rp, h, w, crop, corners, what):
    """ExtrapolateBBox: FIT_SMALL_SIZE boxes (K, 4), normalized to the crop `crop` (4,) of the resized h x w
    image, in units of width_scale x height_scale pixels."""
    rh, rw = _fit_small_dims(rp, h, w)
    ch, cw = rh * (F32(crop[3]) - F32(crop[1])), rw * (F32(crop[2]) - F32(crop[0]))
    if cw < rp.width_scale or ch < rp.height_scale:
        raise DataError("%s: resize_param height_scale x width_scale %dx%d is larger than the %gx%g crop"
                        % (what, rp.height_scale, rp.width_scale, ch, cw))
    c = corners.astype(F32)
    return np.stack([c[:, 0] * cw / F32(rp.width_scale), c[:, 1] * ch / F32(rp.height_scale),
                     c[:, 2] * cw / F32(rp.width_scale), c[:, 3] * ch / F32(rp.height_scale)],
                    axis=1).astype(F32)


def output_boxes(rp, h, w, corners):
    """OutputBBox: (K, 4) normalized network boxes -> pixel boxes of the original h x w image (rp: a
    resize_param, or None for a plain clip and scale). A FIT_LARGE_SIZE_AND_PAD box wholly in the padding
    keeps its coordinates, as NVCaffe's unchecked ProjectBBox leaves it."""
    c = np.asarray(corners, F32).reshape(-1, 4)
    size = np.array([w, h, w, h], F32)
    if rp is not None and rp.resize_mode == RP.FIT_LARGE_SIZE_AND_PAD:
        aspect, rh, rw = _aspect(h, w), F32(rp.height), F32(rp.width)
        if aspect > rw / rh:
            pad = (rh - rw / aspect) / F32(2)
            src = np.array([0, pad / rh, 1, F32(1) - pad / rh], F32)
        else:
            pad = (rw - rh * aspect) / F32(2)
            src = np.array([pad / rw, 0, F32(1) - pad / rw, 1], F32)
        apart = (c[:, 0] >= src[2]) | (c[:, 2] <= src[0]) | (c[:, 1] >= src[3]) | (c[:, 3] <= src[1])
        span = np.array([src[2] - src[0], src[3] - src[1]] * 2, F32)
        c = np.where(apart[:, None], c, (c - np.tile(src[:2], 2)) / span).astype(F32)   # ProjectBBox
    elif rp is not None and extrapolates(rp):
        scaled = c * np.array([rp.width_scale, rp.height_scale] * 2, F32)
        return np.clip(scaled, 0, size).astype(F32)
    return (np.clip(c, 0, 1) * size).astype(F32)
