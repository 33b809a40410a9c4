"""LevelDB (`backend: LEVELDB`, the `leveldb` extra): tools write it, the Data layer and compute_image_mean read
it with the same records as from LMDB, and its limits are clear errors (no plyvel, a second opener)."""
import sys

import numpy as np
import pytest

import distcaffe as caffe
from distcaffe.data import array_to_datum
from distcaffe.data.db import open_reader, open_writer
from distcaffe.errors import DataError
from distcaffe.io import parse_net_text
from distcaffe.launcher.cli import main
from test_data_layers import close, data_net, labels_of


def _write(path, n, backend):
    with open_writer(path, backend) as w:
        for i in range(n):
            w.put("%08d" % i, array_to_datum(np.full((1, 3, 2), i % 256, np.uint8), i).SerializeToString())
    return str(path)


def test_leveldb_round_trip_in_key_order(tmp_path):
    _write(tmp_path / "db", 2500, "leveldb")              # > 1000: several write batches
    assert not list(tmp_path.glob("db.tmp-*"))
    r = open_reader(str(tmp_path / "db"), "t")
    assert r.label == "LevelDB" and len(r) == 2500 and r.keys()[:2] == [b"00000000", b"00000001"]
    again = open_reader(str(tmp_path / "db"), "t")        # same process: the handle is shared
    assert again.get(b"00000007") == r.get(b"00000007")
    again.close()
    r.close()


@pytest.mark.parametrize("declared", ["LEVELDB", "LMDB"])
def test_data_layer_reads_leveldb_like_lmdb(tmp_path, declared):
    """Caffe's default backend is LEVELDB; whichever is declared, the database on disk is read."""
    ldb, lmdb = _write(tmp_path / "l", 10, "leveldb"), _write(tmp_path / "m", 10, "lmdb")
    text = ('layer { name: "d" type: "Data" top: "data" top: "label" data_param { source: "%s" batch_size: 4 '
            'backend: %s } }' % (ldb, declared))
    a = caffe.Net(parse_net_text(text), caffe.TRAIN)
    b = data_net(lmdb, batch=4)
    assert labels_of(a, 3) == labels_of(b, 3) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    a.forward()
    np.testing.assert_array_equal(a.blobs["data"].data[0], np.full((1, 3, 2), 2.0))
    close(a)
    close(b)


def test_tools_write_and_read_leveldb(golden, tmp_path):
    root, lst = str(golden / "lmdb/images") + "/", str(golden / "lmdb/list.txt")
    assert main(["convert_imageset", "-backend", "leveldb", root, lst, str(tmp_path / "ldb")]) == 0
    assert main(["convert_imageset", root, lst, str(tmp_path / "mdb")]) == 0
    assert (tmp_path / "ldb" / "CURRENT").is_file()
    assert main(["compute_image_mean", "-backend", "leveldb", str(tmp_path / "ldb"), str(tmp_path / "a.bp")]) == 0
    assert main(["compute_image_mean", str(tmp_path / "mdb"), str(tmp_path / "b.bp")]) == 0
    assert (tmp_path / "a.bp").read_bytes() == (tmp_path / "b.bp").read_bytes()


def test_missing_plyvel_names_the_extra(tmp_path, monkeypatch):
    path = _write(tmp_path / "db", 2, "leveldb")
    monkeypatch.setitem(sys.modules, "plyvel", None)
    with pytest.raises(DataError, match=r"LevelDB needs plyvel: pip install 'distcaffe\[leveldb\]'"):
        open_reader(path, "layer 'd' (Data)")
    with pytest.raises(DataError, match=r"distcaffe\[leveldb\]"):
        open_writer(str(tmp_path / "new"), "leveldb")


def test_leveldb_held_by_another_opener_is_a_clear_error(tmp_path):
    import plyvel
    path = _write(tmp_path / "db", 2, "leveldb")
    holder = plyvel.DB(path)                               # as another process would hold its LOCK
    try:
        with pytest.raises(DataError, match="cannot be opened: .*lock.*one process at a time.*convert it to LMDB"):
            open_reader(path, "layer 'd' (Data)")
    finally:
        holder.close()
    with pytest.raises(DataError, match="unknown database backend 'rocks'"):
        open_writer(str(tmp_path / "x"), "rocks")
