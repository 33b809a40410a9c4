"""Net construction like Caffe's Net::Init: filtering, splits, in-place, backward needs, sharing, errors."""
import numpy as np
import pytest

import distcaffe as caffe
from distcaffe.errors import NetError
from distcaffe.io import parse_net_text
from distcaffe.net import Net

MLP = """
name: "mlp"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 6 } shape { dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc" include { phase: TEST } }
"""


def net_from(text, phase=caffe.TRAIN, **kw):
    return Net(parse_net_text(text), phase, **kw)


def test_pycaffe_attributes_and_phase_filter():
    train = net_from(MLP, caffe.TRAIN)
    test = net_from(MLP, caffe.TEST)
    assert train._layer_names == ["data", "ip1", "relu1", "ip2", "loss"]
    assert "acc" in test.layer_dict and "acc" not in train.layer_dict
    assert train.inputs == ["data", "label"]
    assert train.outputs == ["loss"]
    assert list(train.params) == ["ip1", "ip2"]
    assert train.params["ip1"][0].shape == (5, 6) and train.params["ip1"][1].shape == (5,)
    assert train.top_names["relu1"] == ["ip1"] and train.bottom_names["loss"] == ["ip2", "label"]
    # ip2 feeds both loss and acc in TEST: a Split is inserted
    assert any(l.type == "Split" for l in test.layers)
    assert train.blob_loss_weights_by_name["loss"] == 1.0


def test_forward_backward_pycaffe_api():
    net = net_from(MLP, caffe.TRAIN)
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    out = net.forward(data=x, label=np.array([0, 1, 2, 1], np.float32))
    assert set(out) == {"loss"} and out["loss"] > 0
    diffs = net.backward()
    assert set(diffs) == {"data", "label"}
    assert np.abs(net.params["ip1"][0].diff).sum() > 0
    with pytest.raises(NetError, match="do not match net inputs"):
        net.forward(data=x)


def test_stage_and_level_rules():
    text = MLP + """
layer { name: "extra" type: "ReLU" bottom: "ip2" top: "extra" include { stage: "deploy" min_level: 1 } }
"""
    assert "extra" not in net_from(text, caffe.TEST).layer_dict
    assert "extra" not in net_from(text, caffe.TEST, stages=["deploy"]).layer_dict
    assert "extra" in net_from(text, caffe.TEST, stages=["deploy"], level=1).layer_dict


def test_shared_params_sum_gradients():
    text = """
layer { name: "data" type: "Input" top: "a" top: "b" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ipa" type: "InnerProduct" bottom: "a" top: "ya"
        param { name: "w" } inner_product_param { num_output: 2 bias_term: false weight_filler { type: "gaussian" } } }
layer { name: "ipb" type: "InnerProduct" bottom: "b" top: "yb"
        param { name: "w" } inner_product_param { num_output: 2 bias_term: false } }
layer { name: "sum" type: "Eltwise" bottom: "ya" bottom: "yb" top: "y" }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "y" top: "loss" }
"""
    net = net_from(text.replace('bottom: "y" bottom: "y"', 'bottom: "y" bottom: "t"').replace(
        'top: "a" top: "b"', 'top: "a" top: "b" top: "t"').replace(
        'input_param { shape { dim: 2 dim: 3 } }', 'input_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 3 } '
        'shape { dim: 2 dim: 2 } }'))
    assert len(net.learnable_params) == 1
    assert net.params["ipa"][0].shares_data_with(net.params["ipb"][0])
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    net.blobs["a"].data[...] = a
    net.blobs["b"].data[...] = b
    net.clear_param_diffs()
    net.forward_backward()
    w = net.params["ipa"][0].data
    r = (a + b) @ w.T - net.blobs["t"].data  # d loss / d y = r / num
    expected = (r / 2).T @ a + (r / 2).T @ b
    np.testing.assert_allclose(net.params["ipa"][0].diff, expected, rtol=1e-4, atol=1e-6)


def test_force_backward_and_propagate_down():
    net = net_from(MLP, caffe.TRAIN)
    assert net.bottom_need_backward[net.layer_index("ip1")] == [False]
    forced = net_from('force_backward: true\n' + MLP, caffe.TRAIN)
    assert forced.bottom_need_backward[forced.layer_index("ip1")] == [True]
    # a label bottom never gets a diff, even forced
    assert forced.bottom_need_backward[forced.layer_index("loss")] == [True, False]


@pytest.mark.parametrize("text,pattern", [
    ('layer { name: "x" type: "Nope" top: "y" }', r"layer 'x': unknown layer type 'Nope' \(known types: .*Convolution"),
    ('layer { name: "r" type: "ReLU" bottom: "missing" top: "y" }', r"layer 'r': unknown bottom blob 'missing'"),
    ('layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 2 } } }\n'
     'layer { name: "d2" type: "Input" top: "x" input_param { shape { dim: 2 } } }',
     r"top blob 'x' produced by multiple sources"),
    ('layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 2 } } }\n'
     'layer { name: "r" type: "ReLU" bottom: "x" bottom: "x" top: "y" }', r"layer 'r' \(ReLU\): takes exactly 1 bottom"),
    ('layer { name: "d" type: "Input" top: "x" top: "y" input_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 4 } } }\n'
     'layer { name: "e" type: "Eltwise" bottom: "x" bottom: "y" top: "z" }', r"layer 'e' \(Eltwise\).*"),
])
def test_bad_nets_give_one_clear_error(text, pattern):
    with pytest.raises(NetError, match=pattern):
        net_from(text)


def test_copy_from_shape_mismatch_names_layer(tmp_path):
    net = net_from(MLP)
    path = str(tmp_path / "w.caffemodel")
    net.save(path)
    other = net_from(MLP.replace("num_output: 5", "num_output: 7"))
    with pytest.raises(NetError, match="cannot copy param 0 weights from layer 'ip1'; shape mismatch"):
        other.copy_from(path)
    same = net_from(MLP)
    same.copy_from(path)
    np.testing.assert_array_equal(same.params["ip2"][0].data, net.params["ip2"][0].data)


def test_reshape_propagates_new_batch_size():
    net = net_from(MLP, caffe.TEST)
    net.blobs["data"].reshape(7, 6)
    net.blobs["label"].reshape(7)
    net.forward()
    assert net.blobs["ip2"].shape == (7, 3)


def test_set_input_arrays_feeds_memory_data():
    text = """
layer { name: "mem" type: "MemoryData" top: "data" top: "label"
        memory_data_param { batch_size: 2 channels: 1 height: 1 width: 3 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
    net = net_from(text)
    data = np.arange(12, dtype=np.float32).reshape(4, 1, 1, 3)
    net.set_input_arrays(data, np.array([0, 1, 1, 0], np.float32))
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, data[:2])
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data, [1, 0])
    with pytest.raises(NetError, match="first layer is a MemoryData"):
        net_from(MLP).set_input_arrays(data, np.zeros(4, np.float32))


def test_trt_layer_is_a_clear_error_naming_the_deploy_net_to_use():
    text = ('layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }\n'
            'layer { name: "TRT" type: "TRT" bottom: "data" top: "trt" trt_param { deploy: "deploy_trt.prototxt" '
            'model: "r50.caffemodel" } }')
    with pytest.raises(NetError, match=r"layer 'TRT' \(TRT\): .*TensorRT.*deploy_trt.prototxt.*r50.caffemodel"):
        Net(parse_net_text(text), caffe.TEST)
