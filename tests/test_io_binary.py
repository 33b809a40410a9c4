"""Golden .caffemodel / .solverstate / .binaryproto load with the recorded values and write back byte-identical."""
import numpy as np
import pytest

import distcaffe.io as dio
from distcaffe.errors import CaffeError, ParseError
from distcaffe.proto import caffe_pb2 as pb


def params_by_layer(net):
    return {l.name: [dio.blobproto_to_array(b) for b in l.blobs] for l in net.layer if len(l.blobs)}


@pytest.mark.parametrize("model", ["lenet", "cifar10_quick"])
def test_weights_load_and_write_back(golden, tmp_path, model):
    path = golden / "models" / model / "weights.caffemodel"
    net = dio.read_net_binary(path)
    params = params_by_layer(net)
    assert params["conv1"][0].ndim == 4 and params["conv1"][0].dtype == np.float32
    out = tmp_path / "w.caffemodel"
    dio.write_net_binary(net, out)
    assert out.read_bytes() == path.read_bytes()


def test_snapshot_matches_npz(golden, tmp_path):
    snap = golden / "models" / "lenet_snapshot"
    ref = np.load(snap / "data.npz")
    net = dio.read_net_binary(snap / "lenet_iter_3.caffemodel")
    params = params_by_layer(net)
    assert set(params) == {"conv1", "conv2", "ip1", "ip2"}
    for layer, arrays in params.items():
        for i, arr in enumerate(arrays):
            np.testing.assert_array_equal(arr, ref["param__%s__%d__iter3" % (layer, i)])
    state = dio.read_solverstate(snap / "lenet_iter_3.solverstate")
    assert state.iter == 3 and state.learned_net.endswith("lenet_iter_3.caffemodel")
    shapes = [a.shape for arrays in params.values() for a in arrays]
    assert [dio.blobproto_to_array(h).shape for h in state.history] == shapes
    dio.write_solverstate(state, tmp_path / "s.solverstate")
    dio.write_net_binary(net, tmp_path / "m.caffemodel")
    assert (tmp_path / "s.solverstate").read_bytes() == (snap / "lenet_iter_3.solverstate").read_bytes()
    assert (tmp_path / "m.caffemodel").read_bytes() == (snap / "lenet_iter_3.caffemodel").read_bytes()


@pytest.mark.parametrize("name", ["mean", "resized_mean"])
def test_binaryproto_mean(golden, tmp_path, name):
    path = golden / "lmdb" / (name + ".binaryproto")
    bp = dio.read_blobproto(path)
    np.testing.assert_array_equal(dio.blobproto_to_array(bp), np.load(golden / "lmdb" / (name + ".npy")))
    dio.write_blobproto(bp, tmp_path / "m.binaryproto")
    assert (tmp_path / "m.binaryproto").read_bytes() == path.read_bytes()


def test_array_blobproto_round_trip_and_storage_kinds():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    bp = dio.array_to_blobproto(a, diff=-a)
    assert list(bp.shape.dim) == [2, 3, 4]
    np.testing.assert_array_equal(dio.blobproto_to_array(bp), a)
    np.testing.assert_array_equal(dio.blobproto_to_array(bp, return_diff=True), -a)
    legacy = pb.BlobProto(num=1, channels=2, height=1, width=3, double_data=[1, 2, 3, 4, 5, 6])
    assert dio.blobproto_to_array(legacy).shape == (1, 2, 1, 3)
    assert dio.blobproto_to_array(legacy).dtype == np.float64
    half = pb.BlobProto(raw_data_type=pb.FLOAT16, raw_data=a.astype("<f2").tobytes())
    half.shape.dim.extend([2, 3, 4])
    np.testing.assert_array_equal(dio.blobproto_to_array(half), a.astype(np.float16))
    with pytest.raises(ParseError, match="shape"):
        dio.blobproto_to_array(pb.BlobProto(data=[1, 2], num=1, channels=1, height=1, width=3))


def test_truncated_caffemodel_fails_clearly(golden, tmp_path):
    raw = (golden / "models" / "lenet" / "weights.caffemodel").read_bytes()
    for cut in (len(raw) // 2, len(raw) - 3, 7):
        bad = tmp_path / ("cut%d.caffemodel" % cut)
        bad.write_bytes(raw[:cut])
        with pytest.raises(ParseError) as e:
            dio.read_net_binary(bad)
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(str(bad)) and "caffemodel" in msg


def test_caffemodel_as_solverstate_and_back(golden):
    model = golden / "models" / "lenet" / "weights.caffemodel"
    with pytest.raises(ParseError, match=r"weights\.caffemodel: not a SolverState.*looks like a \.caffemodel"):
        dio.read_solverstate(model)
    state = golden / "models" / "lenet_snapshot" / "lenet_iter_3.solverstate"
    with pytest.raises(ParseError, match=r"lenet_iter_3\.solverstate: .*looks like a \.solverstate"):
        dio.read_net_binary(state)
    with pytest.raises(ParseError, match=r"not a BlobProto"):
        dio.read_blobproto(model)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ParseError, match=r"nope\.caffemodel: No such file"):
        dio.read_net_binary(tmp_path / "nope.caffemodel")
    (tmp_path / "e.caffemodel").write_bytes(b"")
    with pytest.raises(ParseError, match="is empty"):
        dio.read_net_binary(tmp_path / "e.caffemodel")


def test_hdf5_layout(tmp_path):
    h5py = pytest.importorskip("h5py")
    w = [np.ones((2, 3), np.float32), np.zeros(2, np.float32)]
    dio.write_net_hdf5(tmp_path / "n.h5", [("ip", w), ("relu", [])], diffs=[("ip", w)])
    with h5py.File(tmp_path / "n.h5", "r") as f:
        assert sorted(f["data"]) == ["ip", "relu"] and f["data/ip/0"].shape == (2, 3) and "diff/ip/1" in f
    back = dio.read_net_hdf5(tmp_path / "n.h5")
    assert len(back["ip"]) == 2 and back["relu"] == []
    np.testing.assert_array_equal(back["ip"][0], w[0])
    dio.write_solverstate_hdf5(tmp_path / "s.h5", 7, "x.caffemodel.h5", 2, w)
    s = dio.read_solverstate_hdf5(tmp_path / "s.h5")
    assert (s["iter"], s["learned_net"], s["current_step"]) == (7, "x.caffemodel.h5", 2)
    np.testing.assert_array_equal(s["history"][1], w[1])
    with pytest.raises(ParseError, match="No such file"):
        dio.read_net_hdf5(tmp_path / "missing.h5")


def test_hdf5_without_h5py_is_clear(monkeypatch, tmp_path):
    import builtins
    real_import = builtins.__import__

    def no_h5py(name, *args, **kwargs):
        if name == "h5py":
            raise ImportError("no h5py")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_h5py)
    with pytest.raises(CaffeError, match="pip install h5py"):
        dio.write_net_hdf5(tmp_path / "x.h5", [])
