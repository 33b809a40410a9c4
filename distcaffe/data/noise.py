"""SSD's `transform_param.noise_param` (NVCaffe util/im_transforms.cpp ApplyNoise) through OpenCV, the `opencv`
extra: the same cv:: calls on the same BGR uint8 image, in NVCaffe's order — decolorize, gauss_blur (7x7,
sigma 1.5), hist_eq (of YCrCb's Y), clahe (clip limit 4, 8x8 tiles, of Y), jpeg (re-encode at that quality),
erode (3x3 ellipse), posterize (64 levels -> 4), inverse, saltpepper (floor(fraction * H * W) random pixels set
to `value`), convert_to_hsv, convert_to_lab (float Lab of the image / 255).

NVCaffe applies it to every image (TRAIN and TEST) after resize_param and before the crop; its `prob` field is
never read there, nor here. Salt-and-pepper positions come from our generator with NVCaffe's distribution
(column, then row, uniform, per pixel). Where NVCaffe would crash or read garbage (a colour operation on a
grey image, saltpepper without values, Lab's floats read back as bytes) this gives a clear error or, for Lab,
the float Lab values themselves; JPEG keeps a grey image grey.
"""
import numpy as np

from ..errors import DataError

_COLOUR_ONLY = ("decolorize", "convert_to_hsv", "convert_to_lab")


def _cv2(what):
    try:
        import cv2
    except ImportError:
        raise DataError("%s: transform_param.noise_param needs OpenCV: pip install 'distcaffe[opencv]'" % what) \
            from None
    return cv2


class Noise:
    """One layer's NoiseParameter, checked once; __call__ applies it to a (C, H, W) uint8 image."""

    def __init__(self, param, what):
        self.p, self.what = param, what
        self.cv2 = _cv2(what)
        sp = param.saltpepper_param
        self.values = [float(v) for v in sp.value]
        if any(not 0 <= v < 256 for v in self.values):
            raise DataError("%s: noise_param.saltpepper_param.value must lie in [0, 256) (uint8 pixels), got %s"
                            % (what, self.values))
        if param.saltpepper and not self.values:
            raise DataError("%s: noise_param.saltpepper needs saltpepper_param.value" % what)

    def _check(self, c):
        if c not in (1, 3):
            raise DataError("%s: noise_param needs 1- or 3-channel (BGR) images, got %d channels" % (self.what, c))
        if len(self.values) not in (0, 1, c):
            raise DataError("%s: noise_param.saltpepper_param: specify either 1 value or as many as channels (%d), "
                            "got %d" % (self.what, c, len(self.values)))
        on = [name for name in _COLOUR_ONLY if getattr(self.p, name)]
        if c == 1 and on:
            raise DataError("%s: noise_param.%s needs 3-channel (BGR) images, got 1 channel" % (self.what, on[0]))

    def _luma(self, img, fn):
        """fn applied to a grey image, or to the Y plane of a colour one (BGR -> YCrCb -> BGR)."""
        cv2 = self.cv2
        if img.ndim == 2:
            return fn(img)
        ycrcb = cv2.cvtColor(img, cv2.COLOR_BGR2YCrCb)
        ycrcb[:, :, 0] = fn(np.ascontiguousarray(ycrcb[:, :, 0]))
        return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR)

    def __call__(self, img, rng):
        """ApplyNoise of a (C, H, W) uint8 BGR image -> (C, H, W) uint8 (float32 after convert_to_lab)."""
        if img.dtype != np.uint8:
            raise DataError("%s: noise_param needs 8-bit images, got %s records" % (self.what, img.dtype))
        c = img.shape[0]
        self._check(c)
        cv2, p = self.cv2, self.p
        out = np.ascontiguousarray(img[0] if c == 1 else img.transpose(1, 2, 0))
        if p.decolorize:
            out = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        if p.gauss_blur:
            out = cv2.GaussianBlur(out, (7, 7), 1.5)
        if p.hist_eq:
            out = self._luma(out, cv2.equalizeHist)
        if p.clahe:
            out = self._luma(out, cv2.createCLAHE(clipLimit=4).apply)
        if p.jpeg > 0:
            buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(p.jpeg)])[1]
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR if c == 3 else cv2.IMREAD_GRAYSCALE)
        if p.erode:
            out = cv2.erode(out, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3), (1, 1)))
        if p.posterize:
            out = out // 64 * 64 + 32                                   # colorReduce(div = 64)'s lookup table
        if p.inverse:
            out = cv2.bitwise_not(out)
        if p.saltpepper:
            h, w = out.shape[:2]
            n = int(np.floor(np.float32(p.saltpepper_param.fraction) * np.float32(w) * np.float32(h)))
            at = rng.integers(0, [w, h], size=(n, 2))                  # (column, row) per pixel, in NVCaffe's order
            values = np.broadcast_to(np.asarray(self.values, np.float64).astype(np.uint8), (c,))   # uchar(value)
            out = out.copy()
            out[at[:, 1], at[:, 0]] = values[0] if c == 1 else values
        if p.convert_to_hsv:
            out = cv2.cvtColor(out, cv2.COLOR_BGR2HSV)
        if p.convert_to_lab:
            out = cv2.cvtColor(out.astype(np.float32) * np.float32(1.0 / 255), cv2.COLOR_BGR2Lab)
        return out[None] if out.ndim == 2 else np.ascontiguousarray(out.transpose(2, 0, 1))
