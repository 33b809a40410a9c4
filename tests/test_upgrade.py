"""V0/V1 nets upgrade to the same layers as the current-format copies of the same nets (upgrade_proto.cpp)."""
import pytest

import distcaffe.io as dio
from distcaffe.errors import ParseError

# (legacy file, current-format copy): same net, same layer structure after upgrade.
PAIRS = [
    ("BVLC__caffe__legacy_v0/examples/lenet/lenet.prototxt", "BVLC__caffe/examples/mnist/lenet.prototxt"),
    ("BVLC__caffe__legacy_v1/examples/mnist/lenet.prototxt", "BVLC__caffe/examples/mnist/lenet.prototxt"),
    ("BVLC__caffe__legacy_v1/examples/mnist/lenet_train_test.prototxt",
     "BVLC__caffe/examples/mnist/lenet_train_test.prototxt"),
    ("BVLC__caffe__legacy_v1/examples/cifar10/cifar10_quick_train_test.prototxt",
     "BVLC__caffe/examples/cifar10/cifar10_quick_train_test.prototxt"),
    ("BVLC__caffe__legacy_v1/models/bvlc_alexnet/train_val.prototxt",
     "BVLC__caffe/models/bvlc_alexnet/train_val.prototxt"),
    ("BVLC__caffe__legacy_v1/models/bvlc_googlenet/deploy.prototxt",
     "BVLC__caffe/models/bvlc_googlenet/deploy.prototxt"),
    ("BVLC__caffe__legacy_v1/examples/siamese/mnist_siamese_train_test.prototxt",
     "BVLC__caffe/examples/siamese/mnist_siamese_train_test.prototxt"),
    ("BVLC__caffe__legacy_v1_pretransform/examples/mnist/lenet_train_test.prototxt",
     "BVLC__caffe/examples/mnist/lenet_train_test.prototxt"),
    ("BVLC__caffe__legacy_v1_pretransform/examples/cifar10/cifar10_quick_train_test.prototxt",
     "BVLC__caffe/examples/cifar10/cifar10_quick_train_test.prototxt"),
]
# Identical to the current copy in every field but the layer names.
FULL_MATCH = {PAIRS[0], PAIRS[1], PAIRS[2], PAIRS[3], PAIRS[4]}


def structure(net):
    return [(l.type, list(l.bottom), list(l.top), [(p.lr_mult, p.decay_mult) for p in l.param],
             [(r.phase, list(r.stage)) for r in l.include]) for l in net.layer]


def without_names(net):
    net = type(net).FromString(net.SerializeToString())
    for layer in net.layer:
        layer.ClearField("name")
    net.ClearField("name")
    return dio.format_text(net)


@pytest.mark.parametrize("legacy,current", PAIRS)
def test_legacy_upgrades_like_current(zoo, legacy, current):
    old, new = dio.read_net_param(zoo / legacy), dio.read_net_param(zoo / current)
    assert structure(old) == structure(new)
    if (legacy, current) in FULL_MATCH:
        assert without_names(old) == without_names(new)


def test_v1_data_transform_moved(zoo):
    net = dio.read_net_param(zoo / "BVLC__caffe__legacy_v1_pretransform/examples/mnist/lenet_train_test.prototxt")
    data = net.layer[0]
    assert data.type == "Data" and not data.data_param.HasField("scale")
    assert abs(data.transform_param.scale - 0.00390625) < 1e-9


def test_v0_padding_layer_folded():
    net = dio.parse_net_text('''
      input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
      layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
      layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 2
                       blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 } bottom: "pad1" top: "conv1" }
      layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 2 } bottom: "conv1" top: "pool1" }
      layers { layer { name: "d" type: "data" source: "db" batchsize: 5 meanfile: "m" cropsize: 4 } top: "x" }''')
    assert [l.type for l in net.layer] == ["Input", "Convolution", "Pooling", "Data"]
    conv = net.layer[1]
    assert list(conv.bottom) == ["data"] and list(conv.convolution_param.pad) == [2]
    assert list(conv.convolution_param.kernel_size) == [3] and list(conv.convolution_param.stride) == [2]
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 0)]
    assert net.layer[2].pooling_param.pool == net.layer[2].pooling_param.AVE
    data = net.layer[3]
    assert data.data_param.batch_size == 5 and data.transform_param.mean_file == "m"
    assert data.transform_param.crop_size == 4


def test_v0_errors():
    with pytest.raises(ParseError, match="unknown V0 layer type 'bogus'"):
        dio.parse_net_text('layers { layer { name: "x" type: "bogus" } }', "v0.prototxt")
    with pytest.raises(ParseError, match="'group' is not valid for layer type 'pool'"):
        dio.parse_net_text('layers { layer { name: "x" type: "pool" group: 2 } }', "v0.prototxt")


def test_batchnorm_three_params_frozen():
    net = dio.parse_net_text('layer { name: "bn" type: "BatchNorm" param { lr_mult: 1 } param { lr_mult: 1 } '
                             'param { lr_mult: 1 } }')
    assert [(p.lr_mult, p.decay_mult) for p in net.layer[0].param] == [(0, 0)] * 3


def test_mixed_v1_and_v2_rejected():
    with pytest.raises(ParseError, match="mixes V1"):
        dio.parse_net_text('layers { name: "a" type: RELU } layer { name: "b" type: "ReLU" }', "m.prototxt")
