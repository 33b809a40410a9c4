"""The golden LMDBs written by BVLC Caffe's tools: we read them exactly, and our tools rewrite them byte for byte."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from distcaffe.data import LMDBReader
from distcaffe.data.datum import parse_datum
from distcaffe.io import blobproto_to_array, read_blobproto
from distcaffe.data.sources import DBSource
from distcaffe.launcher.cli import main

DBS = ["color_lmdb", "resized_lmdb", "gray_lmdb", "gray_resized_lmdb", "encoded_lmdb", "mnist_small/mnist_lmdb"]


def _contents(path):
    reader = LMDBReader(str(path))
    try:
        return dict(reader.items())
    finally:
        reader.close()


@pytest.mark.parametrize("db", DBS)
def test_golden_lmdb_reads_to_its_contents(golden, db):
    z = np.load(golden / "lmdb" / (db + "_contents.npz"))
    src = DBSource(str(golden / "lmdb" / db), "test")
    assert [k.decode() for k in src.keys] == list(z["keys"])
    for i in range(len(src)):
        arr, label = src.read(i)
        assert label == z["labels"][i]
        if z["encoded"][i]:
            raw = parse_datum(src.reader.get(src.keys[i]), "x").data
            assert raw == z["raw__%d" % i].tobytes()
            expect = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))[:, :, ::-1].transpose(2, 0, 1)
            np.testing.assert_array_equal(arr, expect)
        else:
            assert arr.dtype == np.uint8 and arr.shape == tuple(z["shapes"][i])
            np.testing.assert_array_equal(arr, z["data__%d" % i])


def _rerun(golden, key, cwd, out, monkeypatch):
    """Run the Caffe command meta.json recorded under `key` with our CLI (Caffe's tool name is our
    subcommand), from `cwd`, writing to `out` instead; returns `out`."""
    argv = json.loads((golden / "lmdb" / "meta.json").read_text())["commands"][key].split()
    monkeypatch.chdir(cwd)
    argv[-1] = str(out)
    assert main(argv) == 0
    return out


@pytest.mark.parametrize("db", ["color_lmdb", "resized_lmdb", "gray_lmdb", "gray_resized_lmdb", "encoded_lmdb"])
def test_convert_imageset_writes_caffes_bytes(golden, tmp_path, monkeypatch, db):
    root = golden / "lmdb"
    assert _contents(_rerun(golden, db, root, tmp_path / db, monkeypatch)) == _contents(root / db)


def test_convert_mnist_data_writes_caffes_bytes(golden, tmp_path, monkeypatch):
    root = golden / "lmdb" / "mnist_small"
    out = _rerun(golden, "mnist_small/mnist_lmdb", root, tmp_path / "mnist_lmdb", monkeypatch)
    assert _contents(out) == _contents(root / "mnist_lmdb")


@pytest.mark.parametrize("name", ["mean.binaryproto", "resized_mean.binaryproto"])
def test_compute_image_mean_matches_golden_bytes(golden, tmp_path, monkeypatch, name):
    root = golden / "lmdb"
    assert _rerun(golden, name, root, tmp_path / name, monkeypatch).read_bytes() == (root / name).read_bytes()
    ours = blobproto_to_array(read_blobproto(str(tmp_path / name)))
    np.testing.assert_array_equal(ours, np.load(root / name.replace(".binaryproto", ".npy")))


def test_decode_gray_png_matches_opencv(golden):
    """force_gray on an encoded colour PNG gives the same pixels Caffe stored in gray_lmdb."""
    enc, gray = DBSource(str(golden / "lmdb/encoded_lmdb"), "t", color=False), np.load(
        golden / "lmdb/gray_lmdb_contents.npz")
    for i in range(len(enc)):
        np.testing.assert_array_equal(enc.read(i)[0], gray["data__%d" % i])
