"""Every zoo deploy net that BVLC Caffe could load builds here with Caffe's blob and parameter shapes;
the NVCaffe-only deploy nets (fp16 types, BatchNorm scale_bias, SSD layers) build too."""
import csv
import json

import pytest

from conftest import GOLDEN, ZOO
import distcaffe as caffe


def _deploy_files():
    manifest = ZOO / "MANIFEST.tsv"
    if not manifest.is_file():
        return []
    with open(manifest) as f:
        return [r["relative_path"] for r in csv.DictReader(f, delimiter="\t") if r["kind"] == "deploy"]


def _report():
    path = GOLDEN / "shapes" / "_report.json"
    return json.load(open(path))["results"] if path.is_file() else {}


DEPLOY = _deploy_files()
REPORT = _report()
LOADABLE = [p for p in DEPLOY if REPORT.get(p) == "ok"]
NVCAFFE_ONLY = [p for p in DEPLOY if p in REPORT and REPORT[p] != "ok"]


def _shapes_json(rel):
    return GOLDEN / "shapes" / (rel.rsplit(".prototxt", 1)[0] + ".json")


@pytest.mark.parametrize("rel", LOADABLE)
def test_deploy_net_shapes_equal_caffe(rel):
    ref = json.load(open(_shapes_json(rel)))
    net = caffe.Net(str(ZOO / rel), caffe.TEST)
    assert list(net.blobs) == list(ref["blobs"]), "blob names/order differ"
    for name, shape in ref["blobs"].items():
        assert list(net.blobs[name].shape) == shape, "blob %s: %s != %s" % (name, net.blobs[name].shape, shape)
    assert [(l.name, l.type) for l in net.layers] == [(l["name"], l["type"]) for l in ref["layers"]]
    for layer, lref in zip(net.layers, ref["layers"]):
        assert [list(b.shape) for b in layer.blobs] == lref["params"], "params of layer %s" % layer.name
    assert net.inputs == ref["inputs"]
    assert net.outputs == ref["outputs"]


@pytest.mark.parametrize("rel", NVCAFFE_ONLY)
def test_nvcaffe_only_deploy_nets_build(rel):
    net = caffe.Net(str(ZOO / rel), caffe.TEST)
    assert net.outputs and all(net.blobs[o].count > 0 for o in net.outputs)


def test_corpus_present(zoo):
    assert len(LOADABLE) >= 40 and len(NVCAFFE_ONLY) == 4
