"""DetectNetTransformation (NVCaffe's): the coverage/bbox label grid on a box worked out by hand, the joint
image/box geometry of flip, crop, scale and rotation, OpenCV's HSV conversions, seeded draws, its empty
backward; and DetectNet's clustering example layers (groupRectangles on a hand case)."""
import numpy as np
import pytest

import distcaffe as caffe
from distcaffe.blob import Blob
from distcaffe.errors import NetError
from distcaffe.layers import create_layer
from distcaffe.layers import detectnet_transform as dt
from distcaffe.proto import caffe_pb2
from _detectnet_data import label_image
from opencv34_rotation import CASES, case_image, digest

GT = caffe_pb2.DetectNetGroundTruthParameter


def layer_param(phase=caffe_pb2.TRAIN, size=(64, 32), mean=0, **aug):
    lp = caffe_pb2.LayerParameter(name="t", type="DetectNetTransformation", phase=phase)
    g = lp.detectnet_groundtruth_param
    g.stride, g.scale_cvg, g.gridbox_type, g.min_cvg_len, g.obj_norm = 16, 0.4, GT.GRIDBOX_MIN, 20, True
    g.image_size_x, g.image_size_y, g.crop_bboxes = size[0], size[1], True
    g.object_class.add(src=1, dst=0)
    a = lp.detectnet_augmentation_param
    for name in ("crop_prob", "flip_prob", "scale_prob", "rotation_prob", "hue_rotation_prob", "desaturation_prob"):
        setattr(a, name, 0.0)
    for name, value in aug.items():
        setattr(a, name, value)
    lp.transform_param.mean_value.append(mean)
    lp.transform_param.random_seed = 3
    return lp


def run(lp, images, labels):
    layer = create_layer(lp)
    bottom = [Blob(images.shape, name="data"), Blob(labels.shape, name="label")]
    bottom[0].data[...], bottom[1].data[...] = images, labels
    top = [Blob(name="transformed_data"), Blob(name="transformed_label")]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    return layer, bottom, top


def test_coverage_grid_of_a_box_worked_by_hand():
    # 64x32 image, stride 16 -> a 4x2 grid. Box x 8..48, y 4..24 (40x20), class 1 -> coverage index 0.
    # Coverage box: 0.4 * (40, 20) = (16, 8), raised to min_cvg_len 20 and capped by the box: 20x20 about the
    # centre (28, 14) -> x 18..38, y 4..24 -> cells x 1..2 (floor 18/16, ceil 38/16), y 0..1 (clipped to 2 rows).
    # obj_norm = 16*16 / (20*20) = 0.64. A class-2 box (not mapped) and an empty one are dropped.
    labels = label_image([(8, 4, 40, 20, 1), (0, 0, 10, 10, 2), (30, 30, 0, 5, 1)])
    _, _, top = run(layer_param(phase=caffe_pb2.TEST), np.zeros((1, 3, 32, 64)), labels[None])
    got = top[1].data[0]
    assert got.shape == (9, 2, 4)
    expect = np.zeros((9, 2, 4))
    for gx, gy in ((1, 0), (2, 0), (1, 1), (2, 1)):
        cx, cy = 16 * gx, 16 * gy
        expect[:, gy, gx] = (1, 8 - cx, 4 - cy, 48 - cx, 24 - cy, 1 / 40, 1 / 20, 0.64, 1)
    np.testing.assert_allclose(got, expect, rtol=1e-6)


def test_box_cropped_to_the_image_and_later_boxes_win_shared_cells():
    g = layer_param().detectnet_groundtruth_param
    grid = dt.CoverageGrid(g)
    # x -16..16 is cropped to 0..16 (truncation 0.5); its 16x20 coverage box centred (8, 14) spans cells
    # x 0, y 0..1; the second box (x 0..32, y 0..32) then overwrites cell (0, 0) and (0, 1).
    first = [-16, 4, 32, 20] + [0, 1] + [0] * 10
    kept = grid.prune([first])
    np.testing.assert_allclose(kept[0][[0, 1, 2, 3, 8]], [0, 4, 16, 20, 0.5])
    out = grid.generate([first])
    np.testing.assert_array_equal(out[0], [[1, 0, 0, 0], [1, 0, 0, 0]])
    np.testing.assert_allclose(out[1:5, 0, 0], [0, 4, 16, 24])
    out = grid.generate([first, [0, 0, 32, 32] + [0, 1] + [0] * 10])
    np.testing.assert_allclose(out[1:5, 1, 0], [0, -16, 32, 16])     # the second box, from cell (0, 1)


def test_flip_and_crop_move_image_and_box_together():
    img = np.zeros((1, 3, 40, 80))
    img[0, :, 10:20, 4:24] = 200                        # the box's pixels: x 4..24, y 10..20
    labels = label_image([(4, 10, 20, 10, 1)])[None]
    layer = create_layer(layer_param(size=(64, 32)))
    layer.layer_setup([], [])
    aug = dt.Augmentation((80, 40), flip=True, offset=(6, 3))
    out = layer.transform_image(img[0], aug)
    # flipped: pixels x 56..76 (80 - 24 .. 80 - 4); cropped at (6, 3): x 50..70 clipped to 64, y 7..17
    expect = np.zeros((3, 32, 64))
    expect[:, 7:17, 50:64] = 200
    np.testing.assert_allclose(out, expect, atol=1e-9)
    boxes = dt.transform_boxes(labels[0, 0, 1:2], aug, (80, 40))
    # NVCaffe flips with x' = W - x - w - 1 = 55, then the crop shifts by (6, 3)
    np.testing.assert_allclose(boxes[0, :4], [55 - 6, 10 - 3, 20, 10])


def test_scale_and_rotation_of_boxes():
    aug = dt.Augmentation((80, 40), scale=(160, 20))
    np.testing.assert_allclose(dt.transform_boxes([4, 10, 20, 10, 0, 1] + [0] * 10, aug, (80, 40))[0, :4],
                               [8, 5, 40, 5])
    # 90 degrees on a 4x2 image: cv::RotatedRect's corners (1,-1) (3,-1) (3,3) (1,3), bounding box x 1..3,
    # y -1..3 (OpenCV adds 1: 3 x 5); the centre (2, 1) goes to (2 - 1, 1 + 1) = (1, 2), the box keeps its size
    assert dt.rotated_size(4, 2, 90) == (3, 5)
    aug = dt.Augmentation((4, 2), rotation=90)
    np.testing.assert_allclose(dt.transform_boxes([1, 0.5, 2, 1, 0, 1] + [0] * 10, aug, (4, 2))[0, :4],
                               [0, 1.5, 2, 1], atol=1e-9)
    m = dt.rotation_matrix(4, 2, 90)
    np.testing.assert_allclose(m @ [3, 1, 1], [1, 3], atol=1e-9)     # (3, 1): right of the centre -> below it


# what tests/opencv34_rotation.py prints: NVCaffe's rotate_image_cpu run by OpenCV 3.4 on its CASES
OPENCV34_ROTATIONS = {  # OpenCV 3.4.18
    (58, 32, 5.0, 'float32'): 'b8361c558f5a869d1e037d5b84d283483d9167debae51587a56c6bc7dd6c0ba3',
    (37, 21, -12.5, 'float32'): 'a25589cdd0e8b56965f06ac2d289512ef8056a03f7c40566b0a633cfcc8170d3',
    (64, 40, 30.0, 'float64'): '964d584e3e3466da65705ba25117e736ea8f18c2c341758b27b077252439b92b',
    (17, 29, 90.0, 'float32'): '76482b791c221b5a1a4c3729b19c253ba8375a2c4a9742f625077ca6bdad5a00',
    (40, 40, 45.0, 'float64'): '9e84de24493a985dd105fcb0d8e87e2cc1bd4724ed2f53f803e6be6666a03186',
    (33, 18, -170.3, 'float32'): '9c5648545272689902e864aa68b3426e444c98820992ea7ba69fc287a7816a28',
    (80, 24, 0.75, 'float32'): 'f979fe0b19e757919543230a66859ed8b0506d3bd345b2c890d4ab79ca663184',
    (9, 5, 179.9, 'float64'): 'd470bf8e2b82e1383b748612bb2f66669d582257ad6023a5ac484bfa8680e4a9',
}


@pytest.mark.parametrize("k", range(len(CASES)))
def test_rotation_is_opencv_s_bit_for_bit(k):
    """The image rotation (matrix, bounding size and warpAffine) gives OpenCV 3.4's bytes: float32 and float64."""
    w, h, degrees, dtype = CASES[k]
    img = case_image(w, h, dtype, k)
    out = dt.warp_affine(img, dt.rotation_matrix(w, h, degrees, img.dtype), *dt.rotated_size(w, h, degrees), np)
    assert out.dtype == img.dtype and digest(out) == OPENCV34_ROTATIONS[CASES[k]]


@pytest.mark.parametrize("w,h,degrees", [(58, 32, 5.0), (1248, 384, -4.3), (37, 21, 171.2), (640, 480, 0.01)])
def test_rotation_matrix_is_opencv_s(w, h, degrees):
    """getTransformationMatrix: cv::getAffineTransform between cv::RotatedRect corners, kept in the Dtype.
    Ours are OpenCV 3.4's (the digests above pin them, and 3.4's LU matched ours bit for bit on 1000 random
    rotations); newer OpenCV solves the system and computes a RotatedRect's last two corners with other
    roundings, so the project's cv2 is matched to the last double bit and, for corners, float32 rounding."""
    import cv2
    cx, cy = w * 0.5, h * 0.5
    bx, by = dt.bounding_rect(dt.rotated_rect_points(cx, cy, w, h, degrees))[:2]
    src, dst = dt.rotated_rect_points(cx, cy, w, h, 0.0), dt.rotated_rect_points(cx - bx, cy - by, w, h, degrees)
    ours = dt.affine_transform(src, dst)
    np.testing.assert_allclose(ours, cv2.getAffineTransform(src[:3], dst[:3]), rtol=4e-16, atol=4e-16 * max(w, h))
    np.testing.assert_array_equal(ours.astype(np.float32), cv2.getAffineTransform(src[:3], dst[:3]).astype(np.float32))
    ref = cv2.getAffineTransform(cv2.boxPoints(((cx, cy), (w, h), 0))[:3],
                                 cv2.boxPoints(((cx - bx, cy - by), (w, h), degrees))[:3])
    np.testing.assert_allclose(dt.rotation_matrix(w, h, degrees, np.float32), ref, rtol=1e-6, atol=1e-4)
    assert (dt.rotation_matrix(w, h, degrees, np.float32) == dt.affine_transform(src, dst).astype(np.float32)).all()


def test_warp_keeps_opencv_s_transparent_border_and_sub_pixel_grid():
    img = np.arange(1, 1 + 3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    # a whole-pixel shift by (2, 1): every pixel moves, except the last source row and column, whose 2x2
    # neighbourhood leaves the image (OpenCV's BORDER_TRANSPARENT before 4.9 leaves those outputs at 0)
    out = dt.warp_affine(img, np.array([[1, 0, 2], [0, 1, 1.]]), 8, 6, np)
    expect = np.zeros((3, 6, 8), np.float32)
    expect[:, 1:4, 2:6] = img[:, :3, :4]
    np.testing.assert_array_equal(out, expect)
    # a shift by 1/3 pixel samples at 1 - 1/3 = .6667, which OpenCV's grid rounds to 21/32: weights 11/32, 21/32
    out = dt.warp_affine(img, np.array([[1, 0, 1 / 3], [0, 1, 0.]]), 5, 4, np)
    np.testing.assert_array_equal(out[:, :3, 1:4], img[:, :3, :3] * np.float32(11 / 32) +
                                  img[:, :3, 1:4] * np.float32(21 / 32))
    assert not out[:, 3].any() and not out[:, :, 0].any()


def test_rotated_box_follows_the_rotated_pixels():
    img = np.zeros((3, 60, 90), np.float32)
    img[:, 14:30, 20:44] = 1.0                          # box x 20..44, y 14..30
    for degrees in (30.0, -75.0, 160.0):
        aug = dt.Augmentation((90, 60), rotation=degrees)
        m = dt.rotation_matrix(90, 60, degrees, np.float32)
        out = dt.warp_affine(img, m, *dt.rotated_size(90, 60, degrees), np)[0]
        ys, xs = np.nonzero(out > 0.5)
        box = dt.transform_boxes([20, 14, 24, 16, 0, 1] + [0] * 10, aug, (90, 60), np.float32)[0]
        centre = box[:2] + box[2:4] / 2
        # pixel i covers [i - .5, i + .5]: the blob's centroid is the box centre less half a pixel, turned
        np.testing.assert_allclose([xs.mean(), ys.mean()], centre - m[:, :2] @ [.5, .5], atol=0.15)
        np.testing.assert_allclose(box[2:4], [24, 16])  # NVCaffe moves the box, keeping its size


def test_hsv_conversions_match_opencv():
    """OpenCV's float HSV in float32, as NVCaffe's cvtColor: S and V exactly, H to the rounding of OpenCV's
    vector code (which fuses a multiply-add our scalar formula rounds twice), back to BGR to the last bit."""
    import cv2
    rng = np.random.default_rng(0)
    img = rng.random((3, 6, 7)).astype(np.float32)
    img[:, 0, 0], img[:, 0, 1] = 0.5, 0.0                # grey and black pixels: saturation 0
    ref = cv2.cvtColor(np.ascontiguousarray(img.transpose(1, 2, 0)), cv2.COLOR_BGR2HSV).transpose(2, 0, 1)
    hsv = dt.bgr_to_hsv(img, np)
    assert hsv.dtype == np.float32
    np.testing.assert_array_equal(hsv[1:], ref[1:])
    np.testing.assert_allclose(hsv[0], ref[0], rtol=0, atol=4e-5)
    hsv[0] += np.float32(250.0)                          # past 360: HSV2BGR wraps the hue
    hsv[1] *= np.float32(0.6)
    ref = cv2.cvtColor(np.ascontiguousarray(hsv.transpose(1, 2, 0)), cv2.COLOR_HSV2BGR)
    np.testing.assert_allclose(dt.hsv_to_bgr(hsv, np), ref.transpose(2, 0, 1), rtol=0, atol=1.2e-7)


def test_no_augmentation_in_train_is_the_identity_less_the_mean():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (2, 3, 32, 64)).astype(np.float64)
    labels = np.stack([label_image([(8, 4, 40, 20, 1)]), label_image([(30, 2, 20, 25, 1)])])
    _, _, top = run(layer_param(mean=100), img, labels)
    np.testing.assert_allclose(top[0].data, img - 100, rtol=1e-5, atol=1e-3)
    _, _, test_top = run(layer_param(phase=caffe_pb2.TEST, mean=100), img, labels)
    np.testing.assert_array_equal(top[1].data, test_top[1].data)


def test_draws_follow_the_seed_and_every_augmentation_runs():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 255, (2, 3, 40, 72)).astype(np.float64)
    labels = np.stack([label_image([(8, 4, 40, 20, 1)])] * 2)
    aug = dict(crop_prob=1, shift_x=8, shift_y=8, flip_prob=0.5, scale_prob=1, scale_min=0.8, scale_max=1.2,
               rotation_prob=1, max_rotate_degree=5, hue_rotation_prob=1, hue_rotation=30, desaturation_prob=1,
               desaturation_max=0.8)
    a = run(layer_param(**aug), img, labels)[2]
    b = run(layer_param(**aug), img, labels)[2]
    np.testing.assert_array_equal(a[0].data, b[0].data)
    np.testing.assert_array_equal(a[1].data, b[1].data)
    assert np.isfinite(a[0].data).all() and a[0].data.shape == (2, 3, 32, 64)
    # NVCaffe's draw order: hue?, hue, desaturate?, saturation, flip, scale?, scale, rotate?, angle, crop?, x, y
    draws = iter([0.0, 1.0, 0.0, 0.5, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    got = dt.draw_augmentation(layer_param(**aug).detectnet_augmentation_param, (72, 40), (64, 32),
                               lambda: next(draws))
    # hue (1 - 0.5) * 2 * 30 = 30; saturation 1 - 0.5 * 0.8 = 0.6; flip; scale 0.8 -> round(57.6, 32) = 58x32;
    # rotation (1 - 0.5) * 2 * 5 = 5 degrees, whose bounding box about (29, 16) is 58 cos5 + 32 sin5 = 60.57 by
    # 58 sin5 + 32 cos5 = 36.93: x -1.28..59.28 -> floor/ceil -2..60 -> 63 wide (OpenCV's +1), y -3..35 -> 39;
    # crop x: round(1 * (63 - 64 + 8) - 8 // 2) = 3, y: round(0 * (39 - 32 + 8) - 4) = -4
    assert (got.hue, got.flip, got.scale) == (30.0, True, (58, 32))
    assert got.saturation == pytest.approx(0.6)
    assert got.rotation == pytest.approx(5.0)
    assert dt.rotated_size(58, 32, 5.0) == (63, 39)
    assert got.offset == (3, -4)


def test_backward_is_empty_as_nvcaffe_s():
    img = np.zeros((1, 3, 32, 64))
    layer, bottom, top = run(layer_param(), img, label_image([(8, 4, 40, 20, 1)])[None])
    top[0].diff[...] = 1.0
    layer.backward(top, [True, True], bottom)
    assert not bottom[0].diff.any() and not bottom[1].diff.any()
    assert not layer.allow_force_backward(0) and not layer.allow_force_backward(1)


def test_a_bad_label_image_is_a_clear_error():
    labels = label_image([(8, 4, 40, 20, 1)])[None]
    labels[0, 0, 0, 1] = 12
    with pytest.raises(NetError, match="'t'.*label.*box length of 12, expected 16"):
        run(layer_param(), np.zeros((1, 3, 32, 64)), labels)
    labels[0, 0, 0, :2] = 9, 16
    with pytest.raises(NetError, match="lists 9 boxes but holds 4 rows"):
        run(layer_param(), np.zeros((1, 3, 32, 64)), labels)


def test_group_rectangles_worked_by_hand():
    from caffe.layers.detectnet.clustering import group_rectangles
    rects = [[10, 10, 20, 24], [11, 10, 20, 24], [10, 12, 22, 24],   # corners within 0.2 * (20 + 24) / 2 = 4.4
             [60, 12, 20, 24],                                      # alone: 1 rect, not more than threshold 1
             [30, 50, 20, 24], [31, 51, 20, 24],                    # mean (30.5, 50.5): cvRound to even -> 30, 50
             [12, 12, 6, 6], [12, 13, 6, 6]]                        # 2 rects inside the 3-rect cluster: dropped
    got, weights = group_rectangles(rects, 1, 0.2)
    # the first cluster's mean (10.33, 10.67, 20.67, 24) rounds to (10, 11, 21, 24)
    assert sorted(zip(map(tuple, got), weights)) == [((10, 11, 21, 24), 3), ((30, 50, 20, 24), 2)]
    got, weights = group_rectangles(rects, 0, 0.2)
    assert ((60, 12, 20, 24), 1) in zip(map(tuple, got), weights)


def test_cluster_groundtruth_lists_the_label_boxes():
    from caffe.layers.detectnet.clustering import ClusterGroundtruth
    labels = label_image([(8, 4, 40, 20, 1)])[None]
    _, _, top = run(layer_param(phase=caffe_pb2.TEST), np.zeros((1, 3, 32, 64)), labels)
    cvg, boxes = Blob(name="cvg"), Blob(name="bbox")
    cvg.reshape(1, 1, 2, 4)
    boxes.reshape(1, 4, 2, 4)
    cvg.data[...], boxes.data[...] = top[1].data[:, 8:9], top[1].data[:, 1:5]
    layer = ClusterGroundtruth(caffe_pb2.LayerParameter(name="cluster_gt", type="Python"))
    layer.param_str = "64, 32, 16, 1"
    out = Blob(name="list")
    layer.setup([cvg, boxes], [out])
    layer.reshape([cvg, boxes], [out])
    layer.forward([cvg, boxes], [out])
    assert out.data.shape == (1, 50, 5)
    np.testing.assert_allclose(out.data[0, 0], [8, 4, 48, 24, 0])
    assert not out.data[0, 1:].any()


FULL_AUG = dict(crop_prob=1, shift_x=8, shift_y=8, flip_prob=0.5, scale_prob=1, scale_min=0.8, scale_max=1.2,
                rotation_prob=1, max_rotate_degree=5, hue_rotation_prob=1, hue_rotation=30, desaturation_prob=1,
                desaturation_max=0.8)


def test_gpu_code_path_gives_the_cpu_s_numbers():
    """cupy's API (driven on the CPU by hostcupy, strict about host/device mixing) gives the CPU's tops."""
    import hostcupy
    rng = np.random.default_rng(5)
    img = rng.integers(0, 255, (2, 3, 40, 72)).astype(np.float64)
    labels = np.stack([label_image([(8, 4, 40, 20, 1)]), label_image([(30, 2, 20, 25, 1), (1, 1, 9, 9, 1)])])
    cpu = [t.data.copy() for t in run(layer_param(**FULL_AUG), img, labels)[2]]
    hostcupy.STRICT = True
    hostcupy.install()
    try:
        caffe.set_mode_gpu()
        gpu = [t.data.copy() for t in run(layer_param(**FULL_AUG), img, labels)[2]]
    finally:
        caffe.set_mode_cpu()
        hostcupy.uninstall()
        hostcupy.STRICT = False
    for a, b in zip(cpu, gpu):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-4)


def test_mean_file_is_subtracted_at_the_source_size(tmp_path):
    from distcaffe.io.binary import array_to_blobproto, write_blobproto
    mean = np.full((1, 3, 10, 20), 30.0)
    mean[0, 1] = 60.0
    write_blobproto(array_to_blobproto(mean), str(tmp_path / "mean.binaryproto"))
    lp = layer_param(phase=caffe_pb2.TEST)
    lp.transform_param.ClearField("mean_value")
    lp.transform_param.mean_file = str(tmp_path / "mean.binaryproto")
    img = np.full((1, 3, 32, 64), 100.0)
    _, _, top = run(lp, img, label_image([])[None])
    np.testing.assert_allclose(top[0].data[0, 1], 40.0, atol=1e-3)   # a constant mean stays constant resized
    np.testing.assert_allclose(top[0].data[0, 0], 70.0, atol=1e-3)
    lp.transform_param.mean_file = str(tmp_path / "missing")
    with pytest.raises(NetError, match="cannot read mean_file .*missing"):
        run(lp, img, label_image([])[None])
