"""Test helpers: run a ../shared/golden/layers case through our Net, and a float64 gradient checker.

`run_golden_case` reads the case layout documented in golden/README.md (cases are data, not code).
`check_gradient` is Caffe's GradientChecker idea in float64: analytic diffs from `backward` against
central differences of the scalar sum(top * R) for random R, over every bottom and parameter element.
"""
import json
import os

import numpy as np
from google.protobuf import text_format

from distcaffe.blob import Blob
from distcaffe.layers import create_layer, fastpath
from distcaffe.net import TEST, TRAIN, Net
from distcaffe.proto import caffe_pb2

RTOL, ATOL = 1e-4, 1e-5


def close(actual, ref):
    """The golden tolerance: |a - r| <= 1e-4|r| + 1e-5 max(1, |r|) elementwise."""
    actual = np.asarray(actual, np.float64)
    ref = np.asarray(ref, np.float64)
    if actual.shape != ref.shape and actual.size == ref.size:
        actual = actual.reshape(ref.shape)
    if actual.shape != ref.shape:
        return False, "shape %s != reference %s" % (actual.shape, ref.shape)
    bound = RTOL * np.abs(ref) + ATOL * np.maximum(1.0, np.abs(ref))
    err = np.abs(actual - ref)
    bad = ~(err <= bound)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err - bound, -np.inf)), ref.shape)
        return False, "%d/%d elements off; worst at %s: got %r want %r" % (bad.sum(), ref.size, i, actual[i], ref[i])
    return True, ""


def run_golden_case(case_dir):
    """Returns a list of failure strings (empty when every top/diff/param matches the golden numbers)."""
    meta = json.load(open(os.path.join(case_dir, "meta.json")))
    data = np.load(os.path.join(case_dir, "data.npz"))
    cwd = os.getcwd()
    os.chdir(case_dir)  # sources (e.g. infogain H) are relative to the case directory
    try:
        net = Net(os.path.join(case_dir, "net.prototxt"), TRAIN if meta["phase"] == "TRAIN" else TEST)
    finally:
        os.chdir(cwd)
    failures = []

    def check(what, actual, ref):
        ok, msg = close(actual, ref)
        if not ok:
            failures.append("%s: %s" % (what, msg))

    for key in data.files:
        if key.startswith("bottom__"):
            name = key[len("bottom__"):]
            if "src_" + name in net.params:
                net.params["src_" + name][0].data[...] = data[key].reshape(net.params["src_" + name][0].shape)
            else:
                net.blobs[name].reshape(data[key].shape)
                net.blobs[name].data[...] = data[key]
        elif key.startswith("param__"):
            _, layer, i = key.split("__")
            net.params[layer][int(i)].data[...] = data[key].reshape(net.params[layer][int(i)].shape)
    loss = net.forward_prefilled()
    if "net_loss" in data.files:
        check("net_loss", np.float64(loss), data["net_loss"])
    for key in data.files:
        if key.startswith("top__"):
            check(key, net.blobs[key[5:]].data, data[key])
        elif key.startswith("param_after_forward__"):
            _, layer, i = key.split("__")
            check(key, net.params[layer][int(i)].data, data[key])
    if not meta.get("backward_run", True):
        return failures
    bottoms = set()
    for ids in net.bottom_ids:
        bottoms.update(ids)
    for b in bottoms:
        net._blobs[b].diff[...] = 0
    for blobs in net.params.values():
        for p in blobs:
            p.diff[...] = 0
    for key in data.files:
        if key.startswith("top_diff__"):
            net.blobs[key[len("top_diff__"):]].diff[...] = data[key]
    net.backward_from_to(len(net.layers) - 1, 0)
    for key in data.files:
        if key.startswith("bottom_diff__"):
            name = key[len("bottom_diff__"):]
            blob = net.params["src_" + name][0] if "src_" + name in net.params else net.blobs[name]
            check(key, blob.diff, data[key])
        elif key.startswith("param_diff__"):
            _, layer, i = key.split("__")
            check(key, net.params[layer][int(i)].diff, data[key])
    return failures


def make_layer(layer_text, dtype=np.float64, phase=TRAIN):
    lp = text_format.Parse(layer_text, caffe_pb2.LayerParameter())
    if not lp.name:
        lp.name = "layer"
    lp.phase = phase
    return create_layer(lp, dtype=dtype)


def fast_pass(text, x, dtype, with_fast, num_top=1, in_place=False, phase=TRAIN):
    """Forward + backward of one layer with numba's compiled loops on or off (parameters and top diff
    seeded); returns its tops, the bottom diff and any parameter diffs."""
    before = fastpath.set_enabled(with_fast)
    try:
        layer = make_layer(text, dtype, phase)
        bottom = Blob(x.shape, dtype)
        bottom.data[...] = x
        top = [bottom] if in_place else [Blob(dtype=dtype) for _ in range(num_top)]
        layer.setup([bottom], top)
        for p in layer.blobs:
            p.data[...] = np.random.default_rng(1).standard_normal(p.shape)
        layer.forward([bottom], top)
        top[0].diff[...] = np.random.default_rng(2).standard_normal(top[0].shape)
        layer.backward(top, [True], [bottom])
        return [t.data.copy() for t in top] + [bottom.diff.copy()] + [p.diff.copy() for p in layer.blobs]
    finally:
        fastpath.set_enabled(before)


def setup_layer(layer_text, arrays, num_top=1, phase=TRAIN, dtype=np.float64, in_place=False):
    """A layer set up on blobs holding `arrays` (top 0 is bottom 0 when in_place); returns (layer, bottom, top)."""
    layer = make_layer(layer_text, dtype, phase)
    bottom = []
    for i, a in enumerate(arrays):
        b = Blob(np.shape(a), dtype, name="b%d" % i)
        b.data[...] = a
        bottom.append(b)
    top = [bottom[0]] if in_place else [Blob(dtype=dtype, name="t%d" % i) for i in range(num_top)]
    layer.setup(bottom, top)
    return layer, bottom, top


def check_gradient(layer_text, bottom_arrays, num_top=1, check_bottoms=None, check_params=True, phase=TRAIN,
                   step=1e-6, tol=1e-6, seed=1701, param_init=None):
    """Assert analytic == numeric gradients (float64) for a layer; returns the layer for extra checks.

    `check_bottoms`: indices of bottoms to check (default: all). Errors are relative to max(1, |grad|).
    """
    rng = np.random.default_rng(seed)
    layer, bottom, top = setup_layer(layer_text, bottom_arrays, num_top, phase)
    if param_init is not None:
        param_init(layer)

    def objective(weights):
        layer.reshape(bottom, top)
        layer.forward(bottom, top)
        return sum(float((t.data * w).sum()) for t, w in zip(top, weights))

    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    weights = [rng.standard_normal(t.shape) for t in top]
    for t, w in zip(top, weights):
        t.diff[...] = w
    for p in layer.blobs:
        p.diff[...] = 0
    checks = list(range(len(bottom))) if check_bottoms is None else list(check_bottoms)
    layer.param_propagate_down = [True] * len(layer.blobs)
    layer.backward(top, [i in checks for i in range(len(bottom))], bottom)
    targets = [("bottom %d" % i, bottom[i], bottom[i].diff.copy()) for i in checks]
    if check_params:
        targets += [("param %d" % i, p, p.diff.copy()) for i, p in enumerate(layer.blobs)]
    for what, blob, analytic in targets:
        flat = blob.data.reshape(-1)
        numeric = np.zeros(flat.size)
        for k in range(flat.size):
            orig = flat[k]
            flat[k] = orig + step
            fp = objective(weights)
            flat[k] = orig - step
            fm = objective(weights)
            flat[k] = orig
            numeric[k] = (fp - fm) / (2 * step)
        err = np.abs(numeric - analytic.reshape(-1)) / np.maximum(1.0, np.abs(numeric))
        assert err.max() <= tol, "%s: gradient mismatch %g at %d (analytic %r, numeric %r)" % (
            what, err.max(), int(err.argmax()), analytic.reshape(-1)[err.argmax()], numeric[err.argmax()])
    return layer
