"""BVLC's pycaffe tools and examples, unchanged (tests/bvlc_pycaffe), run through `import caffe` on small inputs
built here: python/classify.py, python/detect.py, python/draw_net.py, examples/pycaffe (linreg.prototxt with
layers/pyloss.py, caffenet.py, tools.py). Results are checked against hand computations with scikit-image."""
import glob
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format

pytestmark = pytest.mark.slow  # subprocesses running BVLC's files (~30 s)

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
BVLC = HERE / "bvlc_pycaffe"
PYCAFFE_EXAMPLES = BVLC / "examples" / "pycaffe"

DEPLOY = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 10 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.05 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.05 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def run_script(script, *args, cwd, extra_path=()):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *map(str, extra_path),
                                                       os.environ.get("PYTHONPATH", "")]), GLOG_minloglevel="2")
    proc = subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A deploy net with random weights, two RGB images on disk and a 3x12x12 mean (.npy)."""
    import caffe
    from PIL import Image
    d = tmp_path_factory.mktemp("tiny")
    (d / "deploy.prototxt").write_text(DEPLOY)
    caffe.set_random_seed(3)
    caffe.Net(str(d / "deploy.prototxt"), caffe.TEST).save(str(d / "tiny.caffemodel"))
    rng = np.random.default_rng(0)
    (d / "images").mkdir()
    for i, (h, w) in enumerate([(15, 20), (11, 9)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / "images" / ("im%d.png" % i))
    np.save(d / "mean.npy", rng.uniform(90, 140, (3, 12, 12)))
    return d


def _net_forward(tiny, crops):
    """Probabilities of preprocessed 3x8x8 crops, one forward pass each."""
    import caffe
    net = caffe.Net(str(tiny / "deploy.prototxt"), caffe.TEST, weights=str(tiny / "tiny.caffemodel"))
    probs = []
    for crop in crops:
        net.blobs["data"].data[...] = crop
        probs.append(net.forward()["prob"][0].copy())
    return np.array(probs)


def _preprocess(img, mean):
    """classify.py's preprocessing by hand: HxWx3 [0,1] RGB -> 3xHxW BGR * 255 - mean."""
    return img.transpose(2, 0, 1)[[2, 1, 0]] * 255.0 - mean


def test_classify_py_center_only_matches_hand_computation(tiny, tmp_path):
    from PIL import Image
    from skimage.transform import resize
    out = tmp_path / "pred.npy"
    stdout = run_script(BVLC / "python" / "classify.py", tiny / "images", out, "--model_def", tiny / "deploy.prototxt",
                        "--pretrained_model", tiny / "tiny.caffemodel", "--images_dim", "12,12", "--mean_file",
                        tiny / "mean.npy", "--ext", "png", "--center_only", cwd=tmp_path)
    assert "Classifying 2 inputs." in stdout
    pred = np.load(out)
    assert pred.shape == (2, 5)
    np.testing.assert_allclose(pred.sum(1), 1, rtol=1e-5)
    mean = np.load(tiny / "mean.npy")
    lo, hi = mean.min(), mean.max()
    mean8 = resize(((mean - lo) / (hi - lo)).transpose(1, 2, 0), (8, 8), order=1, mode="constant") * (hi - lo) + lo
    crops = []
    for f in glob.glob(str(tiny / "images") + "/*.png"):  # classify.py's own order
        img = np.asarray(Image.open(f), dtype=np.float64) / 255.0
        lo, hi = img.min(), img.max()
        img12 = resize((img - lo) / (hi - lo), (12, 12), order=1, mode="constant") * (hi - lo) + lo
        crops.append(_preprocess(img12[2:10, 2:10], mean8.transpose(2, 0, 1)))
    np.testing.assert_allclose(pred, _net_forward(tiny, crops), rtol=1e-4, atol=1e-6)


def test_classify_py_oversample_averages_ten_crops(tiny, tmp_path):
    import caffe
    out = tmp_path / "pred.npy"
    run_script(BVLC / "python" / "classify.py", tiny / "images" / "im1.png", out, "--model_def",
               tiny / "deploy.prototxt", "--pretrained_model", tiny / "tiny.caffemodel", "--images_dim", "12,12",
               "--mean_file", "", cwd=tmp_path)
    pred = np.load(out)
    img = caffe.io.load_image(str(tiny / "images" / "im1.png"))
    crops = caffe.io.oversample([caffe.io.resize_image(img, (12, 12))], (8, 8))
    probs = _net_forward(tiny, [c.transpose(2, 0, 1)[[2, 1, 0]] * 255.0 for c in crops])
    np.testing.assert_allclose(pred, probs.mean(0, keepdims=True), rtol=1e-4, atol=1e-6)


def _need_pandas2():
    """detect.py saves with `df.to_hdf(path, 'df', mode='w')`, which pandas 3 refuses (key became keyword-only):
    the pycaffe extra pins pandas<3 and PyTables."""
    import pandas
    pytest.importorskip("tables")
    if int(pandas.__version__.split(".")[0]) >= 3:
        if os.environ.get("CI") == "true":
            pytest.fail("BVLC's detect.py needs pandas<3 (pip install 'distcaffe[pycaffe]'), found %s"
                        % pandas.__version__)
        pytest.skip("BVLC's detect.py needs pandas<3, found %s" % pandas.__version__)
    return pandas


def test_detect_py_windows_to_hdf5(tiny, tmp_path):
    pd = _need_pandas2()
    image = tiny / "images" / "im0.png"
    windows = [(0, 0, 8, 8), (2, 3, 12, 14), (5, 1, 15, 19)]  # ymin, xmin, ymax, xmax
    (tmp_path / "windows.csv").write_text("filename,ymin,xmin,ymax,xmax\n"
                                          + "".join("%s,%d,%d,%d,%d\n" % ((image,) + w) for w in windows))
    out = tmp_path / "dets.h5"
    stdout = run_script(BVLC / "python" / "detect.py", "--crop_mode", "list", "--model_def", tiny / "deploy.prototxt",
                        "--pretrained_model", tiny / "tiny.caffemodel", "--mean_file", tiny / "mean.npy",
                        "--context_pad", "1", tmp_path / "windows.csv", out, cwd=tmp_path)
    assert "Processed 3 windows" in stdout
    df = pd.read_hdf(out, "df")
    assert len(df) == 3 and list(df.columns[-4:]) == ["ymin", "xmin", "ymax", "xmax"]
    assert sorted(map(tuple, df[["ymin", "xmin", "ymax", "xmax"]].values.tolist())) == sorted(windows)
    for p in df["prediction"]:
        assert p.shape == (5,) and abs(p.sum() - 1) < 1e-5


def test_detector_without_context_crops_exact_windows(tiny):
    import caffe
    det = caffe.Detector(str(tiny / "deploy.prototxt"), str(tiny / "tiny.caffemodel"), raw_scale=255,
                         channel_swap=[2, 1, 0])
    image = str(tiny / "images" / "im0.png")
    out = det.detect_windows([(image, [(0, 0, 8, 8), (3, 4, 11, 12)])])
    img = caffe.io.load_image(image)
    expect = _net_forward(tiny, [_preprocess(img[0:8, 0:8], 0), _preprocess(img[3:11, 4:12], 0)])
    np.testing.assert_allclose([o["prediction"] for o in out], expect, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("phase", ["ALL", "TRAIN"])
def test_draw_net_py_writes_png(tmp_path, phase):
    if shutil.which("dot") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Graphviz's dot is not on PATH (make test installs it)")
        pytest.skip("Graphviz's dot is not on PATH")
    out = tmp_path / "linreg.png"
    run_script(BVLC / "python" / "draw_net.py", PYCAFFE_EXAMPLES / "linreg.prototxt", out, "--phase", phase,
               "--rankdir", "TB", cwd=tmp_path)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_draw_raw_lists_every_layer_and_blob():
    pytest.importorskip("pydot")
    import caffe.draw
    from caffe.proto import caffe_pb2
    net = caffe_pb2.NetParameter()
    text_format.Merge((PYCAFFE_EXAMPLES / "linreg.prototxt").read_text(), net)
    dot = caffe.draw.draw_net(net, "LR", ext="raw").decode()
    for name in ("x_DummyData", "ipx_InnerProduct", "loss_Python", "ipy_blob", "loss_blob"):
        assert name in dot
    assert dot.count("->") == 9


def test_linreg_with_pyloss_matches_euclidean_loss(monkeypatch):
    import caffe
    monkeypatch.syspath_prepend(str(PYCAFFE_EXAMPLES / "layers"))
    net = caffe.Net(str(PYCAFFE_EXAMPLES / "linreg.prototxt"), caffe.TRAIN)
    loss = net.forward()["loss"]
    ipx, ipy = net.blobs["ipx"].data.copy(), net.blobs["ipy"].data.copy()
    np.testing.assert_allclose(loss, ((ipx - ipy) ** 2).sum() / 10 / 2, rtol=1e-5)
    net.backward()
    np.testing.assert_allclose(net.blobs["ipx"].diff, (ipx - ipy) / 10, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(net.blobs["ipy"].diff, -(ipx - ipy) / 10, rtol=1e-5, atol=1e-7)
    assert np.abs(net.params["ipx"][0].diff).sum() > 0


def test_tools_caffesolver_trains_linreg(tmp_path):
    """examples/pycaffe/tools.py writes a solver for linreg.prototxt that caffe.get_solver trains."""
    script = ("import sys, numpy as np, caffe\n"
              "from tools import CaffeSolver, SimpleTransformer\n"
              "s = CaffeSolver(testnet_prototxt_path=sys.argv[1], trainnet_prototxt_path=sys.argv[1], debug=True)\n"
              "s.sp['base_lr'] = '0.01'\n"
              "s.write('solver.prototxt')\n"
              "solver = caffe.get_solver('solver.prototxt')\n"
              "solver.solve()\n"
              "assert solver.iter == 12, solver.iter\n"
              "t = SimpleTransformer()\n"
              "im = np.random.default_rng(0).integers(0, 256, (4, 5, 3)).astype(np.float32)\n"
              "assert (t.deprocess(t.preprocess(im)) == im.astype(np.uint8)).all()\n"
              "print('ok', type(solver).__name__, '%g' % solver.lr)\n")
    (tmp_path / "train_it.py").write_text(script)
    stdout = run_script(tmp_path / "train_it.py", PYCAFFE_EXAMPLES / "linreg.prototxt", cwd=tmp_path,
                        extra_path=(PYCAFFE_EXAMPLES, PYCAFFE_EXAMPLES / "layers"))
    assert stdout.startswith("ok SGDSolver 0.01")
    assert (tmp_path / "snapshot_iter_12.caffemodel").exists()


def test_caffenet_py_writes_nets_that_parse_and_upgrade(tmp_path):
    import caffe
    from distcaffe.io import read_net_param
    run_script(PYCAFFE_EXAMPLES / "caffenet.py", cwd=tmp_path)
    train, test = read_net_param(str(tmp_path / "train.prototxt")), read_net_param(str(tmp_path / "test.prototxt"))
    assert [l.type for l in train.layer][:3] == ["Data", "Convolution", "ReLU"]
    assert train.layer[0].data_param.batch_size == 256 and test.layer[0].data_param.batch_size == 50
    assert train.layer[0].transform_param.crop_size == 227
    assert [l.type for l in test.layer][-2:] == ["SoftmaxWithLoss", "Accuracy"]
    assert {l.type for l in train.layer} <= set(caffe.layer_type_list())
