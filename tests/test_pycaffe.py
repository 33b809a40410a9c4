"""The pycaffe surface beyond BVLC's own tests: caffe.io against scikit-image, clear errors for wrong input
shapes, glog's environment variables, Timer, forward_all, solver rank/count, callbacks, NCCL without GPUs."""
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

import caffe
import distcaffe
from distcaffe.errors import CaffeError, NetError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENET_DEPLOY = os.path.join(ROOT, "examples", "mnist", "lenet.prototxt")

SMALL_NET = """name: 'small' force_backward: true
layer { name: 'data' type: 'Input' top: 'data' input_param { shape { dim: 4 dim: 3 } } }
layer { name: 'ip' type: 'InnerProduct' bottom: 'data' top: 'ip'
  inner_product_param { num_output: 2 weight_filler { type: 'gaussian' std: 1 } } }
"""


def small_net(tmp_path):
    path = tmp_path / "small.prototxt"
    path.write_text(SMALL_NET)
    return caffe.Net(str(path), caffe.TEST)


# --- caffe.io ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", [0, 1, 2, 3, 5])
@pytest.mark.parametrize("shape,new_dims", [((37, 50, 3), (16, 20)), ((9, 7, 1), (30, 22)), ((20, 24, 3), (20, 9)),
                                            ((6, 6, 3), (6, 6))])
def test_resize_image_equals_bvlc_skimage_path(order, shape, new_dims):
    from skimage.transform import resize
    im = np.random.default_rng(order).uniform(-3, 40, shape).astype(np.float32)
    lo, hi = im.min(), im.max()
    want = resize((im - lo) / (hi - lo), new_dims, order=order, mode="constant") * (hi - lo) + lo
    got = caffe.io.resize_image(im, new_dims, interp_order=order)
    assert got.dtype == np.float32 and got.shape == new_dims + shape[2:]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * (hi - lo))


@pytest.mark.parametrize("order", [0, 1, 3])
def test_resize_image_other_channel_counts_equal_scipy_zoom(order):
    from scipy.ndimage import zoom
    im = np.random.default_rng(1).random((10, 13, 4))
    want = zoom(im, (7 / 10, 26 / 13, 1), order=order)
    np.testing.assert_allclose(caffe.io.resize_image(im, (7, 26), order), want, rtol=1e-5, atol=1e-6)


def test_resize_image_constant_image_and_bad_dims():
    out = caffe.io.resize_image(np.full((5, 6, 3), 0.25), (9, 4))
    assert out.shape == (9, 4, 3) and (out == np.float32(0.25)).all()
    with pytest.raises(ValueError, match="HxWxK"):
        caffe.io.resize_image(np.zeros((5, 6)), (3, 3))
    with pytest.raises(CaffeError, match="positive"):
        caffe.io.resize_image(np.zeros((5, 6, 3)), (0, 3))


def test_load_image_grayscale_and_color_as_skimage(tmp_path):
    from PIL import Image
    from skimage.color import rgb2gray
    rgb = np.random.default_rng(2).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "g.png")
    Image.fromarray(np.dstack([rgb, np.full((6, 5), 7, np.uint8)])).save(tmp_path / "a.png")
    color = caffe.io.load_image(str(tmp_path / "c.png"))
    assert color.dtype == np.float32 and color.shape == (6, 5, 3)
    np.testing.assert_allclose(color, rgb / 255.0, rtol=1e-6)
    gray = caffe.io.load_image(str(tmp_path / "c.png"), color=False)
    np.testing.assert_allclose(gray[:, :, 0], rgb2gray(rgb), rtol=1e-6)
    tiled = caffe.io.load_image(str(tmp_path / "g.png"))
    assert tiled.shape == (6, 5, 3) and (tiled[:, :, 0] == tiled[:, :, 2]).all()
    np.testing.assert_allclose(caffe.io.load_image(str(tmp_path / "a.png")), color)
    with pytest.raises(CaffeError, match="nothing.png: cannot read image"):
        caffe.io.load_image(str(tmp_path / "nothing.png"))


def test_io_value_errors_name_the_problem():
    blob = caffe.proto.caffe_pb2.BlobProto()
    blob.data.extend([1.0, 2.0])
    with pytest.raises(ValueError, match="2 values but no shape"):
        caffe.io.blobproto_to_array(blob)
    blob.shape.dim.extend([3])
    with pytest.raises(ValueError, match="has 2 values but its shape 3"):
        caffe.io.blobproto_to_array(blob)
    with pytest.raises(ValueError, match="incorrect array shape"):
        caffe.io.array_to_datum(np.zeros((2, 2)))
    arrays = [np.arange(6.0).reshape(2, 3), np.ones((1, 1, 2))]
    back = caffe.io.blobprotovector_str_to_arraylist(caffe.io.arraylist_to_blobprotovector_str(arrays))
    assert [a.shape for a in back] == [(2, 3), (1, 1, 2)] and back[0].dtype == np.float64
    np.testing.assert_array_equal(back[0], arrays[0])


def test_transformer_resizes_a_mean_image_of_other_size():
    t = caffe.io.Transformer({"data": (1, 3, 4, 4)})
    mean = np.random.default_rng(3).uniform(100, 120, (3, 8, 8))
    t.set_mean("data", mean)
    assert t.mean["data"].shape == (3, 4, 4)
    np.testing.assert_allclose(t.mean["data"], caffe.io.resize_image(mean.transpose(1, 2, 0), (4, 4))
                               .transpose(2, 0, 1), rtol=1e-6)
    with pytest.raises(ValueError, match="mean shape invalid"):
        t.set_mean("data", np.zeros((1, 3, 4, 4)))


# --- Net -----------------------------------------------------------------------------------------------
def test_wrong_input_shape_names_blob_and_both_shapes():
    net = caffe.Net(LENET_DEPLOY, caffe.TEST)
    with pytest.raises(NetError) as e:
        net.forward(data=np.zeros((64, 1, 28, 28), np.float32))
    assert str(e.value).startswith("input 'data': the array has shape 64x1x28x28 but blob 'data' has shape "
                                   "64x1x24x24")
    with pytest.raises(NetError, match="input 'data' is not batch sized: the array has shape 10x1x24x24, blob "
                                       "'data' has 64x1x24x24"):
        net.forward(data=np.zeros((10, 1, 24, 24), np.float32))
    net.forward(data=np.zeros((64, 1, 1, 1), np.float32))  # broadcasting into the blob stays allowed


def test_forward_all_pads_the_last_batch_and_matches_forward(tmp_path):
    net = small_net(tmp_path)
    x = np.random.default_rng(4).standard_normal((10, 3)).astype(np.float32)
    out = net.forward_all(data=x)["ip"]
    w, b = net.params["ip"][0].data, net.params["ip"][1].data
    assert out.shape == (10, 2)
    np.testing.assert_allclose(out, x @ w.T + b, rtol=1e-5, atol=1e-6)
    outs, diffs = net.forward_backward_all(data=x, ip=np.ones((10, 2), np.float32))
    np.testing.assert_allclose(outs["ip"], out, rtol=1e-6)
    np.testing.assert_allclose(diffs["data"], np.ones((10, 2)) @ w, rtol=1e-5)


def test_blob_legacy_dims_and_callable_hooks(tmp_path):
    net = small_net(tmp_path)
    blob = net.blobs["data"]
    assert (blob.num, blob.channels, blob.height, blob.width, blob.count) == (4, 3, 1, 1, 12)
    blob.reshape(1, 2, 3, 4, 5)
    with pytest.raises(NetError, match="at most 4 axes"):
        blob.num
    blob.reshape(4, 3)
    seen = []
    net.before_forward(lambda i: seen.append(("f", i)))
    net.after_backward(lambda i: seen.append(("b", i)))
    net.forward()
    net.backward()
    assert seen == [("f", 0), ("f", 1), ("b", 1), ("b", 0)]


def test_caffe_private_names_of_bvlc_pycaffe(tmp_path):
    net = small_net(tmp_path)
    assert (net._inputs, net._outputs, net._top_ids(1), net._bottom_ids(1)) == ([0], [1], [1], [0])
    assert list(net._blob_loss_weights) == [0.0, 0.0] and net.blob_loss_weights == {"data": 0.0, "ip": 0.0}
    net.blobs["data"].data[...] = 1
    net._forward(0, 1)
    np.testing.assert_allclose(net.blobs["ip"].data[0], net.params["ip"][0].data.sum(1) + net.params["ip"][1].data,
                               rtol=1e-5)
    with pytest.raises(NetError, match="GPU mode only"):
        net.blobs["ip"]._gpu_data_ptr


def test_save_hdf5_load_hdf5_roundtrip(tmp_path):
    net = small_net(tmp_path)
    net.save_hdf5(str(tmp_path / "w.caffemodel.h5"))
    other = small_net(tmp_path)
    other.load_hdf5(str(tmp_path / "w.caffemodel.h5"))
    np.testing.assert_array_equal(other.params["ip"][0].data, net.params["ip"][0].data)


# --- solvers, ranks, NCCL --------------------------------------------------------------------------
def write_solver(tmp_path):
    (tmp_path / "net.prototxt").write_text(
        "layer { name: 'data' type: 'DummyData' top: 'data' top: 'label' dummy_data_param { shape { dim: 2 dim: 3 }"
        " shape { dim: 2 } data_filler { type: 'gaussian' } data_filler { type: 'constant' value: 1 } } }\n"
        "layer { name: 'ip' type: 'InnerProduct' bottom: 'data' top: 'ip' inner_product_param { num_output: 2 } }\n"
        "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'ip' bottom: 'label' top: 'loss' }\n")
    (tmp_path / "solver.prototxt").write_text(
        "net: 'net.prototxt' base_lr: 0.1 lr_policy: 'step' gamma: 0.5 stepsize: 2 max_iter: 4 test_iter: 1 "
        "test_interval: 100 snapshot_after_train: false snapshot_prefix: '%s/s'" % tmp_path)
    return str(tmp_path / "solver.prototxt")


def test_solver_function_callbacks_lr_and_share_weights(tmp_path):
    solver = caffe.SGDSolver(write_solver(tmp_path))
    events = []
    solver.add_callback(lambda: events.append("start"), lambda: events.append("grads"))
    solver.step(3)
    assert events == ["start", "grads"] * 3
    assert solver.lr == pytest.approx(0.05)
    net = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST)
    solver.share_weights(net)
    assert net.params["ip"][0].data is not None
    np.testing.assert_array_equal(net.params["ip"][0].data, solver.net.params["ip"][0].data)


def test_solver_rank_decides_the_root(tmp_path):
    assert (caffe.solver_count(), caffe.solver_rank()) == (1, 0)
    caffe.set_solver_count(2)
    caffe.set_solver_rank(1)
    caffe.set_multiprocess(True)
    try:
        solver = caffe.get_solver(write_solver(tmp_path))
        assert not solver.is_root and solver.test_nets == []
    finally:
        caffe.set_solver_count(1)
        caffe.set_solver_rank(0)
        caffe.set_multiprocess(False)
    assert caffe.get_solver(write_solver(tmp_path)).is_root


def test_nccl_without_gpu_is_a_clear_error(tmp_path):
    if caffe.has_nccl():
        pytest.skip("this machine has NCCL")
    solver = caffe.SGDSolver(write_solver(tmp_path))
    with pytest.raises(CaffeError, match="caffe.NCCL needs CUDA GPUs and cupy with NCCL"):
        caffe.NCCL(solver, b"\0" * 128)
    with pytest.raises(CaffeError, match="mpirun"):
        caffe.NCCL.new_uid()


def test_timer_measures_between_start_and_stop():
    t = caffe.Timer()
    assert t.ms == 0.0
    t.start()
    sum(range(100000))
    t.stop()
    first = t.ms
    assert first > 0 and t.ms == first  # stopped: reading again gives the same interval


# --- logging ---------------------------------------------------------------------------------------
def _log_run(tmp_path, env, code="import caffe; caffe.log('hello from pycaffe'); "
                                  "import logging; logging.getLogger('distcaffe').warning('careful')"):
    env = dict(os.environ, PYTHONPATH=ROOT, **env)
    for k in ("GLOG_minloglevel", "GLOG_log_dir", "GLOG_logtostderr"):
        if k not in env or env[k] is None:
            env.pop(k, None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)


def test_glog_minloglevel_hides_lower_severities(tmp_path):
    out = _log_run(tmp_path, {"GLOG_minloglevel": None}).stderr
    assert "] hello from pycaffe" in out and out.startswith("I")
    out = _log_run(tmp_path, {"GLOG_minloglevel": "1"}).stderr
    assert "hello" not in out and "] careful" in out and out.startswith("W")
    assert _log_run(tmp_path, {"GLOG_minloglevel": "2"}).stderr == ""


def test_glog_log_dir_writes_the_info_file_unless_logtostderr(tmp_path):
    logs = tmp_path / "logs"
    proc = _log_run(tmp_path, {"GLOG_log_dir": str(logs)})
    assert "hello from pycaffe" in proc.stderr
    link = logs / "-c.INFO"
    files = [f for f in os.listdir(logs) if ".log.INFO." in f]
    assert len(files) == 1 and os.readlink(link) == files[0]
    text = (logs / files[0]).read_text()
    assert "] hello from pycaffe" in text and "] careful" in text
    other = tmp_path / "other"
    _log_run(tmp_path, {"GLOG_log_dir": str(other), "GLOG_logtostderr": "1"})
    assert not other.exists()
    (tmp_path / "a_file").write_text("")
    proc = _log_run(tmp_path, {"GLOG_log_dir": str(tmp_path / "a_file" / "logs")})
    assert proc.returncode == 0 and "a_file/logs: cannot write log file" in proc.stderr
    assert "hello from pycaffe" in proc.stderr


def test_init_log_sets_the_level():
    logger = logging.getLogger("distcaffe")
    before = logger.level
    try:
        caffe.init_log(2)
        assert logger.level == logging.ERROR
        caffe.init_log(0, True)
        assert logger.level == logging.INFO
    finally:
        logger.setLevel(before)


# --- layout ------------------------------------------------------------------------------------------
def test_caffe_package_is_distcaffe_underneath():
    from caffe import layers as L, params as P
    assert caffe.Net is distcaffe.Net and caffe.SGDSolver is distcaffe.SGDSolver
    assert caffe.proto.caffe_pb2 is distcaffe.caffe_pb2 and P.Pooling.MAX == distcaffe.caffe_pb2.PoolingParameter.MAX
    assert callable(L.Convolution) and hasattr(distcaffe.layers, "create_layer")  # NetSpec's L vs the layer package
    assert {"Python", "Data", "Convolution"} <= set(caffe.layer_type_list())
    assert caffe.__version__ == distcaffe.__version__


def test_draw_without_pydot_says_what_to_install(monkeypatch):
    import caffe.draw
    monkeypatch.setitem(sys.modules, "pydot", None)
    with pytest.raises(CaffeError, match=r"needs pydot: pip install 'distcaffe\[draw\]'"):
        caffe.draw.draw_net(caffe.proto.caffe_pb2.NetParameter(), "LR")


def test_draw_without_dot_says_what_to_install(monkeypatch, tmp_path):
    pytest.importorskip("pydot")
    import caffe.draw
    net = caffe.proto.caffe_pb2.NetParameter()
    net.layer.add(name="relu", type="ReLU", bottom=["x"], top=["x"])
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CaffeError, match="needs Graphviz's dot program on PATH"):
        caffe.draw.draw_net_to_file(net, str(tmp_path / "net.png"))
    assert not (tmp_path / "net.png").exists()


def test_coord_map_errors_are_caffe_errors_of_pycaffe_types():
    from caffe import layers as L
    from caffe.coord_map import coord_map_from_to, crop
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 10, 10]))
    n.ip = L.InnerProduct(n.data, num_output=2)
    with pytest.raises(RuntimeError, match="connected by spatial layers") as e:
        coord_map_from_to(n.ip, n.data)
    assert isinstance(e.value, CaffeError)
    n.pool = L.Pooling(n.data, kernel_size=2, stride=2)
    with pytest.raises(AssertionError, match="scale mismatch") as e:
        crop(n.pool, n.data)
    assert isinstance(e.value, CaffeError)
