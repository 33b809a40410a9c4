"""NetSpec writes nets from Python that build like their prototxt twins."""
import numpy as np

import distcaffe as caffe
from distcaffe.io import format_text, parse_net_text
from distcaffe.net_spec import L, NetSpec, P


def lenet_spec(batch=4):
    n = NetSpec()
    n.data, n.label = L.Input(shape=[dict(dim=[batch, 1, 28, 28]), dict(dim=[batch])], ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.ip1 = L.InnerProduct(n.pool1, num_output=10, weight_filler=dict(type="xavier"),
                           param=[dict(lr_mult=1), dict(lr_mult=2)])
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.loss = L.SoftmaxWithLoss(n.ip1, n.label)
    return n


def test_netspec_builds_and_names_layers():
    proto = lenet_spec().to_proto()
    assert [l.name for l in proto.layer] == ["data", "conv1", "pool1", "ip1", "relu1", "loss"]
    assert proto.layer[4].top == proto.layer[4].bottom == ["ip1"]
    assert proto.layer[1].convolution_param.num_output == 20
    assert proto.layer[2].pooling_param.pool == caffe.caffe_pb2.PoolingParameter.MAX
    assert [p.lr_mult for p in proto.layer[3].param] == [1, 2]
    net = caffe.Net(parse_net_text(format_text(proto)), caffe.TRAIN)
    assert net.blobs["pool1"].shape == (4, 20, 12, 12)
    loss = net.forward(data=np.zeros((4, 1, 28, 28), np.float32), label=np.zeros(4, np.float32))["loss"]
    assert np.isclose(loss, np.log(10), rtol=1e-5)


def test_netspec_auto_names_unassigned_tops():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3]))
    n.out = L.ReLU(L.TanH(n.data))
    proto = n.to_proto()
    assert [l.type for l in proto.layer] == ["Input", "TanH", "ReLU"]
    assert proto.layer[1].top[0] == "TanH1" and proto.layer[2].bottom[0] == "TanH1"
