"""Diff sharing (`Net.share_diffs`, distcaffe.diff_sharing): with every shared buffer poisoned with NaN before
each backward, every layer's backward reads the same top diffs bit for bit as with private diffs, and the
parameter, input and output diffs and the loss are identical, on a branchy net (in-place BatchNorm/Scale/ReLU
chains, Splits, Concat, Eltwise, Flatten sharing its bottom's diff, Slice, a second HingeLoss loss, Silence)
and on the zoo's GoogLeNet and ResNet-50 through solver steps; reshapes re-plan; off and under LMS every diff
is private; `distcaffe train` turns it on (-share_diffs)."""
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


def branchy(batch=2):
    distcaffe.set_random_seed(0)                     # the fillers'
    net = Net(parse_net_text(BRANCHY.replace("dim: 2 dim: 3", "dim: %d dim: 3" % batch)
                             .replace("shape { dim: 2 }", "shape { dim: %d }" % batch)), TRAIN)
    rng = np.random.RandomState(1)
    net.blobs["data"].data[...] = rng.randn(*net.blobs["data"].shape)
    net.blobs["label"].data[...] = rng.randint(0, 5, batch)
    net.blobs["out"].diff[...] = rng.randn(*net.blobs["out"].shape)    # an output diff set by the user
    return net


def watch(net, poison):
    """Record, for each backward, the top diffs every layer reads; with `poison`, fill the shared buffers with
    NaN first (a diff read before it is written would then spread NaN)."""
    reads = []

    def before(i):
        if poison and net.share_diffs and i == len(net.layers) - 1:
            for arr in net._diff_sharing.buffers:
                arr.mutable_host()[...] = np.nan
        if net.layer_need_backward[i]:
            reads.extend((net._layer_names[i], t.name, t.diff.copy()) for t in net._top(i))
    net.before_backward.append(before)
    return reads


def promised(net):
    """What a user may read after backward: loss, every parameter diff, input and output diffs."""
    out = [("loss", net.blobs["loss"].data.copy())]
    out += [(lay.name, b.diff.copy()) for lay in net.layers for b in lay.blobs]
    out += [(name, net.blobs[name].diff.copy()) for name in net.inputs + net.outputs]
    return out


def equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x[:-1] == y[:-1]
        assert x[-1].tobytes() == y[-1].tobytes(), x[:-1]


def passes(net, n=2, seed=5):
    for k in range(n):
        distcaffe.set_random_seed(seed + k)          # Dropout's masks
        net.clear_param_diffs()
        net.forward_backward()


def diff_bytes(net):
    return sum(a.nbytes() for a in {id(b._diff): b._diff for b in net._blobs}.values())


def test_branchy_net_reads_and_results_are_bit_identical():
    ref, got = branchy(), branchy()
    got.share_diffs = True
    ref_reads, got_reads = watch(ref, False), watch(got, True)
    passes(ref)
    passes(got)
    equal(ref_reads, got_reads)
    equal(promised(ref), promised(got))
    assert got.share_diffs and diff_bytes(got) < 0.6 * diff_bytes(ref)


def test_which_diffs_are_shared():
    net = branchy()
    net.share_diffs = True
    passes(net, 1)
    shared = {b.name for b, _, _ in net._diff_sharing.assigned}
    # intermediate blobs of in-place chains, Split branches, Concat/Slice/Flatten (sharing its bottom's) share;
    # so does Silence's bottom (force_backward: Silence writes zeros, Slice reads them)
    assert {"conv1", "conv2a", "sum", "cat", "pool", "s1", "flat", "ip", "s2"} <= shared
    assert any("split" in name for name in shared)
    # inputs (data: written by conv1's backward, read by no layer), outputs, loss tops and HingeLoss's bottom
    # (it keeps values in that diff from forward to backward) stay private
    assert not shared & {"data", "label", "loss", "hinge", "out"}
    assert "ip_ip_0_split_0" in shared and "ip_ip_0_split_1" not in shared    # the second feeds the HingeLoss
    assert len(net._diff_sharing.buffers) < len(shared)


def test_reshape_replans_and_off_restores_private_diffs():
    ref, got = branchy(), branchy()
    got.share_diffs = True
    passes(ref, 1)
    passes(got, 1)
    for net in (ref, got):
        net.blobs["data"].reshape(4, 3, 8, 8)
        net.blobs["label"].reshape(4)
        net.blobs["out"].reshape(4, 4, 8, 8)
        net.reshape()
        rng = np.random.RandomState(2)
        net.blobs["data"].data[...] = rng.randn(4, 3, 8, 8)
        net.blobs["label"].data[...] = rng.randint(0, 5, 4)
        net.blobs["out"].diff[...] = 1.0
    plan = got._diff_sharing.buffers
    ref_reads, got_reads = watch(ref, False), watch(got, True)
    passes(ref)
    passes(got)
    assert got._diff_sharing.buffers is not plan
    equal(ref_reads, got_reads)
    equal(promised(ref), promised(got))
    got.share_diffs = False
    arrays = [b._diff for b in got._blobs if b.name not in ("flat",)]
    assert len({id(a) for a in arrays}) == len(arrays)              # every diff private again
    assert got.blobs["flat"]._diff is got.blobs["s1"]._diff        # Flatten still shares its bottom's
    passes(ref)
    passes(got)
    equal(promised(ref), promised(got))


def test_stays_off_under_large_model_support():
    lms.set_lms(1, budget=10 ** 9)
    try:
        net = branchy()
    finally:
        lms.set_lms(0)
    net.share_diffs = True
    assert not net.share_diffs and net.lms is not None


@pytest.mark.slow
@pytest.mark.parametrize("name", ["googlenet", "resnet50"])
def test_zoo_training_is_bit_identical(zoo, name):
    """Forward, backward and an SGD step of the zoo net at batch 2: every layer's reads and every value the
    same with shared (NaN-poisoned) diffs as with private ones, in less diff memory."""
    path = {"googlenet": "BVLC__caffe/models/bvlc_googlenet/deploy.prototxt",
            "resnet50": "KaimingHe__deep-residual-networks/prototxt/ResNet-50-deploy.prototxt"}[name]
    param = train_param(zoo / path, 2)
    ref, got = make_solver(param), make_solver(param)
    got.net.share_diffs = True
    ref_reads, got_reads = watch(ref.net, False), watch(got.net, True)
    for solver in (ref, got):
        distcaffe.set_random_seed(1)
        solver.net.forward_prefilled()
        solver.net.backward()
        distcaffe.set_random_seed(2)
        solver.step(1)
    equal(ref_reads, got_reads)
    equal(promised(ref.net), promised(got.net))
    assert diff_bytes(got.net) < 0.25 * diff_bytes(ref.net)


@pytest.mark.slow
def test_distcaffe_train_shares_diffs_with_the_same_weights(tmp_path, mnist):
    """`distcaffe train` shares diffs unless -share_diffs=false; the trained weights are the same bytes."""
    weights = {}
    for flag in ("-share_diffs=true", "-noshare_diffs"):
        (tmp_path / flag).mkdir()
        wd = workdir(tmp_path / flag, mnist, max_iter=6, snapshot=6, test_interval=3)
        r = run(["train", "-solver", "solver.prototxt", flag], cwd=wd)
        assert r.returncode == 0, r.stderr[-2000:]
        assert ("Diff sharing: " in r.stderr) == (flag == "-share_diffs=true")
        weights[flag] = (wd / "snap" / "lenet_iter_6.caffemodel").read_bytes()
    assert weights["-share_diffs=true"] == weights["-noshare_diffs"]
