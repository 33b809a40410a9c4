"""Whole BVLC example nets against Caffe: load weights.caffemodel, forward in TEST, every blob matches."""
import numpy as np
import pytest

from conftest import GOLDEN
from layer_harness import close
import distcaffe as caffe


@pytest.mark.parametrize("model", ["lenet", "cifar10_quick"])
def test_model_blobs_match_caffe(golden, model):
    d = GOLDEN / "models" / model
    data = np.load(d / "data.npz")
    net = caffe.Net(str(d / "deploy.prototxt"), caffe.TEST, weights=str(d / "weights.caffemodel"))
    out = net.forward(data=data["blob__data"])
    failures = []
    for key in data.files:
        ok, msg = close(net.blobs[key[len("blob__"):]].data, data[key])
        if not ok:
            failures.append("%s: %s" % (key, msg))
    assert not failures, "\n".join(failures)
    assert set(out) == set(net.outputs)


def test_save_then_load_roundtrips_weights(golden, tmp_path):
    d = GOLDEN / "models" / "lenet"
    net = caffe.Net(str(d / "deploy.prototxt"), str(d / "weights.caffemodel"), caffe.TEST)
    net.save(str(tmp_path / "w.caffemodel"))
    net2 = caffe.Net(str(d / "deploy.prototxt"), caffe.TEST, weights=str(tmp_path / "w.caffemodel"))
    for name, blobs in net.params.items():
        for a, b in zip(blobs, net2.params[name]):
            np.testing.assert_array_equal(a.data, b.data)
