"""SSD's transform_param.noise_param (NVCaffe ApplyNoise): each operation bit-identical to OpenCV called directly
on the same BGR uint8 image (or to the operation worked out in numpy), NVCaffe's order, its unread `prob`, the
salt-and-pepper draws, the AnnotatedData layer applying it after the resize, and the clear errors."""
import sys

import cv2
import numpy as np
import pytest
from google.protobuf import text_format

from distcaffe.data.noise import Noise
from distcaffe.errors import DataError
from distcaffe.proto import caffe_pb2
from _detection_data import annoset
from test_data_annotated import annotated_net, records

RNG = np.random.default_rng(7)
IMG = RNG.integers(0, 256, (3, 24, 31)).astype(np.uint8)
IMG[:, 5:15, 8:20] = np.array([30, 160, 220], np.uint8)[:, None, None]      # a flat patch: structure to blur
HWC = np.ascontiguousarray(IMG.transpose(1, 2, 0))


def noise(text, img=IMG, seed=0):
    p = text_format.Parse(text, caffe_pb2.NoiseParameter())
    return Noise(p, "layer 'd' (AnnotatedData)")(img, np.random.default_rng(seed))


def chw(hwc):
    return hwc.transpose(2, 0, 1)


def ycrcb_y(hwc, fn):
    y = cv2.cvtColor(hwc, cv2.COLOR_BGR2YCrCb)
    planes = list(cv2.split(y))
    planes[0] = fn(planes[0])
    return cv2.cvtColor(cv2.merge(planes), cv2.COLOR_YCrCb2BGR)


CASES = {
    "decolorize: true": lambda x: cv2.cvtColor(cv2.cvtColor(x, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR),
    "gauss_blur: true": lambda x: cv2.GaussianBlur(x, (7, 7), 1.5),
    "hist_eq: true": lambda x: ycrcb_y(x, cv2.equalizeHist),
    "clahe: true": lambda x: ycrcb_y(x, cv2.createCLAHE(clipLimit=4.0, tileGridSize=(8, 8)).apply),
    "jpeg: 30.7": lambda x: cv2.imdecode(cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, 30])[1],
                                         cv2.IMREAD_COLOR),
    "erode: true": lambda x: cv2.erode(x, np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)),
    "posterize: true": lambda x: cv2.LUT(x, np.array([i // 64 * 64 + 32 for i in range(256)], np.uint8)),
    "inverse: true": lambda x: 255 - x,
    "convert_to_hsv: true": lambda x: cv2.cvtColor(x, cv2.COLOR_BGR2HSV),
    "convert_to_lab: true": lambda x: cv2.cvtColor(x.astype(np.float32) / np.float32(255), cv2.COLOR_BGR2Lab),
}


@pytest.mark.parametrize("field", sorted(CASES))
def test_each_operation_is_opencvs(field):
    out = noise(field)
    expect = chw(CASES[field](HWC))
    assert out.shape == IMG.shape and out.dtype == expect.dtype
    np.testing.assert_array_equal(out, expect)
    assert not np.array_equal(out, IMG)                        # every operation changes this image


def test_erode_is_the_min_over_the_3x3_cross():
    pad = np.pad(IMG.astype(int), ((0, 0), (1, 1), (1, 1)), constant_values=255)
    h, w = IMG.shape[1:]
    cross = [pad[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))]
    np.testing.assert_array_equal(noise("erode: true"), np.min(cross, axis=0))


def test_grey_images_stay_grey():
    grey = IMG[:1].copy()
    np.testing.assert_array_equal(noise("hist_eq: true", grey), cv2.equalizeHist(grey[0])[None])
    np.testing.assert_array_equal(noise("clahe: true", grey), cv2.createCLAHE(4).apply(grey[0])[None])
    jpeg = cv2.imdecode(cv2.imencode(".jpg", grey[0], [cv2.IMWRITE_JPEG_QUALITY, 50])[1], cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(noise("jpeg: 50", grey), jpeg[None])
    np.testing.assert_array_equal(noise("inverse: true posterize: true", grey), 255 - (grey // 64 * 64 + 32))


def test_salt_and_pepper_count_positions_and_values():
    h, w = IMG.shape[1:]
    out = noise("saltpepper: true saltpepper_param { fraction: 0.1 value: 3 value: 250.9 value: 7 }", seed=4)
    n = int(np.floor(np.float32(0.1) * np.float32(w) * np.float32(h)))         # floor(fraction * cols * rows)
    at = np.random.default_rng(4).integers(0, [w, h], size=(n, 2))             # (column, row) draws in order
    expect = IMG.copy()
    expect[:, at[:, 1], at[:, 0]] = np.array([3, 250, 7], np.uint8)[:, None]   # uchar(value) truncates
    np.testing.assert_array_equal(out, expect)
    hit = np.zeros((h, w), bool)
    hit[at[:, 1], at[:, 0]] = True
    assert 0.8 * n <= hit.sum() <= n                                           # some pixels drawn twice
    one = noise("saltpepper: true saltpepper_param { fraction: 0.1 value: 255 }", seed=4)
    assert (one[:, at[:, 1], at[:, 0]] == 255).all()


def test_order_is_nvcaffes():
    fields = ("decolorize: true gauss_blur: true hist_eq: true clahe: true jpeg: 60 erode: true posterize: true "
              "inverse: true saltpepper: true saltpepper_param { fraction: 0.05 value: 0 } convert_to_hsv: true "
              "convert_to_lab: true")
    out = noise(fields, seed=2)
    x = HWC
    for step in ("decolorize: true", "gauss_blur: true", "hist_eq: true", "clahe: true"):
        x = CASES[step](x)
    x = cv2.imdecode(cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, 60])[1], cv2.IMREAD_COLOR)
    x = 255 - CASES["posterize: true"](CASES["erode: true"](x))
    x = chw(x).copy()
    h, w = x.shape[1:]
    at = np.random.default_rng(2).integers(0, [w, h], size=(int(np.floor(np.float32(0.05) * w * h)), 2))
    x[:, at[:, 1], at[:, 0]] = 0
    x = chw(CASES["convert_to_lab: true"](CASES["convert_to_hsv: true"](np.ascontiguousarray(x.transpose(1, 2, 0)))))
    np.testing.assert_array_equal(out, x)
    # posterize runs before inverse: the other order gives other pixels
    assert not np.array_equal(noise("posterize: true inverse: true"),
                              chw(CASES["posterize: true"](255 - HWC)))


def test_prob_is_not_read_as_in_nvcaffe():
    expect = noise("inverse: true")
    for prob in (0, 0.5, 1):
        for seed in range(3):
            np.testing.assert_array_equal(noise("prob: %g inverse: true" % prob, seed=seed), expect)
    np.testing.assert_array_equal(noise("prob: 1"), IMG)       # no operation set: the image as it is


def test_noise_errors():
    with pytest.raises(DataError, match="saltpepper needs saltpepper_param.value"):
        noise("saltpepper: true saltpepper_param { fraction: 0.1 }")
    with pytest.raises(DataError, match="either 1 value or as many as channels"):
        noise("saltpepper: true saltpepper_param { fraction: 0.1 value: 1 value: 2 }")
    with pytest.raises(DataError, match=r"value must lie in \[0, 256\)"):
        noise("saltpepper: true saltpepper_param { fraction: 0.1 value: 300 }")
    with pytest.raises(DataError, match="decolorize needs 3-channel"):
        noise("decolorize: true", IMG[:1])
    with pytest.raises(DataError, match="needs 8-bit images"):
        noise("inverse: true", IMG.astype(np.float32))


def test_annotated_data_resizes_then_noises_before_the_crop(tmp_path):
    db, labelmap, _ = annoset(tmp_path, n=2)
    tp = ("transform_param { mean_value: 5 crop_size: 16 resize_param { resize_mode: WARP height: 20 width: 26 } "
          "noise_param { posterize: true gauss_blur: true } }")
    net = annotated_net(db, labelmap, batch=2, transform=tp, samplers="", phase=caffe_pb2.TEST)
    net.forward()
    from distcaffe.data.resize import resize
    img = records(db)[1][0]
    x = chw(cv2.GaussianBlur(np.ascontiguousarray(resize(img, 20, 26).transpose(1, 2, 0)), (7, 7), 1.5))
    x = (x // 64 * 64 + 32).astype(np.float32)[:, 2:18, 5:21] - 5
    np.testing.assert_array_equal(net.blobs["data"].data[1], x)
    net.layers[0].close()


def test_without_opencv_a_net_using_noise_param_stops_naming_layer_and_extra(tmp_path, monkeypatch):
    db, labelmap, _ = annoset(tmp_path, n=1)
    monkeypatch.setitem(sys.modules, "cv2", None)              # `import cv2` now raises ImportError
    with pytest.raises(DataError, match=r"^layer 'd' \(AnnotatedData\): transform_param.noise_param needs OpenCV: "
                                        r"pip install 'distcaffe\[opencv\]'$"):
        annotated_net(db, labelmap, transform="transform_param { noise_param { inverse: true } }", samplers="")
    net = annotated_net(db, labelmap, transform="transform_param { mean_value: 1 }", samplers="", batch=1)
    net.forward()                                               # nets without noise_param do not need it
    net.layers[0].close()
