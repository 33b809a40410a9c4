"""Absurd but parseable inputs are one CaffeError line naming the layer or file, never a deep traceback:
sizes beyond Caffe's INT_MAX or the machine, non-finite fillers, empty blobs, negative solverstate counts."""
import numpy as np
import pytest

from distcaffe import Net
from distcaffe.errors import CaffeError
from distcaffe.io import parse_net_text, write_solverstate
from distcaffe.proto import caffe_pb2

INPUT = 'layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 28 dim: 28 } } }\n'
IP = 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { %s } }'
CASES = {
    "num_output 2^32-1": (IP % "num_output: 4294967295", r"layer 'ip'.*2\^31-1"),
    "kernel 999": ('layer { name: "conv" type: "Convolution" bottom: "data" top: "c" '
                   'convolution_param { num_output: 4 kernel_size: 999 } }', "layer 'conv'"),
    "huge pad": ('layer { name: "conv" type: "Convolution" bottom: "data" top: "c" '
                 'convolution_param { num_output: 64 kernel_size: 3 pad: 100000 } }', r"layer 'conv'.*2\^31-1"),
    "uniform max inf": (IP % 'num_output: 3 weight_filler { type: "uniform" max: inf }', "layer 'ip'.*finite"),
    "gaussian std nan": (IP % 'num_output: 3 weight_filler { type: "gaussian" std: nan }', "layer 'ip'.*finite"),
    "dim 2^31": ('layer { name: "in2" type: "Input" top: "d2" input_param { shape { dim: 2147483648 dim: 1 } } }',
                 r"layer 'in2'.*2\^31-1"),
    "count 2^32": ('layer { name: "in2" type: "Input" top: "d2" input_param { shape { dim: 65536 dim: 65536 } } }',
                   r"layer 'in2'.*2\^31-1"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_absurd_net_is_one_line_naming_the_layer(case):
    text, pattern = CASES[case]
    with pytest.raises(CaffeError, match=pattern) as e:
        Net(parse_net_text(INPUT + text), phase=caffe_pb2.TEST)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("filler", ["xavier", "msra"])
def test_fan_in_fillers_on_an_empty_blob(filler):
    net = Net(parse_net_text(INPUT + IP % ('num_output: 0 weight_filler { type: "%s" }' % filler)),
              phase=caffe_pb2.TEST)
    assert net.params["ip"][0].data.size == 0


def test_negative_solverstate_iteration_is_refused(tmp_path):
    from distcaffe.solvers import snapshot as snap
    path = tmp_path / "bad.solverstate"
    write_solverstate(caffe_pb2.SolverState(iter=-5, learned_net="x.caffemodel"), str(path))
    with pytest.raises(CaffeError, match="bad.solverstate: iteration -5"):
        snap.read_state(str(path))


def test_damaged_blob_names_file_and_layer(tmp_path):
    from distcaffe.io import array_to_blobproto, write_net_binary
    net = Net(parse_net_text(INPUT + IP % "num_output: 3"), phase=caffe_pb2.TEST)
    proto = net.to_proto()
    blob = [l for l in proto.layer if l.name == "ip"][0].blobs[0]
    blob.CopyFrom(array_to_blobproto(np.zeros((3, 2352), np.float32)))
    blob.shape.dim[1] = 2000
    write_net_binary(proto, str(tmp_path / "w.caffemodel"))
    with pytest.raises(CaffeError, match=r"w.caffemodel: layer 'ip': blob data has 7056 values but its shape 3x2000"):
        net.copy_from(str(tmp_path / "w.caffemodel"))


def test_forward_on_an_empty_blob_names_the_layer():
    text = ('layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 0 dim: 3 dim: 8 dim: 8 } } }\n'
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
            'convolution_param { num_output: 2 kernel_size: 3 } }')
    net = Net(parse_net_text(text), phase=caffe_pb2.TEST)
    with pytest.raises(CaffeError, match=r"layer 'c' \(Convolution\): forward failed for bottoms data 0 3 8 8"):
        net.forward()


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_prefetch_beyond_memory_is_refused_before_threads_start(tmp_path):
    """A batch that fits but whose prefetch queue would not: one line naming the layer, no thread started, and
    nothing raised when the half-built pipeline is collected."""
    import gc
    import threading

    import psutil

    from _dist_helpers import make_lmdb
    source = make_lmdb(tmp_path / "lmdb", n=4)
    machine = psutil.virtual_memory().total
    per_image = 1 * 4 * 4 * 4                               # a 1x4x4 float32 image
    batch = min(machine // 8, 1 << 33) // per_image         # a batch that fits the machine and INT_MAX
    prefetch = machine // (batch * per_image) + 2           # a queue that does not
    text = ('layer { name: "d" type: "Data" top: "data" top: "label" data_param { source: "%s" batch_size: %d '
            'backend: LMDB threads: 1 prefetch: %d } }' % (source, batch, prefetch))
    before = set(threading.enumerate())        # (an earlier test's thread may end meanwhile: not counted)
    with pytest.raises(CaffeError, match=r"layer 'd' \(Data\).*prefetched batches.*more than the") as e:
        Net(parse_net_text(text), phase=caffe_pb2.TRAIN)
    assert "\n" not in str(e.value)
    del e
    gc.collect()
    assert not set(threading.enumerate()) - before
