"""MultiBoxLoss and the SSD box utilities: matching and mining worked out by hand, the loss of a hand-built case
recomputed in numpy from the formulas, and float64 finite-difference gradients per loss type and mining mode."""
import itertools

import numpy as np
import pytest

from distcaffe.errors import NetError
from distcaffe.layers.bbox_util import apply_nms, average_precision, encode_boxes, match_boxes
from distcaffe.proto import caffe_pb2
from layer_harness import check_gradient, setup_layer

MB = caffe_pb2.MultiBoxLossParameter
QUADRANTS = np.array([[0, 0, .5, .5], [.5, 0, 1, .5], [0, .5, .5, 1], [.5, .5, 1, 1]], np.float32)


def prior_blob(boxes, variance=(1, 1, 1, 1)):
    boxes = np.asarray(boxes, np.float32)
    return np.stack([boxes.reshape(-1), np.tile(np.float32(variance), len(boxes))])[None]


def gt_blob(rows):
    return np.asarray(rows, np.float64).reshape(1, 1, -1, 8)


def test_bipartite_then_per_prediction_matching_by_hand():
    priors = np.vstack([QUADRANTS, [[0, 0, 1, 1]]]).astype(np.float32)
    gt = np.array([[0, 0, .5, .5], [0, 0, .6, .6]], np.float32)
    # IoU: p0-A 1, p0-B .694, p4-A .25, p4-B .36, p1/p2-B .05/.56 = .089, p3-B .01/.60 = .0167
    m, ov = match_boxes(gt, priors, MB.BIPARTITE, 0.5)
    assert m.tolist() == [0, -1, -1, -1, 1]                       # p0 takes A (1.0), then p4 takes B (.36)
    np.testing.assert_allclose(ov, [1, .05 / .56, .05 / .56, .01 / .6, .36], rtol=1e-5)
    m, _ = match_boxes(gt, priors, MB.PER_PREDICTION, 0.05)
    assert m.tolist() == [0, 1, 1, -1, 1]                          # p1, p2 reach .05 with B; p3 does not
    m, _ = match_boxes(gt, np.vstack([priors, [[-.1, 0, .5, .5]]]).astype(np.float32), MB.PER_PREDICTION, .5,
                       ignore_cross_boundary=True)
    assert m[-1] == -2


def test_encode_center_size_by_hand():
    prior = np.array([[.2, .2, .6, .4]], np.float32)               # centre (.4, .3), size .4 x .2
    gt = np.array([[.3, .1, .7, .5]], np.float32)                  # centre (.5, .3), size .4 x .4
    got = encode_boxes(np, gt, prior, np.array([[.1, .1, .2, .2]], np.float32),
                       caffe_pb2.PriorBoxParameter.CENTER_SIZE, False)
    np.testing.assert_allclose(got[0], [.1 / .4 / .1, 0, 0, np.log(2) / .2], rtol=1e-5, atol=1e-6)


def test_nms_keeps_best_and_drops_overlaps():
    boxes = np.array([[0, 0, 1, 1], [0, 0, .9, 1], [0, 0, .2, .2], [.5, .5, .5, .5]], np.float32)
    assert apply_nms(boxes, np.array([.9, .8, .7, .95], np.float32), .5) == [0, 2]   # box 3 is too small


def multibox_text(extra="", **fields):
    p = dict(num_classes=2, background_label_id=0, overlap_threshold=0.5, neg_pos_ratio=2.0, neg_overlap=0.5,
             code_type="CORNER")
    p.update(fields)
    return 'type: "MultiBoxLoss" multibox_loss_param { %s %s }' % (" ".join("%s: %s" % kv for kv in p.items()), extra)


def hand_case():
    loc = np.zeros((1, 4, 4))
    loc[0, 0] = [.55, .05, -2, 0]                                  # target gt - prior = [.05, .05, 0, 0]
    conf = np.array([[[0, 0], [0, 2], [0, 1], [1, 0]]], np.float64)
    gt = gt_blob([[0, 1, 0, .05, .05, .5, .5, 0]])
    return [loc.reshape(1, 16), conf.reshape(1, 8), prior_blob(QUADRANTS), gt]


def run(text, arrays):
    layer, bottom, top = setup_layer(text, arrays)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return layer, bottom, top


@pytest.mark.parametrize("ratio,norm,expect_negs", [(2.0, "VALID", [1, 2]), (3.0, "VALID", [1, 2, 3]),
                                                    (2.0, "FULL", [1, 2]), (2.0, "NONE", [1, 2])])
def test_hand_built_max_negative_loss(ratio, norm, expect_negs):
    arrays = hand_case()
    text = multibox_text(neg_pos_ratio=ratio).replace("}", "} loss_param { normalization: %s }" % norm)
    layer, bottom, top = run(text, arrays)
    # smooth L1 of d = [.5, 0, -2, 0]: .5 * .25 + (2 - .5) = 1.625; softmax losses: p0 (label 1) log 2,
    # negatives log(1 + e^2), log(1 + e), log(1 + e^-1): the `ratio` per positive with the highest loss
    conf_losses = {1: np.log1p(np.e ** 2), 2: np.log1p(np.e), 3: np.log1p(np.exp(-1))}
    total = 1.625 + np.log(2) + sum(conf_losses[j] for j in expect_negs)
    denom = {"VALID": 1, "FULL": 4, "NONE": 1}[norm]
    assert float(top[0].data) == pytest.approx(total / denom, rel=1e-6)
    assert np.nonzero(layer.select[0])[0].tolist() == [0] + expect_negs


def test_hand_built_l2_logistic_without_mining():
    arrays = hand_case()
    layer, bottom, top = run(multibox_text(loc_loss_type="L2", conf_loss_type="LOGISTIC", mining_type="NONE"),
                             arrays)
    x = arrays[1].reshape(4, 2)
    t = np.zeros((4, 2))
    t[0, 1] = 1                                                    # the matched prior's label; others all zero
    bce = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    loc_l2 = (.5 ** 2 + 2 ** 2) / 2
    assert float(top[0].data) == pytest.approx(loc_l2 + bce.sum(), rel=1e-6)


def test_hard_example_keeps_the_sample_size_highest_losses():
    arrays = hand_case()
    layer, _, top = run(multibox_text(mining_type="HARD_EXAMPLE", sample_size=2), arrays)
    # losses (conf + loc for the positive): p0 .693 + 1.625 = 2.32, p1 2.127, p2 1.313, p3 .313 -> p0, p1
    assert layer.match[0, 0].tolist() == [0, -1, -1, -1] and np.nonzero(layer.select[0])[0].tolist() == [0, 1]
    layer, _, top = run(multibox_text(mining_type="HARD_EXAMPLE", sample_size=1), [a.copy() for a in arrays])
    assert np.nonzero(layer.select[0])[0].tolist() == [0]
    arrays[0][0, :4] = [.05, .05, 0, 0]                            # perfect box: p0's loss .693 < p1, p2
    layer, _, top = run(multibox_text(mining_type="HARD_EXAMPLE", sample_size=2), arrays)
    assert layer.match[0, 0].tolist() == [-1, -1, -1, -1] and layer.num_matches == 0
    assert np.nonzero(layer.select[0])[0].tolist() == [1, 2]       # the dropped positive is no negative
    assert float(top[0].data) == pytest.approx(np.log1p(np.e ** 2) + np.log1p(np.e), rel=1e-6)


def test_difficult_ground_truth_and_background_rows_are_skipped():
    arrays = hand_case()
    arrays[3] = gt_blob([[0, 1, 0, .05, .05, .5, .5, 1], [-1, 0, 0, 0, 0, 0, 0, 0]])
    layer, _, _ = run(multibox_text(use_difficult_gt="false"), arrays)
    assert layer.num_matches == 0
    layer, _, _ = run(multibox_text(ignore_difficult_gt="true"), [a.copy() for a in arrays])
    assert layer.num_matches == 0
    layer, _, _ = run(multibox_text(), [a.copy() for a in arrays])
    assert layer.num_matches == 1


def random_case(seed, num=2, classes=3):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(.15, .85, (12, 2))
    sizes = rng.uniform(.1, .4, (12, 2))
    priors = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1).clip(0, 1)
    rows = []
    for i in range(num):
        for k in range(2):
            b = priors[rng.integers(12)] + rng.uniform(-.03, .03, 4)
            rows.append([i, 1 + k % (classes - 1), k, *b, 0])
    loc = rng.normal(0, .5, (num, 12 * 4))
    conf = rng.normal(0, 1, (num, 12 * classes))
    return [loc, conf, prior_blob(priors, (.1, .1, .2, .2)), gt_blob(rows)]


@pytest.mark.parametrize("loc_type,conf_type,mining", list(itertools.product(
    ["SMOOTH_L1", "L2"], ["SOFTMAX", "LOGISTIC"], ["NONE", "MAX_NEGATIVE", "HARD_EXAMPLE"])))
def test_multibox_gradient(loc_type, conf_type, mining):
    text = multibox_text(num_classes=3, loc_loss_type=loc_type, conf_loss_type=conf_type, mining_type=mining,
                         code_type="CENTER_SIZE", sample_size=6, neg_pos_ratio=1.5)
    layer = check_gradient(text, random_case(3), check_bottoms=[0, 1], check_params=False)
    assert layer.num_matches >= 2                                   # both images have matched priors
    if mining != "NONE":
        assert layer.num_matches < layer.select.sum() < layer.select.size


def test_multibox_gradient_with_bp_inside_and_nms_mining():
    text = multibox_text("nms_param { nms_threshold: 0.3 }", num_classes=3, code_type="CENTER_SIZE",
                         bp_inside="true", neg_pos_ratio=2.0)
    layer = check_gradient(text, random_case(5), check_bottoms=[0, 1], check_params=False)
    assert layer.num_matches > 0 and layer.select.sum() > layer.num_matches


def test_multibox_errors():
    with pytest.raises(NetError, match="num_classes"):
        setup_layer('type: "MultiBoxLoss"', hand_case())
    with pytest.raises(NetError, match="share_location: false needs mining_type: NONE"):
        setup_layer(multibox_text(share_location="false"), hand_case())      # MAX_NEGATIVE is the default
    with pytest.raises(NetError, match=r"4 priors x 2 location classes, loc 1 16"):
        setup_layer(multibox_text(share_location="false", mining_type="NONE"), hand_case())
    bad = hand_case()
    bad[1] = np.zeros((1, 6))
    with pytest.raises(NetError, match="number of priors must match number of confidence predictions"):
        setup_layer(multibox_text(), bad)


def test_average_precision_versions_by_hand():
    # 4 detections, scores .9 .8 .7 .6 -> tp 1 0 1 0, 3 ground truths:
    # precision 1, .5, .667, .5; recall .333, .333, .667, .667
    tp = [(.9, 1), (.8, 0), (.7, 1), (.6, 0)]
    fp = [(s, 1 - t) for s, t in tp]
    ap, prec, rec = average_precision(tp, fp, 3, "Integral")
    assert ap == pytest.approx(1 / 3 + (2 / 3) * (1 / 3), rel=1e-6)
    assert prec == pytest.approx([1, .5, 2 / 3, .5]) and rec == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3])
    ap, _, _ = average_precision(tp, fp, 3, "MaxIntegral")
    assert ap == pytest.approx(1 / 3 * 1 + 1 / 3 * (2 / 3), rel=1e-6)
    ap, _, _ = average_precision(tp, fp, 3, "11point")
    # max precision at recall >= 0, .1, .2, .3: 1; at .4 .. .6: 2/3; at .7 .. 1: 0
    assert ap == pytest.approx((4 * 1 + 3 * (2 / 3)) / 11, rel=1e-6)
    assert average_precision([], [], 3, "11point")[0] == 0
    with pytest.raises(ValueError, match="unknown ap_version"):
        average_precision(tp, fp, 3, "VOC")


def evaluate(dets, gts, **param):
    fields = " ".join("%s: %s" % kv for kv in dict(num_classes=3, background_label_id=0, **param).items())
    layer, bottom, top = setup_layer('type: "DetectionEvaluate" detection_evaluate_param { %s }' % fields,
                                     [np.asarray(dets, np.float64).reshape(1, 1, -1, 7), gt_blob(gts)])
    layer.forward(bottom, top)
    return top[0].data.reshape(-1, 5).tolist()


def test_detection_evaluate_rows_by_hand():
    gts = [[0, 1, 0, 0, 0, .5, .5, 0], [0, 1, 1, .5, .5, 1, 1, 1], [0, 2, 0, 0, 0, 1, 1, 0],
           [1, 1, 0, 0, 0, .4, .4, 0]]
    dets = [[0, 1, .6, 0, 0, .5, .5],        # duplicate of the .9 one on gt 0 -> fp
            [0, 1, .9, 0, 0, .5, .45],       # IoU .9 with gt 0 -> tp
            [0, 1, .8, .5, .5, 1, 1],        # on the difficult gt -> neither (evaluate_difficult_gt false)
            [0, 1, .7, .2, .6, .3, .7],      # no overlap -> fp
            [1, 2, .5, 0, 0, .4, .4],        # image 1 has no label-2 gt -> fp
            [-1, 0, 0, 0, 0, 0, 0]]          # empty rows are skipped
    rows = evaluate(dets, gts, evaluate_difficult_gt="false")
    assert rows[:2] == [[-1, 1, 2, -1, -1], [-1, 2, 1, -1, -1]]     # 2 non-difficult label-1 gts, 1 label-2
    got = [[r[0], r[1], round(r[2], 6), r[3], r[4]] for r in rows[2:]]
    assert got == [[0, 1, .9, 1, 0], [0, 1, .8, 0, 0], [0, 1, .7, 0, 1], [0, 1, .6, 0, 1], [1, 2, .5, 0, 1]]
    rows = evaluate(dets, gts, evaluate_difficult_gt="true")
    assert rows[0] == [-1, 1, 3, -1, -1] and [r[3:] for r in rows[2:4]] == [[1, 0], [1, 0]]


def test_detection_evaluate_in_pixels_with_name_size_file(tmp_path):
    (tmp_path / "sizes.txt").write_text("a 10 20\n")
    # in a 10 x 20 image (h x w): gt [0, 0, 10, 5] px, detection [0, 0, 8, 5] px:
    # pixel IoU (9 * 6) / (11 * 6) = .818; normalized IoU .8
    gts = [[0, 1, 0, 0, 0, .5, .5, 0]]
    dets = [[0, 1, .9, 0, 0, .4, .5]]
    assert evaluate(dets, gts, overlap_threshold=.81)[-1][3:] == [0, 1]
    assert evaluate(dets, gts, overlap_threshold=.81, name_size_file='"%s"' % (tmp_path / "sizes.txt"))[-1][3:] \
        == [1, 0]


def test_solver_detection_eval_reports_map():
    import distcaffe
    from distcaffe import solvers
    from distcaffe.io import parse_net_text
    distcaffe.set_mode_cpu()
    train = ('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'
             'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" inner_product_param { num_output: 1 } }'
             '\nlayer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "ip" top: "loss" }')
    test = ('layer { name: "det" type: "Input" top: "det" input_param { shape { dim: 1 dim: 1 dim: 3 dim: 7 } } }\n'
            'layer { name: "gt" type: "Input" top: "gt" input_param { shape { dim: 1 dim: 1 dim: 2 dim: 8 } } }\n'
            'layer { name: "eval" type: "DetectionEvaluate" bottom: "det" bottom: "gt" top: "eval" '
            'detection_evaluate_param { num_classes: 2 } }')
    p = caffe_pb2.SolverParameter(base_lr=0.1, lr_policy="fixed", test_iter=[2], test_interval=100,
                                  eval_type="detection", ap_version="Integral")
    p.train_net_param.CopyFrom(parse_net_text(train))
    p.test_net_param.add().CopyFrom(parse_net_text(test))
    s = solvers.get_solver(p)
    net = s.test_nets[0]
    net.blobs["gt"].data[...] = gt_blob([[0, 1, 0, 0, 0, .5, .5, 0], [0, 1, 1, .5, .5, 1, 1, 0]])
    net.blobs["det"].data[...] = np.array([[0, 1, .9, 0, 0, .5, .5], [0, 1, .8, .1, .6, .2, .7],
                                           [0, 1, .7, .5, .5, 1, 1]]).reshape(1, 1, 3, 7)
    # twice the same batch: 4 gts; by score .9 .9 tp, .8 .8 fp, .7 .7 tp -> precision 1 1 .667 .5 .6 .667,
    # recall .25 .5 .5 .5 .75 1 -> Integral AP = .5 * 1 + .25 * .6 + .25 * .667
    means = s.test(0)
    assert means["eval"][0] == pytest.approx(.5 + .25 * .6 + .25 * 4 / 6, rel=1e-5)


def test_ground_truth_label_beyond_num_classes_is_a_clear_error():
    arrays = hand_case()
    arrays[3] = gt_blob([[0, 2, 0, .05, .05, .5, .5, 0]])
    with pytest.raises(NetError, match="ground truth label 2 in b3 is not below num_classes 2"):
        run(multibox_text(), arrays)


# --- share_location: false (one box per class and prior; NVCaffe allows it only without mining) -------------
def unshared_case():
    """4 quadrant priors, CORNER code, variance 1 (decoded = prior + offset); 3 classes (0 background).
    gt A (label 1) [.05 .05 .5 .5], gt B (label 2) [0 0 .45 .5]. Class 1's offsets decode p0 and p1 onto
    [0 0 .5 .5] (IoU .81 with A); class 2's decode p0 onto [0 0 .5 .5] (IoU .9 with B) and p2 onto
    [0 .05 .5 .5] (.2025 / .2475 = .818 with B); the background class's offsets are never looked at."""
    loc = np.zeros((4, 3, 4))
    loc[:, 0] = [[.3, -.2, .1, .4]] * 4
    loc[1, 1] = [-.5, 0, -.5, 0]
    loc[2, 2] = [0, -.45, 0, -.5]
    conf = np.array([[.2, -.1, .3], [0, .5, -.4], [1, -1, .2], [-.3, .6, .1]])
    gt = gt_blob([[0, 1, 0, .05, .05, .5, .5, 0], [0, 2, 0, 0, 0, .45, .5, 0]])
    return [loc.reshape(1, 48), conf.reshape(1, 12), prior_blob(QUADRANTS), gt]


def unshared_text(**fields):
    return multibox_text(num_classes=3, share_location="false", mining_type="NONE", match_type="PER_PREDICTION",
                         **fields)


def expected_loss(arrays, matches, conf_loss_type, loc_loss_type, norm):
    """The loss from the formulas, given the matches [(location class, prior, gt row)] worked out by hand."""
    loc = arrays[0].reshape(4, 3, 4)
    x = arrays[1].reshape(4, 3)
    gt = arrays[3].reshape(-1, 8)
    d = np.array([loc[j, c] - (gt[g, 3:7] - QUADRANTS[j]) for c, j, g in matches])
    loc_loss = np.where(np.abs(d) < 1, .5 * d * d, np.abs(d) - .5).sum() if loc_loss_type == "SMOOTH_L1" \
        else (d * d).sum() / 2
    targets = np.zeros((4, 3))
    for _, j, g in matches:
        targets[j, int(gt[g, 1])] = 1                  # logistic: a 1 for each class the prior is matched in
    if conf_loss_type == "SOFTMAX":
        label = [0] * 4
        for _, j, g in sorted(matches):                # classes written in order, the last one stays
            label[j] = int(gt[g, 1])
        logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
        conf_loss = -sum(logp[j, label[j]] for j in range(4))
    else:
        conf_loss = (np.log1p(np.exp(x)) - x * targets).sum()
    return (loc_loss + conf_loss) / norm


@pytest.mark.parametrize("conf_type,loc_type", [("SOFTMAX", "SMOOTH_L1"), ("LOGISTIC", "L2")])
def test_unshared_hand_built_matching_per_class(conf_type, loc_type):
    arrays = unshared_case()
    text = unshared_text(use_prior_for_matching="false", conf_loss_type=conf_type, loc_loss_type=loc_type)
    layer, _, top = run(text, arrays)
    # class 1 against A only: bipartite p0 (.81, the first of two equal), per prediction p1 (.81 >= .5);
    # class 2 against B only: bipartite p0 (.9), per prediction p2 (.818); p0 is matched in both classes
    assert layer.match[0].tolist() == [[-1] * 4, [0, 0, -1, -1], [1, -1, 1, -1]]
    matches = [(1, 0, 0), (1, 1, 0), (2, 0, 1), (2, 2, 1)]
    assert float(top[0].data) == pytest.approx(expected_loss(arrays, matches, conf_type, loc_type, 4), rel=1e-6)
    # the priors themselves (use_prior_for_matching): p0 overlaps A .81 and B .9, no other prior touches either;
    # the one bipartite match p0-B lands in B's class 2, A stays unmatched
    layer, _, top = run(unshared_text(conf_loss_type=conf_type, loc_loss_type=loc_type), arrays)
    assert layer.match[0].tolist() == [[-1] * 4, [-1] * 4, [1, -1, -1, -1]]
    assert float(top[0].data) == pytest.approx(expected_loss(arrays, [(2, 0, 1)], conf_type, loc_type, 1), rel=1e-6)


def test_unshared_backward_lands_in_the_matched_class_slots():
    arrays = unshared_case()
    layer, bottom, top = run(unshared_text(use_prior_for_matching="false"), arrays)
    top[0].diff[...] = 1
    layer.backward(top, [True, True, False, False], bottom)
    grad = bottom[0].diff.reshape(4, 3, 4)
    hit = np.abs(grad).sum(axis=2) > 0
    assert hit.tolist() == [[False, True, True], [False, True, False], [False, False, True], [False] * 3]


def unshared_random_case(seed, classes=3):
    loc, conf, priors, gt = random_case(seed, classes=classes)
    rng = np.random.default_rng(seed + 100)
    return [rng.normal(0, .3, (loc.shape[0], 12 * classes * 4)), conf, priors, gt]


@pytest.mark.parametrize("loc_type,conf_type,use_prior,norm", [
    ("SMOOTH_L1", "SOFTMAX", "true", "VALID"), ("SMOOTH_L1", "LOGISTIC", "false", "BATCH_SIZE"),
    ("L2", "SOFTMAX", "false", "FULL"), ("L2", "LOGISTIC", "true", "NONE")])
def test_unshared_gradient(loc_type, conf_type, use_prior, norm):
    text = unshared_text(loc_loss_type=loc_type, conf_loss_type=conf_type, use_prior_for_matching=use_prior,
                         code_type="CENTER_SIZE").replace("}", "} loss_param { normalization: %s }" % norm, 1)
    layer = check_gradient(text, unshared_random_case(7), check_bottoms=[0, 1], check_params=False)
    assert layer.num_matches >= 2 and (layer.match[:, 0] == -1).all()     # background boxes never match


def test_unshared_gradient_with_bp_inside():
    text = unshared_text(use_prior_for_matching="false", code_type="CENTER_SIZE", bp_inside="true")
    layer = check_gradient(text, unshared_random_case(11), check_bottoms=[0, 1], check_params=False)
    assert layer.num_matches >= 2


@pytest.mark.parametrize("conf_type,loc_type", [("SOFTMAX", "SMOOTH_L1"), ("LOGISTIC", "L2")])
@pytest.mark.parametrize("classes,use_prior", [(3, "true"), (2, "true"), (2, "false")])
def test_unshared_with_equal_class_boxes_is_the_shared_loss(conf_type, loc_type, classes, use_prior):
    """Every class predicting the shared box gives the shared loss and, summed over classes, its gradient,
    wherever the per-class matching is the shared one: with the priors (each matched prior kept in its ground
    truth's class) and with decoded boxes when there is one foreground class."""
    shared = random_case(9, classes=classes)
    unshared = list(shared)
    unshared[0] = np.repeat(shared[0].reshape(2, 12, 1, 4), classes, axis=2).reshape(2, -1)
    fields = dict(num_classes=classes, mining_type="NONE", code_type="CENTER_SIZE", conf_loss_type=conf_type,
                  loc_loss_type=loc_type, use_prior_for_matching=use_prior, match_type="PER_PREDICTION")
    results = []
    for arrays, share in ((shared, "true"), (unshared, "false")):
        layer, bottom, top = run(multibox_text(share_location=share, **fields), [a.copy() for a in arrays])
        top[0].diff[...] = 1
        layer.backward(top, [True, True, False, False], bottom)
        results.append((float(top[0].data), bottom[0].diff.reshape(2, 12, -1, 4).sum(axis=2), bottom[1].diff.copy(),
                        layer.num_matches))
    (l0, g0, c0, n0), (l1, g1, c1, n1) = results
    assert n0 == n1 >= 2 and l1 == pytest.approx(l0, rel=1e-12)
    np.testing.assert_allclose(g1, g0, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(c1, c0, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("share,mining", [("true", "HARD_EXAMPLE"), ("false", "NONE")])
def test_multibox_gpu_path_gives_the_cpu_numbers(share, mining):
    """cupy's API (hostcupy, strict about host/device mixing) gives the CPU's loss and gradients."""
    import caffe
    import hostcupy
    fields = dict(num_classes=3, share_location=share, mining_type=mining, sample_size=6, code_type="CENTER_SIZE",
                  conf_loss_type="LOGISTIC", use_prior_for_matching="false", match_type="PER_PREDICTION")
    arrays = unshared_random_case(7) if share == "false" else random_case(7)

    def once():
        layer, bottom, top = run(multibox_text(**fields), [a.copy() for a in arrays])
        top[0].diff[...] = 1
        layer.backward(top, [True, True, False, False], bottom)
        return [top[0].data.copy(), bottom[0].diff.copy(), bottom[1].diff.copy()]

    cpu = once()
    hostcupy.STRICT = True
    hostcupy.install()
    try:
        caffe.set_mode_gpu()
        hostcupy.COUNTS.clear()
        gpu = once()
        launches = sum(hostcupy.COUNTS.values())
    finally:
        caffe.set_mode_cpu()
        hostcupy.uninstall()
        hostcupy.STRICT = False
    assert launches > 0                                            # the device path did run
    for a, b in zip(cpu, gpu):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-15)
