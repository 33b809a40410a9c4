"""pycaffe's caffe.io helpers: Transformer, resize_image, oversample, Datum <-> array, blobproto."""
import numpy as np
import pytest

import distcaffe as caffe
from distcaffe.errors import CaffeError


def test_transformer_preprocess_matches_hand_computation():
    t = caffe.io.Transformer({"data": (1, 3, 4, 5)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", np.array([10.0, 20.0, 30.0]))
    t.set_input_scale("data", 0.5)
    img = np.random.default_rng(0).random((4, 5, 3)).astype(np.float32)
    out = t.preprocess("data", img)
    expected = (img.transpose(2, 0, 1)[[2, 1, 0]] * 255 - np.array([10, 20, 30])[:, None, None]) * 0.5
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(t.deprocess("data", out), img, rtol=1e-5, atol=1e-6)
    with pytest.raises(CaffeError, match="mean channels"):
        t.set_mean("data", np.zeros(4))


def test_resize_and_oversample_shapes():
    img = np.random.default_rng(1).random((8, 10, 3)).astype(np.float32)
    r = caffe.io.resize_image(img, (16, 20))
    assert r.shape == (16, 20, 3) and r.min() >= img.min() - 1e-6 and r.max() <= img.max() + 1e-6
    crops = caffe.io.oversample([img], (4, 4))
    assert crops.shape == (10, 4, 4, 3)
    np.testing.assert_array_equal(crops[0], img[:4, :4])
    np.testing.assert_array_equal(crops[5], img[:4, :4][:, ::-1])


def test_datum_and_blobproto_roundtrip():
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    datum = caffe.io.array_to_datum(arr, label=7)
    np.testing.assert_array_equal(caffe.io.datum_to_array(datum), arr)
    assert datum.label == 7
    x = np.random.default_rng(2).standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(caffe.io.array_to_blobproto(x)), x)
