"""Blob sharing (`Net.share_diffs`, `Net.share_data`, distcaffe.blob_sharing): with every shared buffer
poisoned with NaN (diffs before each backward; data before each forward and again as soon as its last user in
forward has run), every layer's backward reads the same top diffs bit for bit as with private blobs, and the
parameter, input and output values and the loss are identical, on a branchy net (in-place BatchNorm/Scale/ReLU
chains, Splits, Concat, Eltwise, Flatten sharing its bottom's arrays, Slice, a second HingeLoss loss, Silence)
and on the zoo's GoogLeNet and ResNet-50 through solver steps; reshapes re-plan; off and under LMS every array
is private; `distcaffe train` shares both (-share_blobs)."""
import numpy as np
import pytest

import distcaffe
from distcaffe import lms
from distcaffe.io import parse_net_text
from distcaffe.net import TRAIN, Net
from lms_helpers import make_solver, train_param
from test_cli_train import mnist, run, workdir  # noqa: F401 (mnist is a fixture)

BRANCHY = """
name: "branchy"
force_backward: true
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "sc1" type: "Scale" bottom: "conv1" top: "conv1"
        scale_param { bias_term: true filler { type: "uniform" min: 0.5 max: 1.5 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2a" type: "Convolution" bottom: "conv1" top: "conv2a"
        convolution_param { num_output: 4 kernel_size: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "conv2b" type: "Convolution" bottom: "conv1" top: "conv2b"
        convolution_param { num_output: 2 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu2b" type: "ReLU" bottom: "conv2b" top: "conv2b" }
layer { name: "sum" type: "Eltwise" bottom: "conv2a" bottom: "conv1" top: "sum" }
layer { name: "cat" type: "Concat" bottom: "sum" bottom: "conv2b" top: "cat" }
layer { name: "pool" type: "Pooling" bottom: "cat" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "slice" type: "Slice" bottom: "pool" top: "s1" top: "s2" slice_param { axis: 1 slice_point: 4 } }
layer { name: "silence" type: "Silence" bottom: "s2" }
layer { name: "flat" type: "Flatten" bottom: "s1" top: "flat" }
layer { name: "drop" type: "Dropout" bottom: "flat" top: "flat" dropout_param { dropout_ratio: 0.3 } }
layer { name: "ip" type: "InnerProduct" bottom: "flat" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "hinge" type: "HingeLoss" bottom: "ip" bottom: "label" top: "hinge" loss_weight: 0.5 }
layer { name: "out" type: "TanH" bottom: "conv2a" top: "out" }
"""
ZOO = {"googlenet": "BVLC__caffe/models/bvlc_googlenet/deploy.prototxt",
       "resnet50": "KaimingHe__deep-residual-networks/prototxt/ResNet-50-deploy.prototxt"}


def branchy(batch=2, precision=""):
    distcaffe.set_random_seed(0)                     # the fillers'
    text = BRANCHY.replace("dim: 2 dim: 3", "dim: %d dim: 3" % batch).replace("shape { dim: 2 }", "shape { dim: %d }"
                                                                              % batch)
    net = Net(parse_net_text(precision + text), TRAIN)
    rng = np.random.RandomState(1)
    net.blobs["data"].data[...] = rng.randn(*net.blobs["data"].shape)
    net.blobs["label"].data[...] = rng.randint(0, 5, batch)
    net.blobs["out"].diff[...] = rng.randn(*net.blobs["out"].shape)    # an output diff set by the user
    return net


def share(net, on=True):
    net.share_diffs = net.share_data = on
    return net


def watch(net, poison):
    """Record, for each backward, the top diffs every layer reads; with `poison`, fill the shared buffers with
    NaN (a value read before it is written, or after its span, would then spread NaN)."""
    reads = []

    def before_forward(i):
        if poison and net.share_data and i == 0:
            for arr in net._sharing["_data"].buffers:
                arr.mutable_host()[...] = np.nan

    def after_forward(i):
        if poison and net.share_data:
            for _, end, ids in net._sharing["_data"].intervals:
                if end == i:
                    net._blobs[ids[0]].data[...] = np.nan

    def before_backward(i):
        if poison and net.share_diffs and i == len(net.layers) - 1:
            for arr in net._sharing["_diff"].buffers:
                arr.mutable_host()[...] = np.nan
        if net.layer_need_backward[i]:
            reads.extend((net._layer_names[i], t.name, t.diff.copy()) for t in net._top(i))
    net.before_forward.append(before_forward)
    net.after_forward.append(after_forward)
    net.before_backward.append(before_backward)
    return reads


def promised(net):
    """What a training loop may read after a pass: loss, every parameter, input and output diffs and data."""
    out = [(lay.name, b.data.copy()) for lay in net.layers for b in lay.blobs]
    out += [(lay.name, b.diff.copy()) for lay in net.layers for b in lay.blobs]
    out += [(name, net.blobs[name].data.copy()) for name in net.inputs + net.outputs]
    out += [(name, net.blobs[name].diff.copy()) for name in net.inputs + net.outputs]
    return out


def equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x[:-1] == y[:-1]
        assert x[-1].tobytes() == y[-1].tobytes(), x[:-1]


def passes(net, n=3, seed=5):
    for k in range(n):
        distcaffe.set_random_seed(seed + k)          # Dropout's masks
        net.clear_param_diffs()
        net.forward_backward()


def nbytes(net, field):
    return sum(a.nbytes() for a in {id(getattr(b, field)): getattr(b, field) for b in net._blobs}.values())


@pytest.mark.parametrize("precision", ["", "default_forward_type: FLOAT16 default_backward_type: FLOAT16",
                                       "default_backward_type: FLOAT16"])
def test_branchy_net_reads_and_results_are_bit_identical(precision):
    """Also with NVCaffe's float16 storage, and float16 diffs of float32 data (buffers are shared per type)."""
    ref, got = branchy(precision=precision), share(branchy(precision=precision))
    ref_reads, got_reads = watch(ref, False), watch(got, True)
    passes(ref)
    passes(got)
    equal(ref_reads, got_reads)
    equal(promised(ref), promised(got))
    assert nbytes(got, "_diff") < 0.6 * nbytes(ref, "_diff") and nbytes(got, "_data") < nbytes(ref, "_data")
    assert got.share_diffs and got.share_data and not ref.share_diffs and not ref.share_data


def test_which_blobs_are_shared():
    net = share(branchy())
    passes(net, 2)
    shared = {b.name for b, _, _ in net._sharing["_diff"].assigned}
    # intermediate blobs of in-place chains, Split branches, Concat/Slice/Flatten (sharing its bottom's) share;
    # so does Silence's bottom (force_backward: Silence writes zeros, Slice reads them)
    assert {"conv1", "conv2a", "sum", "cat", "pool", "s1", "flat", "ip", "s2"} <= shared
    assert any("split" in name for name in shared)
    # inputs (data: written by conv1's backward, read by no layer), outputs, loss tops and HingeLoss's bottom
    # (it keeps values in that diff from forward to backward) stay private
    assert not shared & {"data", "label", "loss", "hinge", "out"}
    assert "ip_ip_0_split_0" in shared and "ip_ip_0_split_1" not in shared    # the second feeds the HingeLoss
    assert len(net._sharing["_diff"].buffers) < len(shared)
    # data: what no backward reads (the Eltwise SUM, Concat and MAX pooling outputs: sum's buffer is pool's
    # again); Convolution and InnerProduct inputs (flat, which s1 shares), ReLU's blobs, inputs and outputs
    # keep theirs, as does Silence's bottom (Silence may read what it likes)
    shared = {b.name for b, _, _ in net._sharing["_data"].assigned}
    assert shared == {"sum", "cat", "pool"} and len(net._sharing["_data"].buffers) == 2


def test_reshape_replans_and_off_restores_private_arrays():
    ref, got = branchy(), share(branchy())
    passes(ref, 2)
    passes(got, 2)
    for net in (ref, got):
        net.blobs["data"].reshape(4, 3, 8, 8)
        net.blobs["label"].reshape(4)
        net.blobs["out"].reshape(4, 4, 8, 8)
        net.reshape()
        rng = np.random.RandomState(2)
        net.blobs["data"].data[...] = rng.randn(4, 3, 8, 8)
        net.blobs["label"].data[...] = rng.randint(0, 5, 4)
        net.blobs["out"].diff[...] = 1.0
    plans = [list(got._sharing[f].buffers) for f in ("_diff", "_data")]
    ref_reads, got_reads = watch(ref, False), watch(got, True)
    passes(ref)
    passes(got)
    for before, field in zip(plans, ("_diff", "_data")):
        assert not set(map(id, before)) & set(map(id, got._sharing[field].buffers))
    equal(ref_reads, got_reads)
    equal(promised(ref), promised(got))
    share(got, False)
    for field in ("_diff", "_data"):
        arrays = {b.name: getattr(b, field) for b in got._blobs}
        assert arrays.pop("flat") is arrays["s1"]                 # Flatten still shares its bottom's
        if field == "_data":                                     # so do Split's tops, with their bottom
            assert arrays.pop("conv1_relu1_0_split_0") is arrays["conv1"]
            for name in ("conv1_relu1_0_split_1", "conv1_relu1_0_split_2", "label_data_1_split_0",
                         "label_data_1_split_1", "conv2a_conv2a_0_split_0", "conv2a_conv2a_0_split_1",
                         "ip_ip_0_split_0", "ip_ip_0_split_1"):
                arrays.pop(name)
        assert len({id(a) for a in arrays.values()}) == len(arrays)
    passes(ref)
    passes(got)
    equal(promised(ref), promised(got))


def test_stays_off_under_large_model_support():
    lms.set_lms(1, budget=10 ** 9)
    try:
        net = branchy()
    finally:
        lms.set_lms(0)
    share(net)
    assert not net.share_diffs and not net.share_data and net.lms is not None


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_training_is_bit_identical(zoo, name):
    """Forward, backward and two SGD steps of the zoo net at batch 2: every layer's reads and every value the
    same with shared (NaN-poisoned) blobs as with private ones, in less memory."""
    param = train_param(zoo / ZOO[name], 2)
    ref, got = make_solver(param), make_solver(param)
    share(got.net)
    ref_reads, got_reads = watch(ref.net, False), watch(got.net, True)
    for solver in (ref, got):
        distcaffe.set_random_seed(1)
        solver.net.forward_prefilled()
        solver.net.backward()
        for k in range(2):
            distcaffe.set_random_seed(k + 2)
            solver.step(1)
    equal(ref_reads, got_reads)
    equal(promised(ref.net), promised(got.net))
    assert nbytes(got.net, "_diff") < 0.25 * nbytes(ref.net, "_diff")
    assert nbytes(got.net, "_data") < (0.8 if name == "resnet50" else 1) * nbytes(ref.net, "_data")


@pytest.mark.slow
def test_distcaffe_train_shares_blobs_with_the_same_weights(tmp_path, mnist):
    """`distcaffe train` shares blobs unless -share_blobs=false; the trained weights are the same bytes."""
    weights = {}
    for flag in ("-share_blobs=true", "-noshare_blobs"):
        (tmp_path / flag).mkdir()
        wd = workdir(tmp_path / flag, mnist, max_iter=6, snapshot=6, test_interval=3)
        r = run(["train", "-solver", "solver.prototxt", flag], cwd=wd)
        assert r.returncode == 0, r.stderr[-2000:]
        assert ("Blob sharing (diff): " in r.stderr) == (flag == "-share_blobs=true")
        weights[flag] = (wd / "snap" / "lenet_iter_6.caffemodel").read_bytes()
    assert weights["-share_blobs=true"] == weights["-noshare_blobs"]
