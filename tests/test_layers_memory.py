"""DummyData, MemoryData and Python layers: Caffe's fill/refill rules, batches served from arrays, and user layer
classes loaded from a module, alone and inside a Net."""
import sys
import textwrap

import numpy as np
import pytest

from distcaffe import backend
from distcaffe.blob import Blob
from distcaffe.errors import NetError
from layer_harness import make_layer


def setup(text, bottom_arrays=(), num_top=1):
    layer = make_layer(text)
    bottom = []
    for a in bottom_arrays:
        b = Blob(np.shape(a), np.float64)
        b.data[...] = a
        bottom.append(b)
    top = [Blob(dtype=np.float64, name="t%d" % i) for i in range(num_top)]
    layer.setup(bottom, top)
    return layer, bottom, top


def test_dummy_data_constant_filled_once_random_refilled():
    backend.set_random_seed(3)
    layer, _, top = setup('type: "DummyData" dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 4 } '
                          'data_filler { type: "constant" value: 7 } data_filler { type: "gaussian" std: 1 } }',
                          num_top=2)
    assert top[0].shape == (2, 3) and top[1].shape == (4,)
    assert (top[0].data == 7).all()
    top[0].data[...] = 1
    layer.reshape([], top)
    layer.forward([], top)
    first = top[1].data.copy()
    layer.forward([], top)
    assert (top[0].data == 1).all()             # a constant top is never refilled, as in Caffe
    assert first.any() and not np.array_equal(first, top[1].data)


def test_dummy_data_defaults_and_legacy_dims():
    _, _, top = setup('type: "DummyData" dummy_data_param { num: 2 channels: 3 height: 1 width: 2 }', num_top=2)
    assert top[0].shape == top[1].shape == (2, 3, 1, 2)
    assert not top[0].data.any()


@pytest.mark.parametrize("param,msg", [
    ('shape { dim: 1 } num: 1', "Both shape and legacy fields"),
    ('shape { dim: 1 } shape { dim: 2 } shape { dim: 3 }', "Must specify 'shape' once, or once per top blob \\(2\\)"),
    ('num: 1 channels: 1 height: 1', "Must specify 'width' once"),
    ('shape { dim: 1 } data_filler {} data_filler {} data_filler {}', "Number of data fillers must be 0, 1 or equal to the number of tops: 2; you specified 3")])
def test_dummy_data_errors(param, msg):
    with pytest.raises(NetError, match=msg):
        setup('type: "DummyData" dummy_data_param { %s }' % param, num_top=2)


MEM = 'name: "mem" type: "MemoryData" memory_data_param { batch_size: 2 channels: 1 height: 2 width: 3 }'


def test_memory_data_serves_batches_and_wraps():
    layer, _, top = setup(MEM, num_top=2)
    data = np.arange(4 * 6, dtype=np.float32).reshape(4, 1, 2, 3)
    layer.set_input_arrays(data, np.array([5, 6, 7, 8], np.float32))
    seen = []
    for _ in range(3):
        layer.reshape([], top)
        layer.forward([], top)
        assert top[0].shape == (2, 1, 2, 3) and top[1].shape == (2,)
        seen.append((top[0].data.copy(), top[1].data.tolist()))
    assert np.array_equal(seen[0][0], data[:2]) and seen[0][1] == [5, 6]
    assert np.array_equal(seen[1][0], data[2:]) and seen[1][1] == [7, 8]
    assert np.array_equal(seen[2][0], data[:2])


def test_memory_data_errors():
    with pytest.raises(NetError, match="must be specified and positive"):
        setup('type: "MemoryData" memory_data_param { batch_size: 2 channels: 1 }', num_top=2)
    layer, _, top = setup(MEM, num_top=2)
    with pytest.raises(NetError, match="needs to be initialized"):
        layer.forward([], top)
    with pytest.raises(NetError, match="data array has wrong number of width"):
        layer.set_input_arrays(np.zeros((2, 1, 2, 4)), np.zeros(2))
    with pytest.raises(NetError, match="multiple of batch size 2"):
        layer.set_input_arrays(np.zeros((3, 1, 2, 3)), np.zeros(3))
    with pytest.raises(NetError, match="same first dimension"):
        layer.set_input_arrays(np.zeros((2, 1, 2, 3)), np.zeros(4))
    with pytest.raises(NetError, match="must be 4-d"):
        layer.set_input_arrays(np.zeros((2, 6)), np.zeros(2))


USER_LAYER = textwrap.dedent('''
    import numpy as np
    import distcaffe as caffe

    class Scale(caffe.Layer):
        """top = factor * bottom * w with a learnable scalar w; factor from param_str."""
        def setup(self, bottom, top):
            self.factor = float(self.param_str or 1)
            self.blobs.add_blob(1)
            self.blobs[0].data[...] = 1.5

        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].shape)

        def forward(self, bottom, top):
            top[0].data[...] = self.factor * self.blobs[0].data[0] * bottom[0].data

        def backward(self, top, propagate_down, bottom):
            self.blobs[0].diff[...] += (self.factor * top[0].diff * bottom[0].data).sum()
            if propagate_down[0]:
                bottom[0].diff[...] = self.factor * self.blobs[0].data[0] * top[0].diff

    class Plain:
        def setup(self, bottom, top):
            self.seen_phase = self.phase
        def reshape(self, bottom, top):
            top[0].reshape(1)
        def forward(self, bottom, top):
            top[0].data[...] = 42
        def backward(self, top, propagate_down, bottom):
            pass

    class Picky(Plain):
        def setup(self, bottom, top):
            raise Exception("Need two bottoms to compute distance.")

    class Odd(Exception):
        def __init__(self, a, b):
            super().__init__("%s/%s" % (a, b))

    class Strict(Plain):
        def reshape(self, bottom, top):
            raise RuntimeError("bad shape")

    class Stranger(Plain):
        def setup(self, bottom, top):
            raise Odd(1, 2)
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    name = "dc_user_layers_%d" % id(tmp_path)
    (tmp_path / (name + ".py")).write_text(USER_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_python_layer_standalone(user_module):
    layer, bottom, top = setup('type: "Python" python_param { module: "%s" layer: "Scale" param_str: "2" }'
                               % user_module, [np.array([1.0, -2.0])])
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    assert top[0].data.tolist() == [3.0, -6.0]
    assert len(layer.blobs) == 1 and layer.impl.param_str == "2"
    top[0].diff[...] = [1.0, 1.0]
    layer.backward(top, [True], bottom)
    assert bottom[0].diff.tolist() == [3.0, 3.0] and layer.blobs[0].diff.tolist() == [-2.0]
    plain, _, top = setup('type: "Python" python_param { module: "%s" layer: "Plain" }' % user_module)
    plain.forward([], top)
    assert top[0].data.tolist() == [42] and plain.impl.seen_phase == 0


def test_python_layer_in_net_with_loss_weight(user_module):
    from distcaffe.net import Net, TRAIN
    from distcaffe.proto import caffe_pb2
    from google.protobuf import text_format
    pytest.importorskip("distcaffe.io")
    net_param = text_format.Parse(textwrap.dedent('''
        force_backward: true
        layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 } } }
        layer { name: "py" type: "Python" bottom: "x" top: "y" loss_weight: 1
                python_param { module: "%s" layer: "Scale" param_str: "0.5" } }''' % user_module),
        caffe_pb2.NetParameter())
    net = Net(net_param, TRAIN)
    assert net.params["py"][0].data.tolist() == [1.5]
    net.blobs["x"].data[...] = [2.0, 4.0]
    assert net.forward_prefilled() == pytest.approx(0.5 * 1.5 * 6)
    net.backward_from_to(len(net.layers) - 1, 0)
    assert net.blobs["x"].diff.tolist() == [0.75, 0.75]


def test_python_layer_errors(user_module):
    with pytest.raises(NetError, match=r"layer 'layer' \(Python\): cannot import module 'no_such_mod_xyz' "
                                       r"\(python_param.module\) for class 'L': ModuleNotFoundError"):
        setup('type: "Python" python_param { module: "no_such_mod_xyz" layer: "L" }')
    with pytest.raises(NetError, match="module '%s' .* has no class 'Missing'" % user_module):
        setup('type: "Python" python_param { module: "%s" layer: "Missing" }' % user_module)
    with pytest.raises(NetError, match="python_param must name the module and the layer class"):
        setup('type: "Python" python_param { module: "%s" }' % user_module)
    with pytest.raises(NetError, match=r"^layer 'layer' \(Python\): %s\.Picky\.setup raised Exception: Need two "
                                       r"bottoms to compute distance\. \(\S+%s\.py:\d+\)$" % (user_module, user_module)):
        setup('type: "Python" python_param { module: "%s" layer: "Picky" }' % user_module)


def test_python_layer_setup_errors_keep_the_users_exception_class(user_module):
    """BVLC's test_python_layer expects a RuntimeError from a layer's setup: the one-line NetError is one too."""
    with pytest.raises(RuntimeError, match=r"^layer 'layer' \(Python\): %s\.Strict\.reshape raised RuntimeError: "
                                           r"bad shape" % user_module) as e:
        setup('type: "Python" python_param { module: "%s" layer: "Strict" }' % user_module)
    assert isinstance(e.value, NetError)
    with pytest.raises(NetError, match=r"Stranger\.setup raised Odd: 1/2"):   # cannot be rebuilt as an Odd
        setup('type: "Python" python_param { module: "%s" layer: "Stranger" }' % user_module)
