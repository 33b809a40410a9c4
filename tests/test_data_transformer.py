"""DataTransformer: crop/mirror/mean/scale against hand-computed values; NVCaffe resize bounds (hypothesis)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from distcaffe.data.resize import AREA, CUBIC, LANCZOS4, LINEAR, NEAREST, resize
from distcaffe.data.transformer import DataTransformer
from distcaffe.errors import DataError
from distcaffe.io import array_to_blobproto, write_blobproto
from distcaffe.proto import caffe_pb2

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


def _tp(**kw):
    tp = caffe_pb2.TransformationParameter()
    for k, v in kw.items():
        if isinstance(v, list):
            getattr(tp, k).extend(v)
        else:
            setattr(tp, k, v)
    return tp


def _img(c=2, h=4, w=5):
    return np.arange(c * h * w, dtype=np.uint8).reshape(c, h, w)


def _run(tp, phase, items, seed=0):
    t = DataTransformer(tp, phase)
    plan = t.plan(items, np.random.default_rng(seed))
    return t.apply(plan), plan


def test_centre_crop_mean_values_scale_by_hand():
    img = _img()
    out, _ = _run(_tp(crop_size=2, mean_value=[1.0, 2.0], scale=0.5), TEST, [img])
    # centre offsets: h (4-2)//2 = 1, w (5-2)//2 = 1
    expect = np.stack([(img[0, 1:3, 1:3] - 1.0) * 0.5, (img[1, 1:3, 1:3] - 2.0) * 0.5])
    np.testing.assert_array_equal(out[0], expect.astype(np.float32))


def test_train_crop_and_mirror_follow_the_plan():
    imgs = [_img() + i for i in range(6)]
    out, plan = _run(_tp(crop_size=3, mirror=True), TRAIN, imgs, seed=3)
    assert plan.mirror.any() and not plan.mirror.all()
    for i, img in enumerate(imgs):
        dh, dw = plan.offsets[i]
        crop = img[:, dh:dh + 3, dw:dw + 3].astype(np.float32)
        np.testing.assert_array_equal(out[i], crop[:, :, ::-1] if plan.mirror[i] else crop)


def test_mean_file_is_taken_at_the_crop_source_pixels(tmp_path):
    img = _img()
    mean = np.random.default_rng(0).uniform(0, 10, (1,) + img.shape).astype(np.float32)
    write_blobproto(array_to_blobproto(mean), str(tmp_path / "m.binaryproto"))
    out, plan = _run(_tp(crop_size=2, mirror=True, mean_file=str(tmp_path / "m.binaryproto"), scale=2.0),
                     TRAIN, [img] * 8, seed=1)
    for i in range(8):
        dh, dw = plan.offsets[i]
        x = (img[:, dh:dh + 2, dw:dw + 2] - mean[0, :, dh:dh + 2, dw:dw + 2]) * np.float32(2.0)
        np.testing.assert_array_equal(out[i], x[:, :, ::-1] if plan.mirror[i] else x)


def test_float_data_and_no_crop_pass_through():
    x = np.random.default_rng(0).normal(size=(3, 4, 4)).astype(np.float32)
    out, _ = _run(_tp(scale=3.0), TEST, [x])
    np.testing.assert_allclose(out[0], x * 3.0, rtol=1e-6)


def test_crop_larger_than_image_is_a_clear_error():
    with pytest.raises(DataError, match="crop_size 9 is larger than the image rec7"):
        DataTransformer(_tp(crop_size=9), TEST).plan([_img()], np.random.default_rng(0), ["rec7"])


def test_crop_h_crop_w_rectangular_centre_and_random_crops():
    img = _img(c=1, h=6, w=7)
    out, _ = _run(_tp(crop_size=4, crop_h=2, crop_w=5), TEST, [img])        # NVCaffe: crop_h/w replace crop_size
    np.testing.assert_array_equal(out[0], img[:, 2:4, 1:6].astype(np.float32))
    out, plan = _run(_tp(crop_h=3, crop_w=2, mirror=True), TRAIN, [img] * 6, seed=2)
    assert out.shape == (6, 1, 3, 2) and DataTransformer(_tp(crop_h=3, crop_w=2), TEST).output_shape(img.shape) \
        == (1, 3, 2)
    for i in range(6):
        dh, dw = plan.offsets[i]
        crop = img[:, dh:dh + 3, dw:dw + 2].astype(np.float32)
        np.testing.assert_array_equal(out[i], crop[:, :, ::-1] if plan.mirror[i] else crop)
    with pytest.raises(DataError, match="only one of crop_h/crop_w"):
        DataTransformer(_tp(crop_h=3), TEST)
    with pytest.raises(DataError, match="crop_h x crop_w 7x2 is larger than the image rec1"):
        DataTransformer(_tp(crop_h=7, crop_w=2), TEST).plan([img], np.random.default_rng(0), ["rec1"])


def test_mean_value_count_must_match_channels():
    t = DataTransformer(_tp(mean_value=[1, 2, 3]), TEST)
    with pytest.raises(DataError, match="mean_value"):
        t.apply(t.plan([_img()], np.random.default_rng(0)))


def test_same_seed_same_batch():
    tp = _tp(crop_size=3, mirror=True)
    a, _ = _run(tp, TRAIN, [_img()] * 4, seed=5)
    b, _ = _run(tp, TRAIN, [_img()] * 4, seed=5)
    np.testing.assert_array_equal(a, b)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(8, 60), w=st.integers(8, 60), lo=st.integers(1, 40), extra=st.integers(0, 30),
       vs=st.floats(0.5, 1.5), hs=st.floats(0.5, 1.5), crop=st.integers(0, 8), up=st.booleans(),
       seed=st.integers(0, 99))
def test_random_resize_keeps_documented_bounds(h, w, lo, extra, vs, hs, crop, up, seed):
    tp = _tp(img_rand_resize_lower=lo, img_rand_resize_upper=lo + extra, vertical_stretch_lower=min(vs, 1.0),
             vertical_stretch_upper=max(vs, 1.0), horizontal_stretch_lower=min(hs, 1.0),
             horizontal_stretch_upper=max(hs, 1.0), crop_size=crop, allow_upscale=up)
    t = DataTransformer(tp, TRAIN)
    nh, nw = t.random_resize_shape(h, w, np.random.default_rng(seed))
    assert nh >= crop and nw >= crop                       # never smaller than the crop
    if not up:
        assert nh <= max(h, crop) and nw <= max(w, crop)   # no upscaling unless allowed
    # short side lands in [lower, upper] before stretching: the stretched size stays within the stretch bounds
    short = min(h, w)
    s_lo, s_hi = lo / short, (lo + extra) / short
    if up and not crop:
        assert np.floor(h * s_lo * min(vs, 1.0) + 0.5) - 1 <= nh <= np.floor(h * s_hi * max(vs, 1.0) + 0.5) + 1
        assert np.floor(w * s_lo * min(hs, 1.0) + 0.5) - 1 <= nw <= np.floor(w * s_hi * max(hs, 1.0) + 0.5) + 1


@settings(max_examples=30, deadline=None)
@given(h=st.integers(4, 30), w=st.integers(4, 30), ratio=st.floats(1.0, 2.0), seed=st.integers(0, 99))
def test_aspect_ratio_stretches_the_long_side(h, w, ratio, seed):
    tp = _tp(rand_resize_ratio_lower=1.0, rand_resize_ratio_upper=1.0 + ratio, allow_upscale=True)
    nh, nw = DataTransformer(tp, TRAIN).random_resize_shape(h, w, np.random.default_rng(seed))
    assert min(nh, nw) == min(h, w) or abs(min(nh, nw) - min(h, w)) <= 1
    assert max(nh, nw) <= np.floor(min(h, w) * (1.0 + ratio) + 0.5) + 1


@pytest.mark.parametrize("algo", [NEAREST, LINEAR, CUBIC, AREA])
def test_resize_constant_image_stays_constant(algo):
    img = np.full((3, 17, 23), 77, np.uint8)
    for shape in [(9, 11), (30, 40)]:
        out = resize(img, *shape, algo)
        assert out.shape == (3,) + shape and (out == 77).all()


def test_resize_in_transform_then_crop():
    tp = _tp(img_rand_resize_lower=12, img_rand_resize_upper=16, crop_size=10, allow_upscale=True)
    t = DataTransformer(tp, TRAIN)
    items = [np.random.default_rng(i).integers(0, 255, (3, 20, 30), dtype=np.uint8) for i in range(4)]
    out = t.apply(t.plan(items, np.random.default_rng(0)))
    assert out.shape == (4, 3, 10, 10)


@pytest.mark.gpu
def test_gpu_transform_matches_cpu():
    from distcaffe import backend
    if not backend.gpu_available():
        pytest.skip("no CUDA device")
    import cupy
    t = DataTransformer(_tp(crop_size=3, mirror=True, mean_value=[1.0, 2.0], scale=0.5), TRAIN)
    plan = t.plan([_img() + i for i in range(6)], np.random.default_rng(0))
    np.testing.assert_array_equal(cupy.asnumpy(t.apply(plan, cupy)), t.apply(plan))


@pytest.mark.parametrize("algo", [NEAREST, CUBIC, AREA, LANCZOS4])
def test_tap_resize_equals_the_dense_interpolation_matrices(algo):
    from distcaffe.data.resize import _matrix
    img = np.random.default_rng(algo).integers(0, 256, (3, 37, 50)).astype(np.uint8)
    ref = _matrix(23, 37, algo) @ img.astype(np.float64) @ _matrix(30, 50, algo).T
    np.testing.assert_array_equal(resize(img, 23, 30, algo), np.clip(np.rint(ref), 0, 255).astype(np.uint8))
    assert (resize(np.full((1, 9, 8), 77, np.uint8), 5, 13, algo) == 77).all()
