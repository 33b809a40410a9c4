"""WindowData (R-CNN): window file parsing, fg/bg batch composition, and the warp / context-pad geometry against
BVLC's arithmetic worked out by hand."""
import numpy as np
import pytest
from google.protobuf import text_format

import distcaffe as caffe
from distcaffe.data.resize import LINEAR, resize
from distcaffe.errors import DataError
from distcaffe.proto import caffe_pb2


def window_file(tmp_path, windows=None):
    from PIL import Image
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (20, 30, 3)).astype(np.uint8), rng.integers(0, 256, (24, 16, 3)).astype(np.uint8)]
    for i, img in enumerate(imgs):
        Image.fromarray(img).save(tmp_path / ("w%d.png" % i))
    windows = windows or [[(3, 0.9, 2, 3, 11, 9), (0, 0.1, 0, 0, 29, 19), (1, 0.3, 5, 5, 9, 9)],
                          [(2, 0.6, 1, 1, 14, 20), (0, 0.0, 3, 3, 12, 12)]]
    lines = []
    for i, (img, ws) in enumerate(zip(imgs, windows)):
        lines += ["# %d" % i, "w%d.png" % i, "3 %d %d" % img.shape[:2], str(len(ws))]
        lines += ["%d %g %d %d %d %d" % w for w in ws]
    (tmp_path / "windows.txt").write_text("\n".join(lines) + "\n")
    return str(tmp_path / "windows.txt"), [img[:, :, ::-1].transpose(2, 0, 1) for img in imgs]   # BGR CHW


def window_net(tmp_path, source, batch=8, fg=0.25, pad=0, mode="warp", crop=8, extra=""):
    text = ('layer { name: "w" type: "WindowData" top: "data" top: "label" window_data_param { source: "%s" '
            'root_folder: "%s/" batch_size: %d fg_fraction: %g context_pad: %d crop_mode: "%s" scale: 0.5 } '
            'transform_param { crop_size: %d %s } }' % (source, tmp_path, batch, fg, pad, mode, crop, extra))
    return caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe.TRAIN)


def test_batches_take_background_then_foreground_windows(tmp_path):
    source, _ = window_file(tmp_path)
    net = window_net(tmp_path, source, batch=8, fg=0.25)
    for _ in range(3):
        net.forward()
        labels = net.blobs["label"].data.tolist()
        assert labels[:6] == [0] * 6 and set(labels[6:]) <= {2, 3}      # overlap .3 is neither fg nor bg
    assert net.blobs["data"].shape == (8, 3, 8, 8)


def test_warp_window_without_context_is_the_resized_crop(tmp_path):
    source, imgs = window_file(tmp_path)
    layer = window_net(tmp_path, source).layers[0]
    out, _ = layer.window(imgs[0], (2, 3, 11, 9), False)
    np.testing.assert_array_equal(out, resize(np.ascontiguousarray(imgs[0][:, 3:10, 2:12]), 8, 8, LINEAR))
    flipped, _ = layer.window(imgs[0], (2, 3, 11, 9), True)
    np.testing.assert_array_equal(flipped, out[:, :, ::-1])


def test_context_pad_at_the_border_by_hand(tmp_path):
    source, imgs = window_file(tmp_path)
    layer = window_net(tmp_path, source, pad=2, crop=8).layers[0]
    # window (0, 0, 5, 5) in a 30 x 20 image: context_scale 8 / (8 - 4) = 2, half 3, centre 3 ->
    # x1 = y1 = round(3 - 6) = -3, x2 = y2 = round(3 + 6) = 9; 13 px unclipped; clip 3 px each side at 0 ->
    # (0..9): 10 px; scale 8 / 13: warped round(10 * 8/13) = 6 px, pad round(3 * 8/13) = 2 px
    out, (ph, pw, oh, ow) = layer.window(imgs[0], (0, 0, 5, 5), False)
    assert (ph, pw, oh, ow) == (2, 2, 6, 6)
    np.testing.assert_array_equal(out[:, 2:8, 2:8], resize(np.ascontiguousarray(imgs[0][:, 0:10, 0:10]), 6, 6,
                                                           LINEAR))
    assert (out[:, :2] == 0).all() and (out[:, :, :2] == 0).all()
    sq = window_net(tmp_path, source, mode="square", crop=8).layers[0]
    _, geo = sq.window(imgs[0], (10, 5, 13, 12), False)                 # 4 x 8 window made 8 x 8 square
    assert geo == (0, 0, 8, 8)


def test_mean_and_scale_apply_to_the_window_pixels_only(tmp_path):
    source, _ = window_file(tmp_path)
    net = window_net(tmp_path, source, batch=4, fg=0.5, pad=3, extra="mean_value: 100")
    net.forward()
    data = net.blobs["data"].data
    assert data.min() >= -50 and data.max() <= 77.5                     # (0..255 - 100) * 0.5
    assert (data == 0).any()                                            # the zero padding is not mean-shifted


def test_window_file_errors(tmp_path):
    source, _ = window_file(tmp_path, [[(0, 0.1, 0, 0, 5, 5)], [(0, 0.2, 1, 1, 4, 4)]])
    with pytest.raises(DataError, match="0 foreground and 2 background windows"):
        window_net(tmp_path, source)
    bad = tmp_path / "bad.txt"
    bad.write_text("# 0\nw0.png\n3 20 30\n1\n1 0.9 1 2\n")
    with pytest.raises(DataError, match="malformed"):
        window_net(tmp_path, str(bad))
    with pytest.raises(DataError, match="cannot read window file"):
        window_net(tmp_path, str(tmp_path / "none.txt"))
