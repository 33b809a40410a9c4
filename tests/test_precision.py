"""FLOAT16 storage (NVCaffe forward_type/backward_type) against FLOAT for the common layers, through Net."""
import numpy as np
import pytest

from distcaffe import backend
from distcaffe.net import TRAIN, Net

LAYERS = """
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 2 dim: 9 dim: 9 } shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" %(conv)s
        convolution_param { num_output: 6 kernel_size: 3 pad: 1 group: 2
                            weight_filler { type: "gaussian" std: 0.2 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "apool" type: "Pooling" bottom: "pool" top: "apool" pooling_param { pool: AVE kernel_size: 2 stride: 1 } }
layer { name: "ip" type: "InnerProduct" bottom: "apool" top: "ip" %(ip)s
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.2 }
                              bias_filler { type: "constant" value: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""

FP16 = "forward_type: FLOAT16 backward_type: FLOAT16"


def _net(tmp_path, header="", conv="", ip=""):
    path = tmp_path / ("net%d.prototxt" % len(list(tmp_path.iterdir())))
    path.write_text('name: "p" force_backward: true\n' + header + LAYERS % {"conv": conv, "ip": ip})
    return Net(str(path), TRAIN)


def _close(a, ref, what, rel=1e-2):
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    scale = max(np.abs(ref).max(), 1e-3)
    err = np.abs(a - ref).max() / scale
    assert err <= rel, "%s: fp16 differs from float by %.3g of its range" % (what, err)


@pytest.mark.parametrize("variant", ["net_default", "per_layer"])
def test_float16_matches_float(tmp_path, variant):
    """FLOAT16 storage and math (fp16 elementwise, fp32-accumulated GEMMs) within a few fp16 roundings of FLOAT."""
    backend.set_random_seed(11)
    ref = _net(tmp_path)
    if variant == "net_default":
        half = _net(tmp_path, header="default_forward_type: FLOAT16 default_backward_type: FLOAT16\n")
        assert half.blobs["conv"].dtype == np.float16 and half.params["ip"][0].dtype == np.float16
    else:
        half = _net(tmp_path, conv=FP16, ip=FP16)
        assert half.params["conv"][0].dtype == np.float16 and half.blobs["prob"].dtype == np.float32
    rng = np.random.default_rng(7)
    for name in ref.params:
        for p, q in zip(ref.params[name], half.params[name]):
            q.data[...] = p.data
    for net in (ref, half):
        net.blobs["data"].data[...] = rng.standard_normal((4, 2, 9, 9)) if net is ref else ref.blobs["data"].data
        net.blobs["label"].data[...] = [0, 3, 1, 4]
    loss_ref = ref.forward_backward()
    loss_half = half.forward_backward()
    _close(loss_half, loss_ref, "loss")
    for name in ("conv", "pool", "apool", "ip", "prob"):
        _close(half.blobs[name].data, ref.blobs[name].data, "top %s" % name)
    _close(half.blobs["data"].diff, ref.blobs["data"].diff, "data diff")
    for name in ("conv", "ip"):
        for i, (p, q) in enumerate(zip(ref.params[name], half.params[name])):
            _close(q.diff, p.diff, "param diff %s[%d]" % (name, i))


# --- NVCaffe's type/math resolution and the fp32 accumulators, on the CPU and on the GPU path (hostcupy) ----
@pytest.fixture(params=["cpu", "gpu-path", pytest.param("gpu", marks=pytest.mark.gpu)])
def device(request):
    """CPU mode; distcaffe's GPU code path driven on the CPU by hostcupy (raising where cupy would); a real GPU."""
    if request.param == "cpu":
        yield "cpu"
        return
    if request.param == "gpu":
        if not backend.gpu_available():
            pytest.skip("no GPU (cupy with a CUDA device)")
        backend.set_mode_gpu()
        try:
            yield "gpu"
        finally:
            backend.set_mode_cpu()
        return
    import hostcupy
    hostcupy.STRICT = True
    hostcupy.install()
    try:
        yield "gpu-path"
    finally:
        hostcupy.uninstall()
        hostcupy.STRICT = False


def _text_net(tmp_path, text):
    path = tmp_path / "n.prototxt"
    path.write_text(text)
    return Net(str(path), TRAIN)


TYPES = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } %(data)s }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" %(ip)s inner_product_param { num_output: 3 } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
layer { name: "bn" type: "BatchNorm" bottom: "ip" top: "bn" }
"""


@pytest.mark.parametrize("header, ip, want", [
    # (net header, ip layer fields) -> ip's (forward_type, backward_type, forward_math, backward_math)
    ("", "", ("float32",) * 4),
    ("default_forward_type: FLOAT16 default_backward_type: FLOAT16", "", ("float16",) * 4),
    ("default_forward_type: FLOAT16 default_backward_type: FLOAT16 default_forward_math: FLOAT "
     "default_backward_math: FLOAT", "", ("float16", "float16", "float32", "float32")),
    ("default_forward_math: FLOAT16", "forward_type: FLOAT16", ("float16", "float32", "float16", "float32")),
    ("default_forward_math: FLOAT", "forward_type: FLOAT16 backward_math: FLOAT16",
     ("float16", "float32", "float16", "float16")),
    ("default_forward_type: FLOAT16", "forward_math: DOUBLE", ("float16", "float32", "float64", "float32")),
])
def test_types_and_math_resolve_as_nvcaffe(tmp_path, header, ip, want):
    net = _text_net(tmp_path, 'name: "t"\n' + header + TYPES % {"data": "", "ip": ip})
    layer = net.layers[list(net._layer_names).index("ip")]
    got = (layer.dtype, layer.bwd_dtype, layer.forward_math, layer.backward_math)
    assert tuple(np.dtype(g).name for g in got) == want
    blob = net.blobs["ip"]
    assert (blob.dtype.name, blob.diff_dtype.name) == want[:2]          # tops: producer's types
    w = net.params["ip"][0]
    assert (w.dtype.name, w.diff_dtype.name) == want[:2]                # params: data forward, diff backward


def test_data_layer_backward_type_defaults_to_float(tmp_path):
    text = ('name: "t" default_forward_type: FLOAT16 default_backward_type: FLOAT16\n'
            'layer { name: "data" type: "DummyData" top: "data" transform_param { scale: 1 } '
            'dummy_data_param { shape { dim: 2 dim: 3 } } }\n'
            'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }')
    net = _text_net(tmp_path, text)
    assert net.blobs["data"].dtype == np.float16 and net.blobs["data"].diff_dtype == np.float32
    assert net.blobs["ip"].diff_dtype == np.float16


def test_math_dtype_by_pass_and_precise_layers(tmp_path, device):
    """FLOAT16 math without math fields: ReLU/IP compute in fp16, BatchNorm in fp32; backward uses backward_math."""
    header = "default_forward_type: FLOAT16 default_backward_type: FLOAT16 default_backward_math: FLOAT\n"
    net = _text_net(tmp_path, 'name: "t" force_backward: true\n' + header + TYPES % {"data": "", "ip": ""})
    seen = {}
    for layer in net.layers:
        for pass_name in ("forward", "backward"):
            fn = getattr(layer, pass_name)

            def spy(*a, _fn=fn, _layer=layer, _pass=pass_name):
                seen[(_layer.name, _pass)] = _layer.mdtype.name
                return _fn(*a)
            setattr(layer, pass_name, spy)
    net.blobs["data"].data[...] = [[1, -2, 3], [0.5, 2, -1]]
    net.forward_backward()
    assert seen[("relu", "forward")] == "float16" and seen[("ip", "forward")] == "float16"
    assert seen[("relu", "backward")] == "float32" and seen[("ip", "backward")] == "float32"
    assert seen[("bn", "forward")] == "float32"


SOFTMAX = """name: "s" default_forward_type: FLOAT16 default_backward_type: FLOAT16 force_backward: true
layer { name: "data" type: "Input" top: "data" top: "label" input_param { shape { dim: %d dim: 2 } shape { dim: %d } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "data" bottom: "label" top: "loss" %s }
"""


def test_float16_softmax_loss_of_a_confident_mistake_is_finite(tmp_path, device):
    """Logits (20, -20), label 1: p = e^-40 underflows fp16 and FLT_MIN rounds to 0 there; fp32 gives 40."""
    net = _text_net(tmp_path, SOFTMAX % (1, 1, ""))
    net.blobs["data"].data[...] = [[20, -20]]
    net.blobs["label"].data[...] = [1]
    assert net.forward_backward() == pytest.approx(40.0, rel=1e-3)
    np.testing.assert_allclose(net.blobs["data"].diff, [[1, -1]], atol=1e-3)


def test_float16_valid_normalizer_past_fp16_max(tmp_path, device):
    """70,000 valid labels (more than fp16's 65,504): the VALID normaliser and the loss sum stay fp32."""
    n = 70000
    net = _text_net(tmp_path, SOFTMAX % (n, n, "loss_param { ignore_label: -1 normalization: VALID }"))
    net.blobs["data"].data[...] = 0
    net.blobs["label"].data[...] = np.arange(n) % 2
    assert net.forward_backward() == pytest.approx(np.log(2), rel=1e-3)
    d = net.blobs["data"].diff.astype(np.float64)
    np.testing.assert_allclose(np.abs(d), 0.5 / n, rtol=0.02)


SQUARES = """name: "q" force_backward: true %s
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 5 dim: 3 dim: 3 } } }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" batch_norm_param { use_global_stats: false } }
layer { name: "lrn" type: "LRN" bottom: "data" top: "lrn" lrn_param { local_size: 3 alpha: 0.01 beta: 0.75 } }
layer { name: "mvn" type: "MVN" bottom: "data" top: "mvn" }
layer { name: "sum" type: "Eltwise" bottom: "bn" bottom: "lrn" bottom: "mvn" top: "sum" }
layer { name: "loss" type: "Reduction" bottom: "sum" top: "loss" loss_weight: 1 reduction_param { operation: SUMSQ } }
"""


def test_float16_squares_of_large_inputs_accumulate_in_fp32(tmp_path, device):
    """|x| ~ 300: x^2 > 65,504 overflows fp16; BN, LRN, MVN and a SUMSQ reduction stay finite and match FLOAT."""
    x = np.random.default_rng(3).choice([-1.0, 1.0], (4, 5, 3, 3)) * np.random.default_rng(4).uniform(260, 400,
                                                                                                       (4, 5, 3, 3))
    x = x.astype(np.float16)
    ref = _text_net(tmp_path, SQUARES % "")
    half = _text_net(tmp_path, SQUARES % "default_forward_type: FLOAT16 default_backward_type: FLOAT16")
    for net in (ref, half):
        net.blobs["data"].data[...] = x
        net.forward_backward()
    for name in ("bn", "lrn", "mvn"):
        assert np.isfinite(half.blobs[name].data).all(), name
        _close(half.blobs[name].data, ref.blobs[name].data, "top " + name, rel=2e-3)
    assert np.isfinite(half.blobs["data"].diff).all()
