"""SSD's resize_param modes (NVCaffe ApplyResize, InferNewSize, UpdateBBoxByResizePolicy, ExtrapolateBBox,
OutputBBox): output sizes and pixels against cv2.resize + cv2.copyMakeBorder for every mode, pad mode and
interpolation; boxes against values worked out by hand; the AnnotatedData layer, DetectionEvaluate and a
small SSD net training 2 steps with FIT_* resizes and noise_param."""
import cv2
import numpy as np
import pytest
from google.protobuf import text_format

import distcaffe as caffe
from distcaffe import solvers
from distcaffe.data import resize_policy as rpol
from distcaffe.data.resize import AREA, CUBIC, LANCZOS4, LINEAR, NEAREST
from distcaffe.errors import DataError
from distcaffe.proto import caffe_pb2
from _detection_data import annoset
from test_data_annotated import annotated_net, records

RP = caffe_pb2.ResizeParameter
IMG = np.random.default_rng(3).integers(0, 256, (3, 40, 56)).astype(np.uint8)     # h 40, w 56: aspect 1.4
HWC = np.ascontiguousarray(IMG.transpose(1, 2, 0))
CV_INTERP = {LINEAR: cv2.INTER_LINEAR, NEAREST: cv2.INTER_NEAREST, CUBIC: cv2.INTER_CUBIC, AREA: cv2.INTER_AREA,
             LANCZOS4: cv2.INTER_LANCZOS4}
CV_PAD = {RP.CONSTANT: cv2.BORDER_CONSTANT, RP.MIRRORED: cv2.BORDER_REFLECT_101,
          RP.REPEAT_NEAREST: cv2.BORDER_REPLICATE}
EXACT = (LINEAR, NEAREST, CUBIC)        # distcaffe.data.resize: AREA-shrink and LANCZOS4 within one grey level


def rp(text):
    return text_format.Parse(text, RP())


def check_pixels(got, expect, algo):
    assert got.shape == expect.shape
    diff = np.abs(got.astype(int) - expect.astype(int)).max()
    assert diff == 0 if algo in EXACT else diff <= 1, (algo, diff)


@pytest.mark.parametrize("algo", sorted(CV_INTERP))
def test_warp_and_fit_small_size_sizes_and_pixels(algo):
    np.testing.assert_array_equal(
        rpol.apply(IMG, rp("resize_mode: WARP height: 30 width: 36"), algo, "t").shape, (3, 30, 36))
    # FIT_SMALL_SIZE 30x30: aspect 1.4 >= 1 -> height 30, width int(1.4 * 30) = 42; a tall image: width 30
    small = rp("resize_mode: FIT_SMALL_SIZE height: 30 width: 30")
    assert rpol.new_size(small, 40, 56) == (30, 42) and rpol.new_size(small, 56, 40) == (42, 30)
    check_pixels(rpol.apply(IMG, small, algo, "t"), cv2.resize(HWC, (42, 30), interpolation=CV_INTERP[algo])
                 .transpose(2, 0, 1), algo)
    tall = np.ascontiguousarray(IMG.transpose(0, 2, 1))
    check_pixels(rpol.apply(tall, small, algo, "t"),
                 cv2.resize(np.ascontiguousarray(tall.transpose(1, 2, 0)), (30, 42),
                            interpolation=CV_INTERP[algo]).transpose(2, 0, 1), algo)


@pytest.mark.parametrize("pad_mode", sorted(CV_PAD))
@pytest.mark.parametrize("algo", sorted(CV_INTERP))
def test_fit_large_size_and_pad_pixels(algo, pad_mode):
    # 30x30 from 40x56: aspect 1.4 > 1 -> resize to 30 wide, floor(30 / 1.4) = 21 high, pad 9 rows: 4 above, 5 below
    p = rp("resize_mode: FIT_LARGE_SIZE_AND_PAD height: 30 width: 30 pad_value: 7 pad_value: 8 pad_value: 250.6")
    p.pad_mode = pad_mode
    out = rpol.apply(IMG, p, algo, "t")
    small = cv2.resize(HWC, (30, 21), interpolation=CV_INTERP[algo])
    expect = cv2.copyMakeBorder(small, 4, 5, 0, 0, CV_PAD[pad_mode], value=(7, 8, 250.6))
    check_pixels(out, expect.transpose(2, 0, 1), algo)
    # a tall image pads columns; one pad_value fills every channel
    tall = np.ascontiguousarray(IMG.transpose(0, 2, 1))
    p.ClearField("pad_value")
    p.pad_value.append(9)
    out = rpol.apply(tall, p, algo, "t")
    small = cv2.resize(np.ascontiguousarray(tall.transpose(1, 2, 0)), (21, 30), interpolation=CV_INTERP[algo])
    check_pixels(out, cv2.copyMakeBorder(small, 0, 0, 4, 5, CV_PAD[pad_mode], value=(9, 9, 9)).transpose(2, 0, 1),
                 algo)


def test_pad_value_count_and_degenerate_sizes_are_clear_errors():
    with pytest.raises(DataError, match="t: resize_param: specify either 1 pad_value or as many as channels"):
        rpol.apply(IMG, rp("resize_mode: FIT_LARGE_SIZE_AND_PAD height: 30 width: 30 pad_value: 1 pad_value: 2"),
                   LINEAR, "t")
    with pytest.raises(DataError, match="turns a 1x56 image into 0x30"):
        rpol.apply(IMG[:, :1], rp("resize_mode: FIT_LARGE_SIZE_AND_PAD height: 30 width: 30"), LINEAR, "t")
    with pytest.raises(DataError, match="needs height and width"):
        rpol.check(rp("resize_mode: FIT_SMALL_SIZE height: 30"), "t")


BOX = np.array([[.1, .2, .5, .6], [.6, .5, 1.2, 1.0]], np.float32)


def test_boxes_by_hand():
    # a 50 x 100 (h x w) image to 100 x 100
    warp = rpol.update_boxes(rp("resize_mode: WARP height: 100 width: 100"), 50, 100, BOX)
    np.testing.assert_allclose(warp, [[.1, .2, .5, .6], [.6, .5, 1, 1]], rtol=1e-6)      # clipped at 1
    # FIT_LARGE_SIZE_AND_PAD: aspect 2 > 1, padding (100 - 100 / 2) / 2 = 25 rows above and below; box 0 in
    # pixels x 10..50, y 10..30 -> y 25 + 10 * 50 / 50 = 35 .. 25 + 30 = 55; box 1 x 60..min(100, 120),
    # y 25 + 25 = 50 .. 25 + 50 = 75
    large = rp("resize_mode: FIT_LARGE_SIZE_AND_PAD height: 100 width: 100")
    np.testing.assert_allclose(rpol.update_boxes(large, 50, 100, BOX),
                               [[.1, .35, .5, .55], [.6, .5, 1, .75]], rtol=1e-6)
    # the tall image (100 x 50): 25 columns each side; box 0 in pixels x 5..25 -> 25 + 5 = 30 .. 25 + 25 = 50
    np.testing.assert_allclose(rpol.update_boxes(large, 100, 50, BOX[:1]), [[.3, .2, .5, .6]], rtol=1e-6)
    # FIT_SMALL_SIZE: aspect 2 -> 100 x 200, normalized boxes unchanged but clipped
    small = rp("resize_mode: FIT_SMALL_SIZE height: 100 width: 100 height_scale: 50 width_scale: 50")
    np.testing.assert_allclose(rpol.update_boxes(small, 50, 100, BOX), warp, rtol=1e-6)
    # ExtrapolateBBox after a centre 100 x 100 crop (crop box x .25..75 of the 200-wide image): crop 100 x 100
    # pixels, boxes scaled by 100 / 50 = 2
    crop = np.array([.25, 0, .75, 1], np.float32)
    np.testing.assert_allclose(rpol.extrapolate(small, 50, 100, crop, np.float32([[0, .2, .5, .6]]), "t"),
                               [[0, .4, 1, 1.2]], rtol=1e-6)
    with pytest.raises(DataError, match="height_scale x width_scale 50x50 is larger than the 100x40 crop"):
        rpol.extrapolate(small, 50, 100, np.float32([.25, 0, .45, 1]), BOX, "t")
    # OutputBBox back to the 50 x 100 image's pixels: FIT_LARGE undoes the padding; FIT_SMALL with scales
    # multiplies by width_scale/height_scale and clips to the image; a box all in the padding keeps its corners
    np.testing.assert_allclose(rpol.output_boxes(large, 50, 100, [[.1, .35, .5, .55], [.2, .05, .4, .2]]),
                               [[10, 10, 50, 30], [20, 2.5, 40, 10]], rtol=1e-6)
    np.testing.assert_allclose(rpol.output_boxes(small, 50, 100, [[0, .4, 1, 1.2], [.5, .1, 3, .2]]),
                               [[0, 20, 50, 50], [25, 5, 100, 10]], rtol=1e-6)
    np.testing.assert_allclose(rpol.output_boxes(None, 50, 100, [[-.1, .2, 1.5, .6]]), [[0, 10, 100, 30]])


def test_annotated_data_fit_large_pads_and_moves_the_boxes(tmp_path):
    db, labelmap, _ = annoset(tmp_path, n=2)          # 40 x 56 images
    tp = ("transform_param { resize_param { resize_mode: FIT_LARGE_SIZE_AND_PAD height: 30 width: 30 "
          "pad_value: 0 } }")
    net = annotated_net(db, labelmap, batch=2, transform=tp, samplers="", phase=caffe.TEST)
    net.forward()
    assert net.blobs["data"].shape == (2, 3, 30, 30)
    img, boxes = records(db)[0]
    expect = cv2.copyMakeBorder(cv2.resize(np.ascontiguousarray(img.transpose(1, 2, 0)), (30, 21)), 4, 5, 0, 0,
                                cv2.BORDER_CONSTANT, value=0)
    np.testing.assert_array_equal(net.blobs["data"].data[0], expect.transpose(2, 0, 1))
    rows = net.blobs["label"].data.reshape(-1, 8)
    rows = rows[rows[:, 0] == 0]
    pad = (30 - 30 / np.float32(56 / 40)) / 2                        # NVCaffe's unrounded padding
    c = boxes.corners
    np.testing.assert_allclose(rows[:, 3:7], np.column_stack([c[:, 0], (pad + c[:, 1] * (30 - 2 * pad)) / 30, c[:, 2],
                                                              (pad + c[:, 3] * (30 - 2 * pad)) / 30]), rtol=1e-5)
    net.layers[0].close()


def test_annotated_data_fit_small_size_keeps_the_aspect(tmp_path):
    db, labelmap, _ = annoset(tmp_path, n=2)
    tp = "transform_param { resize_param { resize_mode: FIT_SMALL_SIZE height: 20 width: 20 } }"
    net = annotated_net(db, labelmap, batch=1, transform=tp, samplers="", phase=caffe.TEST)
    assert net.blobs["data"].shape == (1, 3, 20, 28)                # int(1.4 * 20)
    net.forward()
    img, boxes = records(db)[0]
    np.testing.assert_array_equal(net.blobs["data"].data[0],
                                  cv2.resize(np.ascontiguousarray(img.transpose(1, 2, 0)), (28, 20)).transpose(2, 0, 1))
    np.testing.assert_allclose(net.blobs["label"].data.reshape(-1, 8)[:, 3:7], np.clip(boxes.corners, 0, 1), rtol=1e-6)
    net.layers[0].close()


def test_detection_evaluate_maps_fit_large_boxes_back_to_pixels(tmp_path):
    sizes = tmp_path / "sizes.txt"
    sizes.write_text("a 50 100\n")
    text = ('layer { name: "det" type: "Input" top: "det" input_param { shape { dim: 1 dim: 1 dim: 1 dim: 7 } } }'
            'layer { name: "gt" type: "Input" top: "gt" input_param { shape { dim: 1 dim: 1 dim: 1 dim: 8 } } }'
            'layer { name: "ev" type: "DetectionEvaluate" bottom: "det" bottom: "gt" top: "ev" '
            'detection_evaluate_param { num_classes: 2 background_label_id: 0 overlap_threshold: 0.5 '
            'name_size_file: "%s" resize_param { resize_mode: FIT_LARGE_SIZE_AND_PAD height: 100 width: 100 } } }'
            % sizes)
    net = caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe.TEST)
    # ground truth (0.1, 0.35, 0.5, 0.55) of the padded input is pixels (10, 10, 50, 30) of the 50 x 100 image;
    # the detection (0.1, 0.3, 0.5, 0.5) is (10, 5, 50, 25): overlap 41 * 16 / (41 * 21 * 2 - 41 * 16) = 0.615
    net.blobs["det"].data[...] = [0, 1, 0.9, .1, .3, .5, .5]
    net.blobs["gt"].data[...] = [0, 1, 0, .1, .35, .5, .55, 0]
    net.forward()
    np.testing.assert_array_equal(net.blobs["ev"].data.reshape(-1, 5),
                                  np.float32([[-1, 1, 1, -1, -1], [0, 1, 0.9, 1, 0]]))
    # WARP would see (10, 17.5, 50, 27.5) vs (10, 15, 50, 25): overlap 41 * 8.5 / (41 * 11 * 2 - 41 * 8.5) = 0.630;
    # at threshold 0.62 only FIT_LARGE's 0.615 misses
    net.layers[2].overlap_threshold = 0.62
    net.forward()
    np.testing.assert_array_equal(net.blobs["ev"].data.reshape(-1, 5)[1], np.float32([0, 1, 0.9, 0, 1]))


SSD_NET = """
layer { name: "data" type: "AnnotatedData" top: "data" top: "label"
  transform_param { mirror: true mean_value: 104 mean_value: 117 mean_value: 123
    resize_param { prob: 1 %s height: 32 width: 32 interp_mode: LINEAR interp_mode: CUBIC interp_mode: AREA }
    noise_param { prob: 1 hist_eq: true gauss_blur: true jpeg: 80 erode: true
                  saltpepper: true saltpepper_param { fraction: 0.02 value: 0 } }
    emit_constraint { emit_type: CENTER }
    expand_param { prob: 0.5 max_expand_ratio: 2 } }
  data_param { source: "%s" batch_size: %d }
  annotated_data_param { label_map_file: "%s"
    batch_sampler { max_sample: 1 max_trials: 1 }
    batch_sampler { sampler { min_scale: 0.5 max_scale: 1 min_aspect_ratio: 0.5 max_aspect_ratio: 2 }
                    sample_constraint { min_jaccard_overlap: 0.3 } max_sample: 1 max_trials: 20 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 4 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "loc" type: "Convolution" bottom: "conv1" top: "loc"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "loc_perm" type: "Permute" bottom: "loc" top: "loc_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "loc_flat" type: "Flatten" bottom: "loc_perm" top: "loc_flat" flatten_param { axis: 1 } }
layer { name: "conf" type: "Convolution" bottom: "conv1" top: "conf"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "conf_perm" type: "Permute" bottom: "conf" top: "conf_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "conf_flat" type: "Flatten" bottom: "conf_perm" top: "conf_flat" flatten_param { axis: 1 } }
layer { name: "prior" type: "PriorBox" bottom: "conv1" bottom: "data" top: "prior"
  prior_box_param { min_size: 10 max_size: 20 clip: false variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } }
layer { name: "mbox_loss" type: "MultiBoxLoss" bottom: "loc_flat" bottom: "conf_flat" bottom: "prior"
  bottom: "label" top: "mbox_loss" propagate_down: true propagate_down: true propagate_down: false
  propagate_down: false loss_param { normalization: VALID }
  multibox_loss_param { loc_loss_type: SMOOTH_L1 conf_loss_type: SOFTMAX loc_weight: 1 num_classes: 3
    share_location: true match_type: PER_PREDICTION overlap_threshold: 0.5 use_prior_for_matching: true
    background_label_id: 0 use_difficult_gt: true neg_pos_ratio: 3 neg_overlap: 0.5 code_type: CENTER_SIZE
    mining_type: MAX_NEGATIVE } }
"""


@pytest.mark.parametrize("mode,batch", [("resize_mode: FIT_LARGE_SIZE_AND_PAD pad_mode: MIRRORED", 2),
                                        ("resize_mode: FIT_SMALL_SIZE", 1)])
def test_small_ssd_net_with_noise_and_fit_resize_trains_two_steps(tmp_path, mode, batch):
    db, labelmap, _ = annoset(tmp_path, n=4)
    net = text_format.Parse(SSD_NET % (mode, db, batch, labelmap), caffe_pb2.NetParameter())
    solver = caffe_pb2.SolverParameter(base_lr=1e-3, lr_policy="fixed", momentum=0.9, max_iter=2, random_seed=1,
                                       snapshot_after_train=False, display=1)
    solver.net_param.CopyFrom(net)
    s = solvers.get_solver(solver)
    w0 = s.net.params["conv1"][0].data.copy()
    s.step(2)
    assert s.iter == 2 and np.isfinite(s.smoothed_loss) and s.smoothed_loss > 0
    assert not np.array_equal(w0, s.net.params["conv1"][0].data)
    shape = s.net.blobs["data"].shape
    assert shape == ((2, 3, 32, 32) if batch == 2 else (1, 3, 32, 44))      # FIT_SMALL: int(1.4 * 32) = 44
    s.net.layers[0].close()


def test_annotated_data_fit_small_size_scales_boxes_to_height_and_width_scale(tmp_path):
    db, labelmap, _ = annoset(tmp_path, n=1)              # 40 x 56 -> FIT_SMALL 20 x 28, centre crop 20 x 20
    tp = ("transform_param { crop_size: 20 resize_param { resize_mode: FIT_SMALL_SIZE height: 20 width: 20 "
          "height_scale: 10 width_scale: 10 } }")
    net = annotated_net(db, labelmap, batch=1, transform=tp, samplers="", phase=caffe.TEST)
    net.forward()
    assert net.blobs["data"].shape == (1, 3, 20, 20)
    c = np.clip(records(db)[0][1].corners.astype(np.float64), 0, 1)
    # crop x 4 .. 24 of 28 pixels: x' = (x - 4/28) / (20/28) clipped; then ExtrapolateBBox: the crop is 20 x 20
    # pixels, boxes in units of 10 pixels -> x2
    x = np.clip((c[:, [0, 2]] - 4 / 28) / (20 / 28), 0, 1)
    expect = np.column_stack([x[:, 0], c[:, 1], x[:, 1], c[:, 3]]) * 2
    np.testing.assert_allclose(net.blobs["label"].data.reshape(-1, 8)[:, 3:7], expect, rtol=1e-5)
    net.layers[0].close()
