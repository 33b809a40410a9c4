"""cuDNN convolution: the plan descriptions and NVCaffe's cudnn fields on CPU; cuDNN against im2col + GEMM on a
GPU (skipped without one, and without the cuDNN frontend)."""
import numpy as np
import pytest

from distcaffe import backend
from distcaffe.errors import NetError
from distcaffe.io import parse_net_text
from distcaffe.layers import cudnn_conv
from distcaffe.net import TRAIN, Net
from layer_harness import setup_layer
from test_layers_neuron import assert_gpu_matches_cpu, forward_backward, needs_gpu

CONVS = [  # (layer text, bottom shape)
    ('type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 '
     'weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "constant" value: 0.2 } }', (2, 3, 7, 6)),
    ('type: "Convolution" convolution_param { num_output: 6 kernel_size: 3 dilation: 2 group: 3 '
     'weight_filler { type: "gaussian" std: 0.3 } }', (2, 6, 9, 9)),
    ('type: "Convolution" convolution_param { num_output: 2 kernel_size: 2 stride: 1 '
     'weight_filler { type: "gaussian" std: 0.3 } }', (1, 2, 4, 5, 3)),
    ('type: "Deconvolution" convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 group: 2 '
     'weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "constant" value: 0.1 } }', (2, 6, 4, 5)),
]


@pytest.mark.parametrize("text, shape", CONVS, ids=["pad-stride", "dilated-group", "3d", "deconv"])
def test_plan_description_matches_the_layer_geometry(text, shape):
    layer, bottom, top = setup_layer(text, [np.zeros(shape)], dtype=np.float32)
    spec = cudnn_conv.conv_spec(layer, (layer.num, layer.conv_in_channels) + tuple(layer.conv_input_shape),
                                np.float16)
    image, output = (top[0], bottom[0]) if layer.reverse else (bottom[0], top[0])
    assert spec.x == image.shape and spec.y == output.shape and spec.w == layer.blobs[0].shape
    assert spec.group == layer.group and (spec.dtype, spec.compute) == ("float16", "float32")
    for direction, (op, out) in zip(cudnn_conv.DIRECTIONS, [("conv_fprop", "y"), ("conv_dgrad", "x"),
                                                              ("conv_wgrad", "w")]):
        d = cudnn_conv.graph_description(spec, direction)
        assert d["op"] == op and d["output"] == out and out not in d["inputs"].values()
        dims, strides = d["tensors"]["x"]
        assert dims == list(spec.x) and strides[-1] == 1 and strides[0] == int(np.prod(spec.x[1:]))
        assert d["attrs"]["padding"] == list(layer.pad) and d["attrs"]["dilation"] == list(layer.dilation)


def test_no_plan_where_cudnn_does_not_apply():
    text = ('type: "Convolution" convolution_param { num_output: 2 kernel_size: 1 axis: 2 '
            'weight_filler { type: "constant" value: 1 } }')
    layer, _, _ = setup_layer(text, [np.zeros((2, 3, 4, 5))], dtype=np.float32)
    assert cudnn_conv.conv_spec(layer, (1, 4, 5), np.float32) is None          # channel axis 2
    layer, _, _ = setup_layer(CONVS[0][0], [np.zeros((2, 3, 7, 6))], dtype=np.float32)
    assert cudnn_conv.conv_spec(layer, (2, 3, 7, 6), np.float64).compute == "float64"


NET = """name: "c" %s
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 5 dim: 5 } } }
layer { name: "a" type: "Convolution" bottom: "data" top: "a" %s convolution_param { num_output: 2 kernel_size: 3 %s } }
layer { name: "b" type: "Convolution" bottom: "a" top: "b" convolution_param { num_output: 2 kernel_size: 1
        conv_algos_override: "-1,-1,-1" } }
"""


def test_nvcaffe_cudnn_fields_map_to_the_plan_policy():
    net = Net(parse_net_text(NET % ('default_conv_algos_override: "1,-1,3" default_cudnn_math_override: 0', "",
                                    "cudnn_convolution_algo_seeker: GET")), TRAIN)
    a, b = net.layers[1].policy, net.layers[2].policy
    assert a == cudnn_conv.ConvPolicy(use_cudnn=True, autotune=False, fallback=(True, True, False), tensor_cores=False)
    assert b.fallback == (False, False, False) and b.autotune and not b.tensor_cores   # own override kept
    caffe = Net(parse_net_text(NET % ("", "cudnn_math_override: 1", "engine: CAFFE")), TRAIN).layers[1].policy
    assert not caffe.use_cudnn and caffe.tensor_cores


def test_bad_conv_algos_override_is_one_clear_error():
    with pytest.raises(NetError, match="layer 'a': conv_algos_override must be three integers"):
        Net(parse_net_text(NET % ("", "", 'conv_algos_override: "7,5"')), TRAIN)


def test_frontend_guard_without_the_package(monkeypatch):
    """Without nvidia-cudnn-frontend (or with DISTCAFFE_CUDNN=0) GPU convolution falls back to im2col + GEMM."""
    import sys
    monkeypatch.setattr(cudnn_conv, "_frontend", None)
    monkeypatch.setitem(sys.modules, "cudnn", None)                  # import cudnn -> ImportError
    assert cudnn_conv.frontend() is None
    monkeypatch.setattr(cudnn_conv, "_frontend", None)
    monkeypatch.setenv("DISTCAFFE_CUDNN", "0")
    assert cudnn_conv.frontend() is None


# --- on a GPU -----------------------------------------------------------------------------------------------
def _has_frontend():
    return backend.gpu_available() and cudnn_conv.frontend() is not None


needs_cudnn = pytest.mark.skipif(not _has_frontend(), reason="no GPU with the cuDNN frontend")


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("text, shape", CONVS, ids=["pad-stride", "dilated-group", "3d", "deconv"])
def test_gpu_convolution_matches_cpu(text, shape):
    assert_gpu_matches_cpu(text, [np.random.default_rng(1).standard_normal(shape)])


@needs_cudnn
@pytest.mark.gpu
@pytest.mark.parametrize("seeker", ["FINDEX", "GET"])
@pytest.mark.parametrize("text, shape", CONVS, ids=["pad-stride", "dilated-group", "3d", "deconv"])
def test_cudnn_matches_im2col_on_gpu(text, shape, seeker, monkeypatch):
    x = [np.random.default_rng(2).standard_normal(shape)]
    text = text.replace("convolution_param {", "convolution_param { cudnn_convolution_algo_seeker: %s" % seeker)
    with_cudnn = forward_backward(text, x, gpu=True)
    im2col = forward_backward(text.replace("convolution_param {", "convolution_param { engine: CAFFE"), x, gpu=True)
    for a, b in zip(with_cudnn, im2col):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
