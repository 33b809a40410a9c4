"""NVCaffe SSD layers: Normalize/Permute gradients, PriorBox and DetectionOutput against hand-computed values,
and the NVCaffe SSD deploy nets of the zoo building with the blob shapes their prototxt implies."""
import math

import numpy as np
import pytest

from distcaffe.blob import Blob
from distcaffe.errors import DataError, NetError
from layer_harness import check_gradient, make_layer

RNG = np.random.default_rng(7)


def run(layer_text, arrays, phase=None):
    layer = make_layer(layer_text) if phase is None else make_layer(layer_text, phase=phase)
    bottom = []
    for i, a in enumerate(arrays):
        b = Blob(np.shape(a), np.float64, name="b%d" % i)
        b.data[...] = a
        bottom.append(b)
    top = [Blob(dtype=np.float64, name="t0")]
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return layer, top[0]


# --- Normalize -------------------------------------------------------------------------------------
@pytest.mark.parametrize("across", [True, False])
@pytest.mark.parametrize("shared", [True, False])
def test_normalize_gradient(across, shared):
    # per-channel scales all equal: there Caffe's backward is the exact gradient (see the next test)
    filler = '{ type: "gaussian" mean: 1 std: 0.3 }' if shared else '{ type: "constant" value: 1.7 }'
    text = ('type: "Normalize" norm_param { across_spatial: %s channel_shared: %s scale_filler %s }'
            % (str(across).lower(), str(shared).lower(), filler))
    check_gradient(text, [RNG.standard_normal((2, 3, 2, 3))])


@pytest.mark.parametrize("across", [True, False])
def test_normalize_backward_is_caffes_formula_for_unequal_channel_scales(across):
    # NVCaffe's backward multiplies by the channel's scale after forming x.dy without the scales:
    # dx = s_c (dy - x (x.dy) / norm^2) / norm. Parity with Caffe, not the exact gradient, is the contract.
    x = RNG.standard_normal((2, 3, 2, 2))
    dy = RNG.standard_normal((2, 3, 2, 2))
    text = ('type: "Normalize" norm_param { across_spatial: %s channel_shared: false '
            'scale_filler { type: "gaussian" mean: 1 std: 0.5 } }' % str(across).lower())
    layer, top = run(text, [x])
    s = layer.blobs[0].data.reshape(1, 3, 1, 1).copy()
    bottom = Blob(x.shape, np.float64)
    bottom.data[...] = x
    top.diff[...] = dy
    layer.backward([top], [True], [bottom])
    if across:
        norm = np.sqrt((x ** 2).reshape(2, -1).sum(1) + 1e-10).reshape(2, 1, 1, 1)
        a = (x * dy).reshape(2, -1).sum(1).reshape(2, 1, 1, 1)
    else:
        norm = np.sqrt((x ** 2).sum(1, keepdims=True) + 1e-10)
        a = (x * dy).sum(1, keepdims=True)
    np.testing.assert_allclose(bottom.diff, s * (dy - x * a / norm ** 2) / norm, rtol=1e-10)
    np.testing.assert_allclose(layer.blobs[0].diff, (top.data * dy).sum((0, 2, 3)) / s.ravel(), rtol=1e-10)


@pytest.mark.parametrize("across", [True, False])
def test_normalize_forward_values(across):
    x = RNG.standard_normal((2, 3, 2, 2))
    text = ('type: "Normalize" norm_param { across_spatial: %s channel_shared: false '
            'scale_filler { type: "constant" value: 2 } }' % str(across).lower())
    layer, top = run(text, [x])
    assert layer.blobs[0].shape == (3,)
    if across:
        norm = np.sqrt((x ** 2).reshape(2, -1).sum(1) + 1e-10).reshape(2, 1, 1, 1)
    else:
        norm = np.sqrt((x ** 2).sum(1, keepdims=True) + 1e-10)
    np.testing.assert_allclose(top.data, 2 * x / norm, rtol=1e-12)


def test_normalize_defaults_and_errors():
    layer, _ = run('type: "Normalize"', [RNG.standard_normal((1, 4, 2, 2))])
    assert layer.blobs[0].shape == () and layer.blobs[0].data == 1.0
    with pytest.raises(NetError, match="number of axes"):
        run('type: "Normalize"', [np.ones(3)])


# --- Permute ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", [[0, 2, 3, 1], [1, 0], [3], [0, 1, 2, 3]])
def test_permute_gradient_and_values(order):
    x = RNG.standard_normal((2, 3, 2, 4))
    text = 'type: "Permute" permute_param { %s }' % " ".join("order: %d" % o for o in order)
    full = order + [i for i in range(4) if i not in order]
    _, top = run(text, [x])
    np.testing.assert_array_equal(top.data, x.transpose(full))
    check_gradient(text, [x])


def test_permute_bad_orders():
    with pytest.raises(NetError, match="less than the input dimension"):
        run('type: "Permute" permute_param { order: 4 }', [np.ones((1, 2, 3, 4))])
    with pytest.raises(NetError, match="duplicate"):
        run('type: "Permute" permute_param { order: 1 order: 1 }', [np.ones((1, 2, 3, 4))])


# --- PriorBox --------------------------------------------------------------------------------------
def _boxes(cx, cy, w, h, img):
    return [(cx - w / 2) / img, (cy - h / 2) / img, (cx + w / 2) / img, (cy + h / 2) / img]


def test_priorbox_hand_computed():
    # 2x2 feature map on an 8x8 image: step 4, centres at 2 and 6. Priors per cell, in Caffe's order:
    # min (2x2), sqrt(min*max) = 4 (4x4), ar 2 (2*sqrt2 x 2/sqrt2), flipped ar 1/2.
    text = ('type: "PriorBox" prior_box_param { min_size: 2 max_size: 8 aspect_ratio: 2 flip: true '
            'variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 }')
    _, top = run(text, [np.zeros((1, 5, 2, 2)), np.zeros((1, 3, 8, 8))])
    assert top.shape == (1, 2, 2 * 2 * 4 * 4)
    r = math.sqrt(2.0)
    want = []
    for cy in (2.0, 6.0):
        for cx in (2.0, 6.0):
            for w, h in ((2, 2), (4, 4), (2 * r, 2 / r), (2 / r, 2 * r)):
                want += _boxes(cx, cy, w, h, 8.0)
    np.testing.assert_allclose(top.data[0, 0], want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(top.data[0, 1], [0.1, 0.1, 0.2, 0.2] * 16, rtol=1e-6)


def test_priorbox_clip_step_img_size_single_variance():
    # one bottom: image size and step given; 1x3 map, step 5 with offset 0: centres x = 0, 5, 10.
    text = ('type: "PriorBox" prior_box_param { min_size: 6.7 clip: true img_size: 10 step: 5 offset: 0 '
            'variance: 0.3 }')
    _, top = run(text, [np.zeros((1, 1, 1, 3))])
    want = []
    for cx in (0.0, 5.0, 10.0):
        want += _boxes(cx, 0.0, 6, 6, 10.0)  # min_size is truncated to int (6) as Caffe does
    np.testing.assert_allclose(top.data[0, 0], np.clip(want, 0, 1), rtol=1e-6)
    np.testing.assert_allclose(top.data[0, 1], 0.3, rtol=1e-6)


def test_priorbox_errors():
    img = np.zeros((1, 3, 8, 8))
    fm = np.zeros((1, 1, 2, 2))
    for text, msg in [('prior_box_param { }', "must provide min_size"),
                      ('prior_box_param { min_size: 4 max_size: 2 }', "greater than min_size"),
                      ('prior_box_param { min_size: 4 variance: 0.1 variance: 0.2 }', "1 or 4 variances"),
                      ('prior_box_param { min_size: 4 img_size: 8 img_h: 8 }', "not both")]:
        with pytest.raises(NetError, match=msg):
            run('type: "PriorBox" ' + text, [fm, img])
    with pytest.raises(NetError, match="second bottom"):
        run('type: "PriorBox" prior_box_param { min_size: 4 }', [fm])


# --- DetectionOutput -------------------------------------------------------------------------------
P0 = [0.1, 0.1, 0.5, 0.5]
P1 = [0.15, 0.1, 0.55, 0.5]   # IoU(P0, P1) = 0.14 / 0.18 = 0.78
VAR = [0.1, 0.1, 0.2, 0.2]


def det_out(params, loc, conf, priors=(P0, P1), variances=(VAR, VAR)):
    prior = np.array([list(np.ravel(priors)), list(np.ravel(variances))])[None]
    text = 'type: "DetectionOutput" detection_output_param { %s }' % params
    layer, top = run(text, [np.asarray(loc, float), np.asarray(conf, float), prior])
    return top.data.reshape(-1, 7)


def test_detection_output_nms_suppresses_overlap():
    conf = [[0.4, 0.6, 0.1, 0.9]]   # prior-major: (bg, cls1) per prior
    out = det_out("num_classes: 2 nms_param { nms_threshold: 0.45 }", np.zeros((1, 8)), conf)
    np.testing.assert_allclose(out, [[0, 1, 0.9] + P1], rtol=1e-6)


def test_detection_output_corner_decode_keep_top_k_two_images():
    # CORNER with encoded variance: xmin of prior 0 moves by 0.1 * 1. With nms_threshold 1 nothing is
    # suppressed; keep_top_k 1 keeps image 0's best (prior 1, 0.9) and image 1's best (prior 0, 0.8).
    loc = np.zeros((2, 8))
    loc[:, 0] = 1.0
    conf = [[0.4, 0.6, 0.1, 0.9], [0.2, 0.8, 0.3, 0.7]]
    out = det_out("num_classes: 2 keep_top_k: 1 nms_param { nms_threshold: 1.0 }", loc, conf)
    np.testing.assert_allclose(out, [[0, 1, 0.9] + P1, [1, 1, 0.8, 0.2, 0.1, 0.5, 0.5]], rtol=1e-6)
    out = det_out("num_classes: 2 nms_param { nms_threshold: 1.0 }", loc, conf)
    np.testing.assert_allclose(out[:, :3], [[0, 1, 0.9], [0, 1, 0.6], [1, 1, 0.8], [1, 1, 0.7]], rtol=1e-6)


def test_detection_output_keep_top_k_groups_by_label():
    # three classes; the two best over all classes are (cls 2, prior 0) 0.7 and (cls 1, prior 1) 0.5:
    # output goes label by label (1 then 2), as Caffe's map iteration does.
    conf = [[0.1, 0.2, 0.7, 0.1, 0.5, 0.4]]
    out = det_out("num_classes: 3 keep_top_k: 2 nms_param { nms_threshold: 1.0 }", np.zeros((1, 8)), conf)
    np.testing.assert_allclose(out, [[0, 1, 0.5] + P1, [0, 2, 0.7] + P0], rtol=1e-6)


def test_detection_output_center_size_top_k_and_threshold():
    # CENTER_SIZE: prior (0.2,0.2,0.6,0.6) is centre (0.4,0.4), size 0.4. loc (1, -1, ln2/0.2, 0) gives centre
    # (0.44, 0.36), width 0.8, height 0.4. Prior 1 (score 0.3) is under confidence_threshold 0.35.
    pr = ([0.2, 0.2, 0.6, 0.6], [0.7, 0.7, 0.9, 0.9])
    loc = [[1.0, -1.0, math.log(2) / 0.2, 0.0, 0, 0, 0, 0]]
    conf = [[0.5, 0.5, 0.7, 0.3]]
    out = det_out("num_classes: 2 code_type: CENTER_SIZE confidence_threshold: 0.35", loc, conf, pr)
    np.testing.assert_allclose(out, [[0, 1, 0.5, 0.04, 0.16, 0.84, 0.56]], rtol=1e-5, atol=1e-6)
    # top_k 1 keeps only the best candidate before NMS
    out = det_out("num_classes: 2 code_type: CORNER_SIZE nms_param { top_k: 1 }", np.zeros((1, 8)),
                  [[0.5, 0.2, 0.7, 0.3]], pr)
    np.testing.assert_allclose(out, [[0, 1, 0.3] + pr[1]], rtol=1e-6)


def test_detection_output_nothing_detected_placeholder():
    out = det_out("num_classes: 2 confidence_threshold: 0.99", np.zeros((2, 8)), np.full((2, 4), 0.5))
    np.testing.assert_array_equal(out, [[0] + [-1] * 6, [1] + [-1] * 6])


def test_detection_output_unshared_location():
    # share_location false: loc holds (bg, cls1) boxes per prior; class 1 uses its own offsets.
    loc = np.zeros((1, 16))
    loc[0, 4 + 1] = 1.0            # prior 0, class 1: ymin + 0.1
    out = det_out("num_classes: 2 share_location: false", loc, [[0.1, 0.9, 0.9, 0.1]])
    np.testing.assert_allclose(out, [[0, 1, 0.9, 0.1, 0.2, 0.5, 0.5]], rtol=1e-6)


def test_detection_output_errors():
    with pytest.raises(NetError, match="num_classes"):
        det_out("", np.zeros((1, 8)), np.zeros((1, 4)))
    with pytest.raises(NetError, match="location predictions"):
        det_out("num_classes: 2", np.zeros((1, 12)), np.zeros((1, 4)))
    with pytest.raises(NetError, match="eta"):
        det_out("num_classes: 2 nms_param { eta: 1.5 }", np.zeros((1, 8)), np.zeros((1, 4)))
    with pytest.raises(DataError, match="output_format .. is unknown .known: VOC, COCO, ILSVRC"):
        det_out('num_classes: 2 save_output_param { output_directory: "/nonexistent" label_map_file: "a" '
                'name_size_file: "b" }', np.zeros((1, 8)), np.zeros((1, 4)))


@pytest.mark.parametrize("fmt,name,expect", [
    # P1 = (.15, .1, .55, .5) in a 100 x 200 (h x w) image: x 30, y 10, w 80, h 40 pixels
    ("VOC", "det_cat.txt", "img7 0.9 30 10 110 50\n"),
    ("ILSVRC", "det.txt", "img7 1 0.9 30 10 110 50\n"),
    ("COCO", "det.json", [{"image_id": "img7", "category_id": "cat", "bbox": [30.0, 10.0, 80.0, 40.0],
                           "score": 0.9}])])
def test_save_output_param_writes_nvcaffe_result_files(tmp_path, fmt, name, expect):
    import json
    (tmp_path / "labels.prototxt").write_text('item { name: "bg" label: 0 } item { name: "cat" label: 1 }')
    (tmp_path / "sizes.txt").write_text("img7 100 200\nimg8 50 50\n")
    params = ('num_classes: 2 nms_param { nms_threshold: 0.45 } save_output_param { output_directory: "%s/out" '
              'output_name_prefix: "det%s" output_format: "%s" label_map_file: "%s/labels.prototxt" '
              'name_size_file: "%s/sizes.txt" num_test_image: 1 }'
              % (tmp_path, "_" if fmt == "VOC" else "", fmt, tmp_path, tmp_path))
    det_out(params, np.zeros((1, 8)), [[0.4, 0.6, 0.1, 0.9]])
    text = (tmp_path / "out" / name).read_text()
    if fmt == "COCO":
        got = json.loads(text)
        assert got[0]["score"] == pytest.approx(0.9) and got[0]["bbox"] == pytest.approx(expect[0]["bbox"])
        assert (got[0]["image_id"], got[0]["category_id"]) == ("img7", "cat")
    else:
        assert text == expect


def test_save_output_param_maps_fit_large_size_and_pad_boxes_to_pixels(tmp_path):
    # a 100 x 200 image padded into 300 x 300: NVCaffe's padding (300 - 300 / 2) / 2 = 75 rows, so the input's
    # y .25 .. .75 is the image; P1 (.15, .1, .55, .5) -> y (.1 - .25) / .5 clipped to 0 .. (.5 - .25) / .5 = .5
    (tmp_path / "labels.prototxt").write_text('item { name: "bg" label: 0 } item { name: "cat" label: 1 }')
    (tmp_path / "sizes.txt").write_text("img7 100 200\n")
    det_out('num_classes: 2 save_output_param { output_directory: "%s/out" output_name_prefix: "det_" '
            'output_format: "VOC" label_map_file: "%s/labels.prototxt" name_size_file: "%s/sizes.txt" '
            'resize_param { resize_mode: FIT_LARGE_SIZE_AND_PAD height: 300 width: 300 } }'
            % (tmp_path, tmp_path, tmp_path), np.zeros((1, 8)), [[0.4, 0.6, 0.1, 0.9]])
    assert (tmp_path / "out" / "det_cat.txt").read_text() == "img7 0.9 30 0 110 50\n"


def _caffe_reference(loc, conf, prior, num_classes, nms_threshold, top_k, keep_top_k, conf_thr, eta):
    """A line-by-line Python port of NVCaffe's DetectionOutput Forward_cpu (CENTER_SIZE, shared location)."""
    num, npri = loc.shape[0], prior.shape[2] // 4
    pri = prior[0, 0].reshape(npri, 4)
    var = prior[0, 1].reshape(npri, 4)

    def decode(p, v, l):
        pw, ph = p[2] - p[0], p[3] - p[1]
        cx, cy = v[0] * l[0] * pw + (p[0] + p[2]) / 2, v[1] * l[1] * ph + (p[1] + p[3]) / 2
        w, h = math.exp(v[2] * l[2]) * pw, math.exp(v[3] * l[3]) * ph
        return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]

    def size(b):
        return 0.0 if b[2] < b[0] or b[3] < b[1] else (b[2] - b[0]) * (b[3] - b[1])

    def iou(a, b):
        if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
            return 0.0
        iw, ih = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
        if iw > 0 and ih > 0:
            return iw * ih / (size(a) + size(b) - iw * ih)
        return 0.0

    rows = []
    for i in range(num):
        boxes = [decode(pri[p], var[p], loc[i].reshape(npri, 4)[p]) for p in range(npri)]
        scores = conf[i].reshape(npri, num_classes)
        indices = {}
        for c in range(1, num_classes):
            cand = sorted([(scores[p, c], p) for p in range(npri) if scores[p, c] > conf_thr],
                          key=lambda t: -t[0])[:top_k]
            kept, thr = [], nms_threshold
            for _, p in cand:
                keep = all(iou(boxes[p], boxes[k]) <= thr for k in kept)
                if keep:
                    kept.append(p)
                    if eta < 1 and thr > 0.5:
                        thr *= eta
            indices[c] = kept
        if sum(len(v) for v in indices.values()) > keep_top_k:
            pairs = sorted([(scores[p, c], c, p) for c in indices for p in indices[c]], key=lambda t: -t[0])
            new = {}
            for _, c, p in pairs[:keep_top_k]:
                new.setdefault(c, []).append(p)
            indices = new
        for c in sorted(indices):
            rows += [[i, c, scores[p, c]] + boxes[p] for p in indices[c]]
    return np.array(rows)


@pytest.mark.parametrize("eta, keep_top_k, rows", [(1.0, 7, 14), (1.0, 100, 26), (0.9, 100, 20)])
def test_detection_output_matches_reference_port(monkeypatch, eta, keep_top_k, rows):
    # random overlapping priors/offsets/scores (NMS drops 22 of 48 candidates, eta 0.9 six more, keep_top_k 7
    # cuts each image to 7); NMS runs a few candidates at a time to exercise the chunked overlaps
    import distcaffe.layers.detection as det
    real = det.nms_fast
    monkeypatch.setattr(det, "nms_fast", lambda *a: real(*a, chunk=3))
    rng = np.random.default_rng(3)
    num, npri, ncls = 2, 24, 3
    c = rng.uniform(0.4, 0.6, (npri, 2))
    wh = rng.uniform(0.2, 0.4, (npri, 2))
    pri = np.concatenate([c - wh / 2, c + wh / 2], 1).astype(np.float32)
    prior = np.stack([pri.ravel(), np.tile(np.float32([0.1, 0.1, 0.2, 0.2]), npri)])[None].astype(np.float64)
    loc = (0.5 * rng.standard_normal((num, npri * 4))).astype(np.float32).astype(np.float64)
    conf = rng.uniform(0, 1, (num, npri * ncls)).astype(np.float32).astype(np.float64)
    params = ("num_classes: 3 code_type: CENTER_SIZE keep_top_k: %d confidence_threshold: 0.2 "
              "nms_param { nms_threshold: 0.55 top_k: 12 eta: %g }" % (keep_top_k, eta))
    text = 'type: "DetectionOutput" detection_output_param { %s }' % params
    _, top = run(text, [loc, conf, prior])
    ref = _caffe_reference(loc, conf, prior, ncls, 0.55, 12, keep_top_k, 0.2, eta)
    assert ref.shape == (rows, 7)
    np.testing.assert_allclose(top.data.reshape(-1, 7), ref, rtol=1e-5, atol=1e-6)

# --- the zoo's NVCaffe SSD deploy nets ---------------------------------------------------------------
def _net(zoo, rel):
    from distcaffe.net import TEST, Net
    return Net(str(zoo / "NVIDIA__caffe" / rel), TEST)


def test_zoo_vgg_coco_ssd300_shapes(zoo):
    net = _net(zoo, "models/VGGNet/coco/SSD_300x300/deploy.prototxt")
    b = net.blobs
    assert b["conv4_3_norm"].shape == (1, 512, 38, 38)
    # conv4_3: min 21 max 45 ar 2 flip -> 4 priors per cell; fc7 (19x19): ar 2,3 flip -> 6 priors
    assert b["conv4_3_norm_mbox_priorbox"].shape == (1, 2, 38 * 38 * 4 * 4)
    assert b["fc7_mbox_priorbox"].shape == (1, 2, 19 * 19 * 6 * 4)
    assert b["conv4_3_norm_mbox_loc_perm"].shape == (1, 38, 38, 16)
    # SSD300's 8732 priors: 38^2*4 + 19^2*6 + 10^2*6 + 5^2*6 + 3^2*4 + 1*4
    assert b["mbox_priorbox"].shape == (1, 2, 8732 * 4)
    assert b["mbox_loc"].shape == (1, 8732 * 4)
    assert b["mbox_conf_flatten"].shape == (1, 8732 * 81)
    assert b["detection_out"].shape == (1, 1, 1, 7)


def test_zoo_faceboxes_ssd_shapes(zoo):
    net = _net(zoo, "examples/faceboxes/SSD.prototxt")
    b = net.blobs
    # 1080x1920 input; 2x2/2 pools (Caffe rounds up): conv3_3 270x480, conv4_3 135x240, conv5_3 68x120,
    # fc7 (pad 3 conv after pool5 34x60) 38x64; one prior (min_size only) per cell.
    assert b["conv3_3_norm"].shape == (1, 256, 270, 480)
    assert b["conv3_3_norm_mbox_loc_perm"].shape == (1, 270, 480, 4)
    assert b["conv3_3_norm_mbox_priorbox"].shape == (1, 2, 270 * 480 * 4)
    assert b["conv4_3_norm_mbox_priorbox"].shape == (1, 2, 135 * 240 * 4)
    assert b["conv5_3_norm_mbox_priorbox"].shape == (1, 2, 68 * 120 * 4)
    assert b["fc7_mbox_priorbox"].shape == (1, 2, 38 * 64 * 4)
    n = b["mbox_priorbox"].shape[2]
    assert b["mbox_loc"].shape == (1, n) and b["mbox_conf_flatten"].shape == (1, n // 2)
    assert b["detection_out"].shape == (1, 1, 1, 7)
