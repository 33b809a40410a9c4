"""FLOAT16 storage (NVCaffe forward_type/backward_type) against FLOAT for the common layers, through Net."""
import numpy as np
import pytest

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


def _close(a, ref, what, rel=5e-3):
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    scale = max(np.abs(ref).max(), 1e-3)
    err = np.abs(a - ref).max() / scale
    assert err <= rel, "%s: fp16 differs from float by %.3g of its range" % (what, err)


@pytest.mark.parametrize("variant", ["net_default", "per_layer"])
def test_float16_matches_float(tmp_path, variant):
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
