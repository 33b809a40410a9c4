"""Loss, Softmax, Accuracy and ArgMax layers: float64 gradient checks, Caffe's semantics, and error messages."""
import numpy as np
import pytest

from distcaffe.errors import NetError
from distcaffe.proto import caffe_pb2
from layer_harness import check_gradient, setup_layer

rng = np.random.default_rng(7)


def run(layer_text, arrays, num_top=1):
    layer, bottom, top = setup_layer(layer_text, arrays, num_top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return layer, bottom, top


def labels(shape, classes):
    return rng.integers(0, classes, shape).astype(np.float64)


@pytest.mark.parametrize("param", ["", "softmax_param { axis: 2 }", "softmax_param { axis: -1 }"])
def test_softmax_gradient(param):
    check_gradient('type: "Softmax" %s' % param, [rng.standard_normal((2, 3, 4))])


@pytest.mark.parametrize("loss_param", [
    "", "loss_param { ignore_label: 1 }", "loss_param { normalization: FULL ignore_label: 0 }",
    "loss_param { normalization: BATCH_SIZE }", "loss_param { normalization: NONE }",
    "loss_param { normalize: false }", "loss_param { normalize: true ignore_label: 2 }"])
def test_softmax_loss_gradient(loss_param):
    check_gradient('type: "SoftmaxWithLoss" %s' % loss_param,
                   [rng.standard_normal((2, 3, 2, 2)), labels((2, 1, 2, 2), 3)], check_bottoms=[0])


def test_softmax_loss_normalizers():
    x, lab = rng.standard_normal((2, 3, 2, 2)), np.array([[[[0, 1], [2, 1]]], [[[1, 1], [0, 2]]]], float)
    p = np.exp(x) / np.exp(x).sum(1, keepdims=True)
    nll = -np.log(np.take_along_axis(p, lab.astype(int), 1))
    mask = lab != 1
    for extra, want in (("", nll.mean()), ("loss_param { normalization: NONE }", nll.sum()),
                        ("loss_param { normalization: BATCH_SIZE }", nll.sum() / 2),
                        ("loss_param { ignore_label: 1 }", nll[mask].sum() / mask.sum()),
                        ("loss_param { ignore_label: 1 normalization: FULL }", nll[mask].sum() / 8),
                        ("loss_param { ignore_label: 1 normalize: false }", nll[mask].sum() / 2)):
        _, _, top = run('type: "SoftmaxWithLoss" %s' % extra, [x, lab])
        assert np.isclose(float(top[0].data), want), extra


def test_softmax_loss_all_ignored_and_prob_top():
    x = rng.standard_normal((3, 4))
    layer, bottom, top = run('type: "SoftmaxWithLoss" loss_param { ignore_label: 2 } loss_weight: 1 loss_weight: 0',
                             [x, np.full(3, 2.0)], num_top=2)
    assert float(top[0].data) == 0.0
    assert np.allclose(top[1].data, np.exp(x) / np.exp(x).sum(1, keepdims=True))
    layer.backward(top, [True, False], bottom)
    assert not bottom[0].diff.any()


def test_softmax_loss_errors():
    with pytest.raises(NetError, match="Number of labels must match"):
        run('name: "l" type: "SoftmaxWithLoss"', [rng.standard_normal((2, 3, 2)), labels((2, 1), 3)])
    with pytest.raises(NetError, match=r"layer 'l' \(SoftmaxWithLoss\): label 5 .*outside \[0, 3\)"):
        run('name: "l" type: "SoftmaxWithLoss"', [rng.standard_normal((2, 3)), np.array([0.0, 5.0])])
    with pytest.raises(NetError, match="cannot backpropagate to label"):
        layer, bottom, top = run('type: "SoftmaxWithLoss"', [rng.standard_normal((2, 3)), labels(2, 3)])
        layer.backward(top, [True, True], bottom)


def test_euclidean_gradient():
    check_gradient('type: "EuclideanLoss"', [rng.standard_normal((3, 4)), rng.standard_normal((3, 2, 2))])


def test_l1_loss_value_and_gradient():
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 2, 2))
    layer, bottom, top = run('type: "L1Loss"', [a, b])
    assert float(top[0].data) == pytest.approx(np.abs(a - b.reshape(3, 4)).sum() / 3)
    check_gradient('type: "L1Loss"', [a, b])          # |x| is smooth away from 0: random normals never hit it


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_gradient(norm):
    x = rng.standard_normal((4, 5)) * 2
    check_gradient('type: "HingeLoss" hinge_loss_param { norm: %s }' % norm, [x, labels(4, 5)], check_bottoms=[0])


def test_hinge_uses_bottom_diff_as_scratch_like_caffe():
    layer, bottom, top = run('type: "HingeLoss"', [rng.standard_normal((2, 3)), labels(2, 3)])
    bottom[0].diff[...] = 0
    top[0].diff[...] = 1
    layer.backward(top, [True, False], bottom)
    assert not bottom[0].diff.any()


def test_multinomial_logistic_gradient():
    p = rng.uniform(0.1, 1.0, (4, 5))
    check_gradient('type: "MultinomialLogisticLoss"', [p, labels(4, 5)], check_bottoms=[0])
    with pytest.raises(NetError, match="N x 1 x 1 x 1"):
        run('type: "MultinomialLogisticLoss"', [p, labels((4, 2), 5)])


@pytest.mark.parametrize("loss_param", ["", "loss_param { ignore_label: -1 }",
                                        "loss_param { normalization: VALID ignore_label: -1 }"])
def test_sigmoid_cross_entropy_gradient(loss_param):
    t = rng.uniform(0, 1, (3, 4))
    t[0, :2] = -1
    check_gradient('type: "SigmoidCrossEntropyLoss" %s' % loss_param, [rng.standard_normal((3, 4)) * 3, t],
                   check_bottoms=[0])


def test_sigmoid_cross_entropy_defaults_to_batch_size():
    x, t = rng.standard_normal((2, 5)), rng.uniform(0, 1, (2, 5))
    ce = -(t * np.log(1 / (1 + np.exp(-x))) + (1 - t) * np.log(1 - 1 / (1 + np.exp(-x)))).sum()
    _, _, top = run('type: "SigmoidCrossEntropyLoss"', [x, t])
    assert np.isclose(float(top[0].data), ce / 2)
    _, _, top = run('type: "SigmoidCrossEntropyLoss" loss_param { normalize: true }', [x, t])
    assert np.isclose(float(top[0].data), ce / 10)


def _write_h(path, h):
    bp = caffe_pb2.BlobProto()
    bp.num, bp.channels, bp.height, bp.width = 1, 1, h.shape[0], h.shape[1]
    bp.data.extend(h.ravel().tolist())
    path.write_bytes(bp.SerializeToString())


@pytest.mark.parametrize("extra", ["", "loss_param { ignore_label: 1 }", "loss_param { normalization: NONE }"])
def test_infogain_gradient_source(tmp_path, extra):
    h = rng.uniform(0, 1, (3, 3))
    _write_h(tmp_path / "H.binaryproto", h)
    check_gradient('type: "InfogainLoss" infogain_loss_param { source: "%s" } %s' % (tmp_path / "H.binaryproto", extra),
                   [rng.standard_normal((4, 3)), labels(4, 3)], check_bottoms=[0])


def test_infogain_third_bottom_axis():
    h = rng.uniform(0, 1, (3, 3))
    check_gradient('type: "InfogainLoss" infogain_loss_param { axis: 2 }',
                   [rng.standard_normal((2, 2, 3)), labels((2, 2), 3), h], check_bottoms=[0])


def test_infogain_identity_is_softmax_loss():
    x, lab = rng.standard_normal((4, 3)), labels(4, 3)
    _, _, a = run('type: "InfogainLoss"', [x, lab, np.eye(3)])
    _, _, b = run('type: "SoftmaxWithLoss"', [x, lab])
    assert np.isclose(float(a[0].data), float(b[0].data))


def test_infogain_errors(tmp_path):
    with pytest.raises(NetError, match="Infogain matrix source must be specified"):
        run('type: "InfogainLoss"', [rng.standard_normal((2, 3)), labels(2, 3)])
    with pytest.raises(NetError, match="cannot read the infogain matrix.*missing.binaryproto"):
        run('type: "InfogainLoss" infogain_loss_param { source: "%s" }' % (tmp_path / "missing.binaryproto"),
            [rng.standard_normal((2, 3)), labels(2, 3)])
    with pytest.raises(NetError, match="must be 3 x 3"):
        run('type: "InfogainLoss"', [rng.standard_normal((2, 3)), labels(2, 3), np.eye(2)])


@pytest.mark.parametrize("legacy", ["false", "true"])
def test_contrastive_gradient(legacy):
    a, b = rng.standard_normal((6, 3, 1, 1)) * 0.5, rng.standard_normal((6, 3, 1, 1)) * 0.5
    sim = np.array([1, 0, 0, 1, 0, 0], float).reshape(6, 1, 1, 1)
    check_gradient('type: "ContrastiveLoss" contrastive_loss_param { margin: 1.5 legacy_version: %s }' % legacy,
                   [a, b, sim], check_bottoms=[0, 1], tol=1e-4)


def test_contrastive_errors():
    with pytest.raises(NetError, match="same channels"):
        run('type: "ContrastiveLoss"', [np.zeros((2, 3, 1, 1)), np.zeros((2, 4, 1, 1)), np.zeros((2, 1, 1, 1))])


def test_accuracy_top_k_ignore_and_per_class():
    x = np.array([[0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.9, 0.05, 0.05], [0.2, 0.7, 0.1]])
    lab = np.array([2, 0, 0, 1], float)
    _, _, top = run('type: "Accuracy"', [x, lab], num_top=2)
    assert float(top[0].data) == 0.5                     # ties count against the true class
    assert np.allclose(top[1].data, [0.5, 1.0, 0.0])
    _, _, top = run('type: "Accuracy" accuracy_param { top_k: 2 }', [x, lab])
    assert float(top[0].data) == 0.75
    _, _, top = run('type: "Accuracy" accuracy_param { ignore_label: 0 }', [x, lab])
    assert float(top[0].data) == 0.5
    _, _, top = run('type: "Accuracy" accuracy_param { ignore_label: 0 axis: 1 }', [x, np.zeros(4)])
    assert float(top[0].data) == 0.0
    with pytest.raises(NetError, match="top_k must be less than or equal to the number of classes"):
        run('type: "Accuracy" accuracy_param { top_k: 4 }', [x, lab])


def test_accuracy_spatial_axis():
    x = rng.standard_normal((2, 4, 3))
    lab = x.argmax(1).astype(float)
    _, _, top = run('type: "Accuracy"', [x, lab])
    assert float(top[0].data) == 1.0


def test_argmax_variants():
    x = np.array([[1.0, 3.0, 3.0, 2.0], [5.0, 0.0, 4.0, 4.0]])
    _, _, top = run('type: "ArgMax"', [x])
    assert top[0].shape == (2, 1, 1) and top[0].data.ravel().tolist() == [2, 0]   # ties: the larger index
    _, _, top = run('type: "ArgMax" argmax_param { top_k: 2 out_max_val: true }', [x])
    assert top[0].shape == (2, 2, 2)
    assert top[0].data.tolist() == [[[2, 1], [3, 3]], [[0, 3], [5, 4]]]
    _, _, top = run('type: "ArgMax" argmax_param { axis: 0 }', [x])
    assert top[0].shape == (1, 4) and top[0].data.tolist() == [[1, 0, 1, 1]]
    _, _, top = run('type: "ArgMax" argmax_param { axis: 1 out_max_val: true top_k: 2 }', [x])
    assert top[0].data.tolist() == [[3, 3], [5, 4]]
    _, _, top = run('type: "ArgMax" argmax_param { top_k: 4 out_max_val: true }', [[[-np.inf, 2.0, -np.inf, 2.0]]])
    assert top[0].data.ravel().tolist() == [3, 1, 2, 0, 2, 2, -np.inf, -np.inf]
    with pytest.raises(NetError, match="top_k must be less than or equal to the dimension of the axis"):
        run('type: "ArgMax" argmax_param { axis: 0 top_k: 3 }', [x])
    with pytest.raises(NetError, match="top k must not be less than 1"):
        run('type: "ArgMax" argmax_param { top_k: 0 }', [x])


@pytest.mark.parametrize("shape,lab,extra", [
    ((2, 3), [0.0, 2.0], ""),
    ((2, 3, 2), [[1.0, 2.0], [0.0, 1.0]], "ignore_label: 1"),       # spatial: NVCaffe divides by C*inner - 1
])
def test_softmax_loss_label_smoothing_is_nvcaffes_gradient(shape, lab, extra):
    """NVCaffe's GPU rule, by hand: diff = (prob - e/(dim-1) - (1-e)[c == label]) * loss_weight / normalizer, zero
    at ignored positions; the loss reported stays the plain -log prob[label]."""
    x, lab = rng.standard_normal(shape), np.array(lab)
    e = 0.1
    layer, bottom, top = run('type: "SoftmaxWithLoss" loss_param { label_smoothing: %g %s }' % (e, extra), [x, lab])
    plain = run('type: "SoftmaxWithLoss" loss_param { %s }' % extra, [x, lab])[2]
    assert float(top[0].data) == float(plain[0].data)
    top[0].diff[...] = 2.0                                           # loss_weight 2
    layer.backward(top, [True, False], bottom)
    x3 = x.reshape(shape[0], shape[1], -1)
    lab2 = lab.reshape(shape[0], -1).astype(int)
    p = np.exp(x3) / np.exp(x3).sum(1, keepdims=True)
    dim = x3.shape[1] * x3.shape[2]
    want = p - e / (dim - 1)
    valid = np.ones(lab2.shape, bool) if not extra else lab2 != 1
    for n in range(lab2.shape[0]):
        for s in range(lab2.shape[1]):
            want[n, lab2[n, s], s] -= 1 - e
            if not valid[n, s]:
                want[n, :, s] = 0
    want *= 2.0 / valid.sum()
    np.testing.assert_allclose(bottom[0].diff.reshape(want.shape), want, rtol=1e-6, atol=1e-9)


def test_softmax_loss_label_smoothing_range():
    with pytest.raises(NetError, match=r"label_smoothing must lie in \[0, 1\) \(got 1\)"):
        run('name: "l" type: "SoftmaxWithLoss" loss_param { label_smoothing: 1 }',
            [rng.standard_normal((2, 3)), np.array([0.0, 1.0])])


def test_softmax_loss_label_smoothing_same_on_the_gpu_path():
    """The GPU code path (cupy's API, driven on the CPU by hostcupy) gives the CPU's smoothed gradient."""
    import hostcupy
    x, lab = rng.standard_normal((3, 4, 2)), np.array([[0.0, 3.0], [1.0, 2.0], [2.0, 2.0]])
    text = 'type: "SoftmaxWithLoss" loss_param { label_smoothing: 0.2 ignore_label: 1 }'

    def grad():
        layer, bottom, top = run(text, [x, lab])
        top[0].diff[...] = 1.0
        layer.backward(top, [True, False], bottom)
        return float(top[0].data), bottom[0].diff.copy()
    cpu = grad()
    hostcupy.STRICT = True
    hostcupy.install()
    try:
        gpu = grad()
    finally:
        hostcupy.uninstall()
        hostcupy.STRICT = False
    assert gpu[0] == pytest.approx(cpu[0], rel=1e-12)
    np.testing.assert_allclose(gpu[1], cpu[1], rtol=1e-12, atol=1e-15)
