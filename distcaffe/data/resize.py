"""OpenCV's cv::resize in numpy (NEAREST, LINEAR, CUBIC, AREA, LANCZOS4) and its RGB->gray, as Caffe converts data.

Caffe resizes with OpenCV; Pillow's filters give different pixels. LINEAR on uint8 (and AREA when enlarging,
which OpenCV runs as LINEAR with its own taps) reproduces OpenCV's fixed-point arithmetic (11-bit coefficients,
SIMD vertical pass); NEAREST picks OpenCV's pixels; CUBIC on float32/float64 images is OpenCV's arithmetic (its
non-IPP build) bit for bit; CUBIC on uint8 and shrinking AREA use OpenCV's coefficients in float and round, so
they may differ from OpenCV by one grey level. Every path is separable: a horizontal pass over
the rows, then a vertical one, each a few row gathers (O(taps * pixels)).
RGB->gray is libpng's (what OpenCV's PNG reader does for IMREAD_GRAYSCALE). Images are (C, H, W) arrays.
"""
import numpy as np

NEAREST, LINEAR, CUBIC, AREA = 0, 1, 2, 3     # TransformationParameter.InterpolationAlgo values
LANCZOS4 = 4                                  # OpenCV's INTER_LANCZOS4 (SSD's ResizeParameter.interp_mode)
_COEF_BITS = 11
_COEF_SCALE = 1 << _COEF_BITS


def _scale(dst, src):
    """OpenCV's scale_x = 1 / inv_scale_x (not src / dst: the two differ in the last bit, and floors with them)."""
    return 1.0 / (float(dst) / src)


def _linear_taps(dst, src, area_mode=False, clamp=True):
    """Source indices (dst, 2) and float32 weights (dst, 2) of OpenCV's INTER_LINEAR along one axis; with
    `area_mode`, INTER_AREA's taps when enlarging: sx = floor(dx * scale), fraction (dx+1) - (sx+1) / scale
    (0 when not positive). OpenCV moves taps that fall outside the image onto the border pixel with weight
    (1, 0) along x (`clamp`), but along y only clips the row indices and keeps both weights."""
    scale = _scale(dst, src)
    d = np.arange(dst, dtype=np.float64)
    if area_mode:
        s = np.floor(d * scale).astype(np.int64)
        f = ((d + 1) - (s + 1) * (float(dst) / src)).astype(np.float32)
        f = np.where(f <= 0, np.float32(0), f - np.floor(f)).astype(np.float32)
    else:
        f = ((d + 0.5) * scale - 0.5).astype(np.float32)
        s = np.floor(f).astype(np.int64)
        f = (f - s).astype(np.float32)
    if clamp:
        low = s < 0
        f[low], s[low] = 0, 0
        high = s >= src - 1
        f[high], s[high] = 0, src - 1
    idx = np.clip(np.stack([s, s + 1], axis=1), 0, src - 1)
    w = np.stack([np.float32(1) - f, f], axis=1)
    return idx, w


def _fixed(w):
    """float32 weights -> OpenCV's saturate_cast<short>(w * 2048) (round half to even)."""
    return np.rint(w.astype(np.float32) * np.float32(_COEF_SCALE)).astype(np.int64)


def _resize_linear_u8(img, h, w, area_mode=False):
    yi, yw = _linear_taps(h, img.shape[1], area_mode, clamp=False)
    xi, xw = _linear_taps(w, img.shape[2], area_mode)
    ax, by = _fixed(xw), _fixed(yw)
    src = img.astype(np.int64)
    rows = src[:, :, xi[:, 0]] * ax[:, 0] + src[:, :, xi[:, 1]] * ax[:, 1]          # (C, H, w) horizontal pass
    s0 = rows[:, yi[:, 0], :] >> 4
    s1 = rows[:, yi[:, 1], :] >> 4
    b0 = by[:, 0][None, :, None]
    b1 = by[:, 1][None, :, None]
    out = (((s0 * b0) >> 16) + ((s1 * b1) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def _nearest(dst, src):
    """OpenCV's INTER_NEAREST source index of each destination pixel along one axis: floor(dx * scale_x)."""
    return np.minimum(np.floor(np.arange(dst) * _scale(dst, src)).astype(np.int64), src - 1)


def _cubic_weights(f):
    a = -0.75
    w0 = ((a * (f + 1) - 5 * a) * (f + 1) + 8 * a) * (f + 1) - 4 * a
    w1 = ((a + 2) * f - (a + 3)) * f * f + 1
    w2 = ((a + 2) * (1 - f) - (a + 3)) * (1 - f) * (1 - f) + 1
    return np.stack([w0, w1, w2, 1 - w0 - w1 - w2], axis=1)


def _cubic_taps_f32(dst, src):
    """OpenCV's INTER_CUBIC taps along one axis: source indices (dst, 4) clamped into the image (its border
    replication) and interpolateCubic's float32 weights of the float32 fraction."""
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * _scale(dst, src) - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    return np.clip(s[:, None] + np.arange(-1, 3), 0, src - 1), _cubic_weights(f - s.astype(np.float32))


def _resize_cubic_float(img, height, width):
    """cv::resize INTER_CUBIC of a float32/float64 (C, H, W) image in OpenCV's own arithmetic (without IPP):
    float32 weights, the horizontal pass summed left to right in the image's dtype, the vertical one as
    VResizeCubicVec_32f (s0 b0 + (s1 b1 + (s2 b2 + s3 b3)) over each run of 4 interleaved values of a row,
    left to right for the rest; float64 all left to right)."""
    c = img.shape[0]
    xi, xa = _cubic_taps_f32(width, img.shape[2])
    yi, ya = _cubic_taps_f32(height, img.shape[1])
    xa, ya = xa.astype(img.dtype), ya.astype(img.dtype)
    rows = img[:, :, xi[:, 0]] * xa[:, 0]
    for k in range(1, 4):
        rows = rows + img[:, :, xi[:, k]] * xa[:, k]
    s0, s1, s2, s3 = (rows[:, yi[:, k], :] * ya[:, k][None, :, None] for k in range(4))
    left = s0 + s1 + s2 + s3
    if img.dtype != np.float32:
        return left
    n = width * c
    pos = np.arange(width)[None, None, :] * c + np.arange(c)[:, None, None]   # place in OpenCV's HWC row
    return np.where(pos < n - n % 4, s0 + (s1 + (s2 + s3)), left)


def _lanczos4_weights(f):
    """OpenCV's interpolateLanczos4: 8 taps at offsets -3..4, sin(pi x / 4) sin(pi x) / (pi x)^2 * 4, normalised."""
    x = f[:, None] - np.arange(-3, 5)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(np.abs(x) < 1e-12, 1.0, np.sin(np.pi * x / 4) * np.sin(np.pi * x) / (np.pi * np.pi * x * x / 4))
    return w / w.sum(axis=1, keepdims=True)


def _matrix(dst, src, algo, area_mode=False):
    """(dst, src) float64 interpolation matrix of one axis for the non-fixed-point algorithms (`area_mode`:
    INTER_AREA when the image grows along either axis, which OpenCV does as LINEAR with other taps)."""
    m = np.zeros((dst, src))
    rows = np.arange(dst)
    scale = _scale(dst, src)
    if algo == NEAREST:
        m[rows, _nearest(dst, src)] = 1
    elif algo == AREA and not area_mode:
        for d in range(dst):
            lo, hi = d * scale, (d + 1) * scale
            for s in range(int(np.floor(lo)), min(int(np.ceil(hi)), src)):
                m[d, s] = (min(hi, s + 1) - max(lo, s)) / scale
    elif algo in (CUBIC, LANCZOS4):
        f = (rows + 0.5) * scale - 0.5
        s = np.floor(f).astype(int)
        wts, first = (_cubic_weights(f - s), -1) if algo == CUBIC else (_lanczos4_weights(f - s), -3)
        for k in range(wts.shape[1]):
            np.add.at(m, (rows, np.clip(s + first + k, 0, src - 1)), wts[:, k])
    else:
        idx, w = _linear_taps(dst, src, area_mode)
        np.add.at(m, (rows, idx[:, 0]), w[:, 0])
        np.add.at(m, (rows, idx[:, 1]), w[:, 1])
    return m


def _taps(m):
    """Dense (dst, src) interpolation matrix -> source indices and weights (dst, K) of its nonzeros, in column
    order (K = the most taps of any row; shorter rows padded with weight 0)."""
    nz = m != 0
    k = max(1, int(nz.sum(axis=1).max()))
    idx = np.argsort(~nz, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(m, idx, axis=1)


def _rows(a, m):
    """Interpolate the rows of 2-D float64 `a` (src, n) with matrix `m` (dst, src): whole-row gathers per tap."""
    idx, w = _taps(m)
    out = a[idx[:, 0]] * w[:, :1]
    for k in range(1, idx.shape[1]):
        out += a[idx[:, k]] * w[:, k:k + 1]
    return out


def resize(img, height, width, algo=LINEAR):
    """cv::resize of a (C, H, W) uint8 or float image to (C, height, width) with OpenCV's interpolation."""
    c, h, w = img.shape
    if (h, w) == (height, width):
        return img.copy()
    if algo == NEAREST:
        return img[:, _nearest(height, h)][:, :, _nearest(width, w)]
    area_mode = algo == AREA and (height > h or width > w)     # OpenCV averages areas only when shrinking both
    if (algo == LINEAR or area_mode) and img.dtype == np.uint8:
        return _resize_linear_u8(img, height, width, area_mode)
    if algo == CUBIC and img.dtype in (np.float32, np.float64):
        return _resize_cubic_float(img, height, width)
    # separable, as OpenCV: the horizontal pass over every row, then the vertical pass, each over its few taps
    cols = _rows(img.transpose(2, 0, 1).reshape(w, c * h).astype(np.float64), _matrix(width, w, algo, area_mode))
    rows = np.ascontiguousarray(cols.reshape(width, c, h).transpose(2, 1, 0)).reshape(h, c * width)
    out = _rows(rows, _matrix(height, h, algo, area_mode))
    out = np.ascontiguousarray(out.reshape(height, c, width).transpose(1, 0, 2))
    if img.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(img.dtype)


def bgr_to_gray(img):
    """libpng's rgb_to_gray (0.299/0.587 as 15-bit fixed point, truncated; grey pixels kept) on a (3, H, W)
    uint8 BGR image -> (1, H, W): what OpenCV's imread(IMREAD_GRAYSCALE) gives for colour PNGs."""
    b, g, r = (img[i].astype(np.int32) for i in range(3))
    gray = (r * 9797 + g * 19234 + b * 3737) >> 15
    return np.where((r == g) & (g == b), r, gray).astype(np.uint8)[None]
