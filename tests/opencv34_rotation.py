"""NVCaffe's DetectNet image rotation (rotate_image_cpu) computed by a real OpenCV of NVCaffe's era: the cases
and their SHA-256 digests that tests/test_detectnet.py holds our numpy rotation to, bit for bit.

OpenCV 4.9 changed warpAffine's transparent border and 5.0 its INTER_LINEAR arithmetic, so the project's own
cv2 cannot be the reference; regenerate the digests in an environment of its own:
    python -m venv /tmp/cv34 && /tmp/cv34/bin/pip install "numpy<2" opencv-python-headless==3.4.18.65
    /tmp/cv34/bin/python tests/opencv34_rotation.py
"""
import hashlib
import math

import numpy as np

# (width, height, degrees, dtype): DetectNet-like and odd sizes, small and large angles, both NVCaffe Dtypes
CASES = [(58, 32, 5.0, "float32"), (37, 21, -12.5, "float32"), (64, 40, 30.0, "float64"), (17, 29, 90.0, "float32"),
         (40, 40, 45.0, "float64"), (33, 18, -170.3, "float32"), (80, 24, 0.75, "float32"), (9, 5, 179.9, "float64")]


def case_image(w, h, dtype, k):
    """A deterministic (3, h, w) image in [-1, 1] (a multiplicative hash: the same on every numpy)."""
    i = np.arange(3 * h * w, dtype=np.uint64).reshape(3, h, w)
    v = (i * np.uint64(2654435761) + np.uint64(40503 * (k + 1))) % np.uint64(1 << 32)
    return ((v % np.uint64(2001)).astype(np.float64) / 1000 - 1).astype(dtype)


def digest(arr):
    return hashlib.sha256(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()).hexdigest()


def _bounding_rect(pts):
    x0, y0 = math.floor(pts[:, 0].min()), math.floor(pts[:, 1].min())
    return x0, y0, math.ceil(pts[:, 0].max()) - x0 + 1, math.ceil(pts[:, 1].max()) - y0 + 1


def nvcaffe_rotate(cv2, img, degrees):
    """rotate_image_cpu of detectnet_transform_layer.cpp with OpenCV's own calls, on a (3, H, W) image."""
    _, h, w = img.shape
    dt = img.dtype.type
    angle = float(np.float32(degrees))
    size = _bounding_rect(cv2.boxPoints(((int(0.5 * w), int(0.5 * h)), (w, h), angle)))[2:]
    cx, cy = dt(w * 0.5), dt(h * 0.5)
    bx, by = _bounding_rect(cv2.boxPoints(((cx, cy), (w, h), angle)))[:2]
    src = cv2.boxPoints(((cx, cy), (w, h), 0.0))[:3]
    dst = cv2.boxPoints(((cx - bx, cy - by), (w, h), angle))[:3]
    m = cv2.getAffineTransform(src, dst).astype(img.dtype)             # NVCaffe's Mat1v holds Dtype
    out = np.zeros((size[1], size[0], 3), img.dtype)
    cv2.warpAffine(np.ascontiguousarray(img.transpose(1, 2, 0)), m.astype(np.float64), size, dst=out,
                   flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
    return out.transpose(2, 0, 1)


if __name__ == "__main__":
    import cv2
    assert cv2.__version__.startswith("3.4"), "run with OpenCV 3.4 (see the module docstring), not %s" % cv2.__version__
    print("DIGESTS = {  # OpenCV %s" % cv2.__version__)
    for k, (w, h, degrees, dtype) in enumerate(CASES):
        print("    %r: %r," % ((w, h, degrees, dtype), digest(nvcaffe_rotate(cv2, case_image(w, h, dtype, k), degrees))))
    print("}")
