"""Data / ImageData / HDF5Data layers: batches, sharding, cache + shuffle, threads, and bad input."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import _dist_helpers as h
from google.protobuf import text_format

import distcaffe as caffe
from distcaffe.data import LMDBWriter, array_to_datum, encoded_datum, set_shard
from distcaffe.errors import DataError, NetError
from distcaffe.proto import caffe_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _whole_dataset():
    set_shard(0, 1)
    yield
    set_shard(0, 1)


def make_lmdb(path, n=10, shape=(1, 4, 4)):
    """An LMDB of n raw Datums; record i is filled with value i and labelled i."""
    with LMDBWriter(path) as w:
        for i in range(n):
            w.put("%08d" % i, array_to_datum(np.full(shape, i, np.uint8), i).SerializeToString())
    return str(path)


def data_net(source, batch=4, phase=caffe.TRAIN, data_param="", transform="", layer_type="Data", tops=2):
    top = 'top: "data" top: "label"' if tops == 2 else 'top: "data"'
    param = ('data_param { source: "%s" batch_size: %d backend: LMDB %s }' % (source, batch, data_param)
             if layer_type == "Data" else data_param)
    text = 'layer { name: "d" type: "%s" %s %s transform_param { %s } }' % (layer_type, top, param, transform)
    return caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase)


def labels_of(net, batches):
    out = []
    for _ in range(batches):
        out.extend(net.forward()["label"].astype(int).tolist())
    return out


def close(net):
    net.layers[0].close()


def test_data_layer_reads_records_in_cursor_order(tmp_path):
    net = data_net(make_lmdb(tmp_path / "db", 10), batch=4)
    assert net.blobs["data"].shape == (4, 1, 4, 4) and net.blobs["label"].shape == (4,)
    got = labels_of(net, 3)
    assert got == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]           # wraps around after an epoch
    assert (net.blobs["data"].data[:, 0, 0, 0] == [8, 9, 0, 1]).all()
    close(net)


def test_batches_do_not_depend_on_thread_count(tmp_path):
    src = make_lmdb(tmp_path / "db", 13, shape=(3, 8, 8))
    outs = []
    for threads in (1, 3):
        caffe.set_random_seed(7)
        net = data_net(src, 5, data_param="threads: %d parser_threads: 2 shuffle: true cache: true" % threads,
                       transform="crop_size: 5 mirror: true")
        outs.append([net.forward()["data"].copy() for _ in range(6)])
        close(net)
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_two_ranks_see_every_record_once_per_epoch(tmp_path):
    src = make_lmdb(tmp_path / "db", 11)
    seen = []
    for rank in range(2):
        set_shard(rank, 2)
        net = data_net(src, batch=1, data_param="threads: 2")
        n = len(range(rank, 11, 2))
        labels = labels_of(net, n)
        assert labels == list(range(rank, 11, 2))                # rank r takes every 2nd record after r
        seen += labels
        close(net)
    assert sorted(seen) == list(range(11))


@pytest.mark.slow
def test_two_mpi_ranks_read_disjoint_shards(tmp_path):
    src = make_lmdb(tmp_path / "db", 9)
    script = tmp_path / "rank.py"
    script.write_text(
        "import sys; sys.path.insert(0, %r)\n"
        "from mpi4py import MPI\n"
        "from google.protobuf import text_format\n"
        "import distcaffe as caffe\n"
        "from distcaffe.data import set_shard\n"
        "from distcaffe.log import set_quiet\n"
        "from distcaffe.proto import caffe_pb2\n"
        "set_quiet()\n"
        "c = MPI.COMM_WORLD; set_shard(c.rank, c.size)\n"
        "n = caffe.Net(text_format.Parse('layer { name: \"d\" type: \"Data\" top: \"data\" top: \"label\" "
        "data_param { source: \"%s\" batch_size: 1 backend: LMDB } }', caffe_pb2.NetParameter()), caffe.TRAIN)\n"
        "got = [int(n.forward()['label'][0]) for _ in range(len(range(c.rank, 9, c.size)))]\n"
        "allg = c.gather(got)\n"
        "if c.rank == 0: print('SEEN', sorted(sum(allg, [])))\n" % (ROOT, src))
    r = subprocess.run([h.tool("mpiexec"), "-n", "2", sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "SEEN %s" % list(range(9)) in r.stdout


def test_cache_shuffle_gives_a_new_seeded_order_each_epoch(tmp_path):
    src = make_lmdb(tmp_path / "db", 12)
    orders = []
    for _ in range(2):
        caffe.set_random_seed(3)
        net = data_net(src, batch=12, data_param="cache: true shuffle: true threads: 2")
        orders.append([labels_of(net, 1) for _ in range(3)])
        assert net.layers[0].pipeline.cache.full()
        close(net)
    first, again = orders
    assert first == again                                        # same seed, same orders
    for epoch in first:
        assert sorted(epoch) == list(range(12))                  # each epoch is a permutation
    assert first[0] != first[1] != first[2]                      # reshuffled every epoch
    caffe.set_random_seed(4)
    net = data_net(src, batch=12, data_param="cache: true shuffle: true")
    assert labels_of(net, 1) != first[0]                         # another seed, another order
    close(net)


@pytest.mark.parametrize("layer_type", ["Data", "ImageData"])
def test_precache_reads_every_record_before_the_first_batch(tmp_path, layer_type):
    """NVCaffe's precache: the whole shard is in the cache once the layer is set up, before any forward."""
    if layer_type == "Data":
        net = data_net(make_lmdb(tmp_path / "db", 6), batch=4, data_param="precache: true")
    else:
        from PIL import Image
        for i in range(5):
            Image.fromarray(np.full((4, 3, 3), i, np.uint8)).save(tmp_path / ("%d.png" % i))
        (tmp_path / "list.txt").write_text("".join("%d.png %d\n" % (i, i) for i in range(5)))
        net = data_net("", batch=2, layer_type="ImageData", data_param='image_data_param { source: "%s" '
                       'root_folder: "%s/" batch_size: 2 precache: true }' % (tmp_path / "list.txt", tmp_path))
    pipeline = net.layers[0].pipeline
    assert pipeline.cache.full()
    assert labels_of(net, 3)[:5] == [0, 1, 2, 3, 4]
    close(net)


def test_image_data_short_side_keeps_the_aspect_ratio(tmp_path):
    """NVCaffe's short_side: the shorter side becomes short_side, the other rows * s / cols (integer), LINEAR;
    it wins over new_height/new_width."""
    from PIL import Image
    from distcaffe.data.datum import decode_image
    from distcaffe.data.resize import resize
    rng = np.random.default_rng(0)
    for name, (h, w), want in (("wide", (7, 10), (5, 7)), ("tall", (12, 6), (10, 5))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / (name + ".png"))
        (tmp_path / "list.txt").write_text("%s.png 3\n" % name)
        net = data_net("", batch=1, layer_type="ImageData", data_param='image_data_param { source: "%s" root_folder:'
                       ' "%s/" batch_size: 1 short_side: 5 new_height: 9 new_width: 9 }' % (tmp_path / "list.txt",
                                                                                           tmp_path))
        out = net.forward()
        original = decode_image((tmp_path / (name + ".png")).read_bytes(), name, True)
        assert out["data"].shape == (1, 3) + want
        np.testing.assert_array_equal(out["data"][0], resize(original, *want))
        close(net)


def test_image_data_dataset_share_per_node_is_refused(tmp_path):
    (tmp_path / "list.txt").write_text("a.png 1\n")
    with pytest.raises(DataError, match="dataset_share_per_node is not supported"):
        data_net("", batch=1, layer_type="ImageData", data_param='image_data_param { source: "%s" batch_size: 1 '
                 'dataset_share_per_node: 2 }' % (tmp_path / "list.txt"))


def test_cache_falls_back_when_it_would_not_fit(tmp_path, monkeypatch, caplog):
    import distcaffe.data.cache as cache_mod
    monkeypatch.setattr(cache_mod, "_FRACTION", 0.0)
    net = data_net(make_lmdb(tmp_path / "db", 6), batch=3, data_param="cache: true")
    assert labels_of(net, 4) == [0, 1, 2, 3, 4, 5] * 2
    assert not net.layers[0].pipeline.cache.enabled
    close(net)


def test_encoded_records_are_decoded_and_transformed(tmp_path, golden):
    net = data_net(str(golden / "lmdb/encoded_lmdb"), batch=3, phase=caffe.TEST, transform="crop_size: 8")
    z = np.load(golden / "lmdb/color_lmdb_contents.npz")
    out = net.forward()
    np.testing.assert_array_equal(out["data"][0], z["data__0"][:, 6:14, 8:16])
    close(net)


def test_threads_end_at_interpreter_exit(tmp_path):
    src = make_lmdb(tmp_path / "db", 50)
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from google.protobuf import text_format\n"
            "import distcaffe as caffe\nfrom distcaffe.proto import caffe_pb2\n"
            "n = caffe.Net(text_format.Parse('layer { name: \"d\" type: \"Data\" top: \"data\" "
            "data_param { source: \"%s\" batch_size: 2 backend: LMDB threads: 3 prefetch: 2 } }', "
            "caffe_pb2.NetParameter()), caffe.TRAIN)\nn.forward()\nprint('done')\n" % (ROOT, src))
    start = time.time()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "done" in r.stdout, r.stderr[-2000:]
    assert time.time() - start < 30


def test_a_batch_too_big_to_hold_is_refused_before_threads_start(tmp_path, monkeypatch):
    """batch_size 2^31 / record size: the top's INT_MAX check comes before the pipeline (whose threads would
    build the batch: the fuzzer's worker filled its address space so); a failed build closes its data layers."""
    from distcaffe.layers import data_layers
    started = []
    real = data_layers.Pipeline
    monkeypatch.setattr(data_layers, "Pipeline", lambda *a, **k: started.append(a) or real(*a, **k))
    src = make_lmdb(tmp_path / "db", 4)
    with pytest.raises(NetError, match="blob data: shape 200000000x1x4x4 has 3200000000 elements"):
        data_net(src, batch=200000000)
    assert not started
    closed = []
    monkeypatch.setattr(data_layers._PrefetchingLayer, "close", lambda self: closed.append(self.name))
    text = ('layer { name: "d" type: "Data" top: "data" top: "label" data_param { source: "%s" batch_size: 2 '
            'backend: LMDB } } layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
            'convolution_param { num_output: 1 kernel_size: 9 } }' % src)       # a 9x9 kernel on 4x4 data
    with pytest.raises(NetError, match="layer 'c'"):
        caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe.TRAIN)
    assert started and closed == ["d"]


# --- bad input --------------------------------------------------------------------------------------------
def test_missing_lmdb(tmp_path):
    with pytest.raises(DataError, match="layer 'd'.*LMDB source.*nope does not exist"):
        data_net(str(tmp_path / "nope"))


def test_empty_lmdb(tmp_path):
    with LMDBWriter(tmp_path / "empty"):
        pass
    with pytest.raises(DataError, match="empty is empty"):
        data_net(str(tmp_path / "empty"))


def test_record_that_is_not_a_datum(tmp_path):
    with LMDBWriter(tmp_path / "db") as w:
        w.put("00000000", array_to_datum(np.zeros((1, 2, 2), np.uint8), 0).SerializeToString())
        w.put("00000001_bad", b"\xff\xff\xff\xff this is not a protobuf")
    net = data_net(str(tmp_path / "db"), batch=2)
    with pytest.raises(DataError, match=r"db record '00000001_bad': record is not a Datum"):
        net.forward()


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_bad_record_while_precaching_is_one_error_and_leaves_no_threads(tmp_path):
    """precache reads every record at set-up: a bad one is the record's error there, with no parser or data
    thread left running and nothing raised later when the half-built pipeline is collected."""
    import gc
    import threading
    with LMDBWriter(tmp_path / "db") as w:
        for i in range(4):
            w.put("%08d" % i, array_to_datum(np.zeros((1, 2, 2), np.uint8), 0).SerializeToString())
        w.put("00000004_bad", b"\xff\xff\xff\xff this is not a protobuf")
    before = set(threading.enumerate())          # (earlier tests' threads may end meanwhile: not counted)
    with pytest.raises(DataError, match=r"db record '00000004_bad': record is not a Datum"):
        data_net(str(tmp_path / "db"), batch=2, data_param="precache: true")
    gc.collect()
    deadline = time.time() + 5
    while set(threading.enumerate()) - before and time.time() < deadline:
        time.sleep(0.05)
    assert not set(threading.enumerate()) - before, [t.name for t in set(threading.enumerate()) - before]


def test_corrupt_encoded_image(tmp_path):
    with LMDBWriter(tmp_path / "db") as w:
        w.put("00000000_broken.png", encoded_datum(b"\x89PNG\r\n\x1a\n garbage", 1).SerializeToString())
    with pytest.raises(DataError, match=r"record '00000000_broken.png': cannot decode image"):
        data_net(str(tmp_path / "db"))


def test_crop_larger_than_image(tmp_path):
    with pytest.raises(DataError, match=r"crop_size 9 is larger than the image LMDB .*record '00000000' \(4x4\)"):
        data_net(make_lmdb(tmp_path / "db", 3), transform="crop_size: 9")


def test_image_list_naming_a_missing_image(tmp_path):
    from PIL import Image
    Image.fromarray(np.zeros((6, 7, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "list.txt").write_text("a.png 1\nmissing.png 2\n")
    net = data_net("", batch=2, layer_type="ImageData", data_param='image_data_param { source: "%s" root_folder: '
                   '"%s/" batch_size: 2 }' % (tmp_path / "list.txt", tmp_path))
    with pytest.raises(DataError, match=r"list.txt line 2 \(.*missing.png\): cannot read image"):
        net.forward()


# --- ImageData and HDF5Data -------------------------------------------------------------------------------
def test_image_data_layer_resizes_and_labels(tmp_path, golden):
    root = golden / "lmdb"
    net = data_net("", batch=4, phase=caffe.TEST, layer_type="ImageData",
                   data_param='image_data_param { source: "%s/list.txt" root_folder: "%s/images/" batch_size: 4 '
                              'new_height: 16 new_width: 12 }' % (root, root))
    z = np.load(root / "resized_lmdb_contents.npz")
    out = net.forward()
    assert out["label"].tolist() == z["labels"][:4].tolist()
    for i in range(4):
        np.testing.assert_array_equal(out["data"][i], z["data__%d" % i])
    close(net)


def test_hdf5_data_layer_batches_across_files(tmp_path):
    import h5py
    names = []
    for f in range(2):
        path = tmp_path / ("d%d.h5" % f)
        with h5py.File(path, "w") as h:
            h["data"] = np.arange(3 * 2, dtype=np.float32).reshape(3, 2) + 100 * f
            h["label"] = np.arange(3, dtype=np.float32) + 10 * f
        names.append(str(path))
    (tmp_path / "list.txt").write_text("\n".join(names) + "\n")
    text = ('layer { name: "h" type: "HDF5Data" top: "data" top: "label" '
            'hdf5_data_param { source: "%s" batch_size: 4 } }' % (tmp_path / "list.txt"))
    net = caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe.TRAIN)
    out = net.forward()
    assert out["label"].tolist() == [0, 1, 2, 10]
    assert net.blobs["data"].data[3].tolist() == [100, 101]
    assert net.forward()["label"].tolist() == [11, 12, 0, 1]
    bad = ('layer { name: "h" type: "HDF5Data" top: "nothere" hdf5_data_param { source: "%s" batch_size: 4 } }'
           % (tmp_path / "list.txt"))
    with pytest.raises(DataError, match="has no dataset 'nothere'"):
        caffe.Net(text_format.Parse(bad, caffe_pb2.NetParameter()), caffe.TRAIN)
