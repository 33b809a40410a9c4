"""distcaffe.data.resize: the separable passes give the dense interpolation's results for every interpolation,
and OpenCV's cv2.resize pixels (the library Caffe resizes with)."""
import numpy as np
import pytest

from _dist_helpers import missing
from distcaffe.data import resize as R

ALGOS = [R.NEAREST, R.LINEAR, R.CUBIC, R.AREA]


def dense(img, height, width, algo):
    """The former O(H*W*h*w) path: one einsum over both interpolation matrices, in float64."""
    c, h, w = img.shape
    area_mode = algo == R.AREA and (height > h or width > w)
    return np.einsum("yh,chw,xw->cyx", R._matrix(height, h, algo, area_mode), img.astype(np.float64),
                     R._matrix(width, w, algo, area_mode))


def shapes(seed, n=60):
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(1, 4)),) + tuple(int(v) for v in rng.integers(1, 48, 4)) for _ in range(n)]


@pytest.mark.parametrize("algo", ALGOS)
def test_float_images_match_the_dense_interpolation(algo):
    rng = np.random.default_rng(algo)
    for c, h, w, nh, nw in shapes(algo):
        img = rng.standard_normal((c, h, w))
        out = R.resize(img, nh, nw, algo)
        assert out.dtype == np.float64 and out.shape == (c, nh, nw)
        want = img if (h, w) == (nh, nw) else dense(img, nh, nw, algo)
        # CUBIC on floats takes OpenCV's float32 weights (held to cv2 bit for bit below), the dense matrix float64's
        tol = 1e-5 if algo == R.CUBIC else 1e-12
        np.testing.assert_allclose(out, want, rtol=tol, atol=tol)
        f32 = R.resize(img.astype(np.float32), nh, nw, algo)
        assert f32.dtype == np.float32
        np.testing.assert_allclose(f32, want, rtol=max(tol, 1e-6), atol=max(tol, 1e-6))   # float32 rounding


@pytest.mark.parametrize("algo", [R.NEAREST, R.CUBIC, R.AREA])
def test_uint8_images_match_the_dense_interpolation(algo):
    """Rounded results are identical, except where the exact value is a .5 tie that either summation order may
    put on either side."""
    rng = np.random.default_rng(10 + algo)
    for c, h, w, nh, nw in shapes(10 + algo):
        if algo == R.AREA:
            nh, nw = min(h, nh), min(w, nw)          # enlarging AREA is OpenCV's fixed-point LINEAR (below)
        img = rng.integers(0, 256, (c, h, w), dtype=np.uint8)
        out = R.resize(img, nh, nw, algo)
        if (h, w) == (nh, nw):
            assert np.array_equal(out, img)
            continue
        exact = dense(img, nh, nw, algo)
        want = np.clip(np.rint(exact), 0, 255).astype(np.uint8)
        differ = out != want
        tie = np.abs(np.abs(exact - np.floor(exact)) - 0.5) < 1e-9
        assert not (differ & ~tie).any(), (c, h, w, nh, nw)
        assert (np.abs(out.astype(int) - want) <= 1).all()


def test_large_cubic_resize_matches_two_matmuls():
    """375x500 -> 256x256 CUBIC (the benchmark case) against the two full matrix products."""
    img = np.random.default_rng(0).integers(0, 256, (3, 375, 500), dtype=np.uint8)
    out = R.resize(img, 256, 256, R.CUBIC)
    rows = np.einsum("yh,chw->cyw", R._matrix(256, 375, R.CUBIC), img.astype(np.float64))
    want = np.clip(np.rint(rows @ R._matrix(256, 500, R.CUBIC).T), 0, 255).astype(np.uint8)
    assert (np.abs(out.astype(int) - want) <= 1).all() and (out == want).mean() > 0.999


def _cv2():
    try:
        import cv2
    except ImportError:
        missing("opencv-python-headless is not installed (pip install 'distcaffe[dev]')")
    return cv2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_cubic_is_opencv_s_bit_for_bit(dtype):
    """CUBIC of float images (DetectNet's scaling) is OpenCV's own arithmetic; IPP, which OpenCV's pip wheels
    call for it and distribution builds (NVCaffe's) leave out, interpolates otherwise, so it is switched off."""
    cv2 = _cv2()
    rng = np.random.default_rng(7)
    ipp = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    try:
        for c, h, w, nh, nw in shapes(30, n=40) + [(3, 384, 1248, 300, 1000), (3, 40, 72, 32, 58)]:
            img = rng.uniform(-1, 1, (c, h, w)).astype(dtype)
            ref = cv2.resize(np.ascontiguousarray(img.transpose(1, 2, 0)), (nw, nh), interpolation=cv2.INTER_CUBIC)
            got = R.resize(img, nh, nw, R.CUBIC)
            assert got.dtype == dtype
            np.testing.assert_array_equal(got, ref.reshape(nh, nw, c).transpose(2, 0, 1), err_msg=str((c, h, w, nh, nw)))
    finally:
        cv2.ipp.setUseIPP(ipp)


@pytest.mark.parametrize("algo,name,worst,mismatch", [
    (R.NEAREST, "NEAREST", 0, 0), (R.LINEAR, "LINEAR", 0, 0), (R.AREA, "AREA", 0, 0),     # AREA enlarging
    (R.CUBIC, "CUBIC", 1, 0.05), (R.AREA, "AREA", 1, 0.01)])                               # AREA shrinking
def test_uint8_pixels_match_opencv(algo, name, worst, mismatch):
    """Bit for bit where OpenCV's arithmetic is reproduced (fixed point, pixel choice); within one grey level on
    a few pixels for CUBIC and shrinking AREA (float coefficients here, OpenCV's SIMD rounding there)."""
    cv2 = _cv2()
    rng = np.random.default_rng(algo)
    shrink = worst and algo == R.AREA
    bad = total = 0
    for c, h, w, nh, nw in shapes(20 + algo, n=80):
        if algo == R.AREA:
            nh, nw = (min(h, nh), min(w, nw)) if shrink else (max(h + 1, nh), nw)
        img = rng.integers(0, 256, (c, h, w), dtype=np.uint8)
        ref = cv2.resize(np.ascontiguousarray(img.transpose(1, 2, 0)), (nw, nh), interpolation=getattr(
            cv2, "INTER_" + name)).reshape(nh, nw, c).transpose(2, 0, 1)
        d = np.abs(R.resize(img, nh, nw, algo).astype(int) - ref)
        assert d.max() <= worst, (c, h, w, nh, nw)
        bad, total = bad + (d > 0).sum(), total + d.size
    assert bad <= mismatch * total
