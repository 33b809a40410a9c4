"""Every train_val net of ../shared/zoo/MANIFEST.tsv builds in TRAIN and TEST phase and takes 2 solver steps with a
finite loss, on small data of the kind its data layers read, generated in the test's temp dir by our own tools
(LMDB/LevelDB via convert_imageset-style writers, mean files via compute_image_mean, annotated LMDBs via
convert_annoset, window files, HDF5). Batches shrink to 1-2, crops to the smallest the net allows, SFD to 320.
Train-only / test-only files (SSD's) build their own phase and fail the other with a clear error, as in Caffe.
The default run covers every architecture once (about 2 minutes); DISTCAFFE_ZOO_ALL=1 adds the FLOAT16, legacy
and NVIDIA copies (the whole manifest: about 20 minutes on 2 shared cores). DetectNet's KITTI nets read KITTI
label-image LMDBs at 128x64; the TensorRT example's TRT layer is the clear error the issue asks."""
import csv
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import distcaffe as caffe
from conftest import ZOO
from distcaffe import solvers
from distcaffe.data import array_to_datum
from distcaffe.data.db import open_writer
from distcaffe.data.tools import compute_image_mean
from distcaffe.errors import NetError
from distcaffe.io import read_net_param
from distcaffe.proto import caffe_pb2
from _detection_data import annoset
from _detectnet_data import kitti

pytestmark = pytest.mark.slow
DATA_TYPES = ("Data", "ImageData", "HDF5Data", "AnnotatedData", "WindowData")
PYLOSS_DIR = Path(__file__).parent / "bvlc_pycaffe" / "examples" / "pycaffe" / "layers"
SSD_SIZE = {"SSD_300x300": 300, "SFD.exp": 320}       # SFD trains at 640; it is fully convolutional down to 320


def _train_val():
    manifest = ZOO / "MANIFEST.tsv"
    if not manifest.is_file():
        return []
    with open(manifest) as f:
        return [r["relative_path"] for r in csv.DictReader(f, delimiter="\t") if r["kind"] == "train_val"]


class Data:
    """Generated data sets, made once per kind and size for the whole module."""

    def __init__(self, root):
        self.root, self.made = root, {}

    def _once(self, key, make):
        if key not in self.made:
            self.made[key] = make(os.path.join(self.root, "_".join(str(k) for k in key)))
        return self.made[key]

    def db(self, channels, size, backend):
        """A database of 6 raw Datums (labels 0..5) and its mean file (our compute_image_mean)."""
        def make(path):
            rng = np.random.default_rng(size)
            with open_writer(path, backend) as w:
                for i in range(6):
                    w.put("%08d" % i, array_to_datum(rng.integers(0, 256, (channels, size, size)), i % 6)
                          .SerializeToString())
            compute_image_mean(path, path + ".mean", backend)
            return path, path + ".mean"
        return self._once(("db", channels, size, backend), make)

    def images(self, size):
        """An image list of 4 PNGs (labels 0..3) and a mean file of their size."""
        def make(path):
            from PIL import Image
            os.makedirs(path)
            rng = np.random.default_rng(size)
            with open(path + "/list.txt", "w") as f:
                for i in range(4):
                    Image.fromarray(rng.integers(0, 256, (size, size, 3)).astype(np.uint8)).save(
                        "%s/%d.png" % (path, i))
                    f.write("%d.png %d\n" % (i, i))
            return path + "/", path + "/list.txt", self.db(3, size, "lmdb")[1]
        return self._once(("images", size), make)

    def hdf5(self, tops):
        def make(path):
            import h5py
            os.makedirs(path)
            rng = np.random.default_rng(0)
            with h5py.File(path + "/d.h5", "w") as f:
                for name in tops:
                    f[name] = (rng.normal(size=(8, 4)) if name == "data" else rng.integers(0, 2, 8)).astype("f4")
            with open(path + "/list.txt", "w") as f:
                f.write(path + "/d.h5\n")
            return path + "/list.txt"
        return self._once(("hdf5",) + tuple(tops), make)

    def annoset(self, classes):
        names = ("box", "disc") if classes > 2 else ("box", "box")        # SFD: faces only (2 classes)
        return self._once(("annoset", classes), lambda path: annoset(path, n=3, size=(60, 80), names=names)[:2])

    def kitti(self):
        """DetectNet's image and label-image LMDBs (136x72 images, 1-2 boxes each)."""
        return self._once(("kitti",), lambda path: kitti(path)[:2])

    def windows(self, size):
        """A window file over 2 PNG images with foreground and background windows."""
        def make(path):
            from PIL import Image
            os.makedirs(path)
            lines = []
            for i in range(2):
                Image.fromarray(np.full((size, size + 10, 3), 40 * i, np.uint8)).save("%s/%d.png" % (path, i))
                lines += ["# %d" % i, "%d.png" % i, "3 %d %d" % (size, size + 10), "2",
                          "%d 0.8 2 2 %d %d" % (1 + i, size // 2, size // 2), "0 0.1 5 5 %d %d" % (size - 2, size - 2)]
            with open(path + "/windows.txt", "w") as f:
                f.write("\n".join(lines) + "\n")
            return path + "/", path + "/windows.txt", self.db(3, size, "lmdb")[1]
        return self._once(("windows", size), make)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    layers = str(PYLOSS_DIR)                      # BVLC's pyloss.EuclideanLossLayer for the linreg example
    sys.path.insert(0, layers)
    yield Data(str(tmp_path_factory.mktemp("zoo_data")))
    sys.path.remove(layers)


def _data_channels(net, layer):
    """Input channels the net needs from this data layer's first top: 2 for a Slice into a siamese pair."""
    for other in net.layer:
        if other.type == "Slice" and layer.top and layer.top[0] in other.bottom:
            return len(other.top)
    tp = layer.transform_param
    return 1 if (tp.scale and tp.scale < 0.01 and not tp.crop_size) else 3        # MNIST's 1/256 or 1/255


def prepare(rel, data, shrink=1):
    """The net's NetParameter with data layers pointed at generated data, batches of 1-2, crops divided by
    `shrink`, SSD sizes shrunk."""
    p = read_net_param(str(ZOO / rel))
    big = len(p.layer) > 40
    batch = 1 if big else 2
    ssd = next((s for k, s in SSD_SIZE.items() if "/%s/" % k in rel), None)
    detectnet = any(layer.type == "DetectNetTransformation" for layer in p.layer)
    for layer in p.layer:
        tp = layer.transform_param
        if tp.crop_size:
            tp.crop_size = max(8, tp.crop_size // shrink)
        crop = int(tp.crop_size)
        size = crop + 3 if crop else 28 if _data_channels(p, layer) == 1 else 32
        if layer.type == "Data" and detectnet:          # DetectNet: images and KITTI label images, 128x64 out
            images, labels = data.kitti()
            layer.data_param.source = labels if layer.top[0] == "label" else images
            layer.data_param.batch_size = batch
        elif layer.type == "DetectNetTransformation":
            layer.detectnet_groundtruth_param.image_size_x, layer.detectnet_groundtruth_param.image_size_y = 128, 64
        elif layer.type == "Data":
            dp = layer.data_param
            backend = "leveldb" if dp.HasField("backend") and dp.backend == dp.LEVELDB else "lmdb"
            dp.source, mean = data.db(_data_channels(p, layer), size, backend)
            dp.batch_size = batch
        elif layer.type == "ImageData":
            ip = layer.image_data_param
            if ip.new_height or ip.new_width:
                size = max(ip.new_height, ip.new_width)
            ip.root_folder, ip.source, mean = data.images(size)
            if tp.img_rand_resize_upper:           # NVCaffe takes the mean's centre at the resized size
                mean = data.db(3, int(tp.img_rand_resize_upper * 1.6), "lmdb")[1]
            ip.batch_size = batch
        elif layer.type == "HDF5Data":
            layer.hdf5_data_param.source = data.hdf5(list(layer.top))
            layer.hdf5_data_param.batch_size = batch
        elif layer.type == "AnnotatedData":
            classes = min([m.multibox_loss_param.num_classes for m in p.layer if m.type == "MultiBoxLoss"] or [3])
            layer.data_param.source, layer.annotated_data_param.label_map_file = data.annoset(classes)
            layer.data_param.batch_size = 1
            if ssd and tp.HasField("resize_param"):
                tp.resize_param.height = tp.resize_param.width = ssd
        elif layer.type == "WindowData":
            wp = layer.window_data_param
            wp.root_folder, wp.source, mean = data.windows(size)
            wp.batch_size = 4
        elif layer.type == "DetectionEvaluate":
            layer.detection_evaluate_param.ClearField("name_size_file")
        if layer.type in DATA_TYPES and tp.HasField("mean_file"):
            tp.mean_file = mean
    return p


def _test_stage(p):
    """The stage a TEST net needs when its test data layers are stage-gated (mnist_autoencoder's test-on-train)."""
    for layer in p.layer:
        for rule in layer.include:
            if rule.HasField("phase") and rule.phase == caffe.TEST and rule.stage:
                return rule.stage[0]
    return None


def _single_phase(p):
    """TRAIN or TEST when every data layer is included in that phase only (SSD's train/test files), else None."""
    phases = {rule.phase for layer in p.layer if layer.type in DATA_TYPES for rule in layer.include
              if rule.HasField("phase")}
    data = [layer for layer in p.layer if layer.type in DATA_TYPES]
    if len(phases) == 1 and data and all(layer.include for layer in data):
        return phases.pop()
    return None


def smallest(rel, data):
    """The net at the smallest crop (1/4, 1/2 or all of its own) whose TRAIN phase builds: InnerProduct
    adapts to any input, a fixed-kernel global pooling does not."""
    for shrink in (4, 2):
        p = prepare(rel, data, shrink)
        if any(layer.transform_param.crop_size for layer in p.layer):
            try:
                _close(caffe.Net(p, caffe.TRAIN))
                return p
            except NetError:
                continue
    return prepare(rel, data)


def run_net(rel, data):
    """Build the TRAIN and TEST nets (as the solver does) and take 2 solver steps."""
    p = smallest(rel, data)
    key = _key(p)
    if key in _DONE:                    # the same net after preparation (legacy copies, NVIDIA's BVLC copies)
        return _DONE[key]
    solver = caffe_pb2.SolverParameter(base_lr=1e-4, lr_policy="fixed", momentum=0.9, max_iter=2, random_seed=1,
                                       snapshot_after_train=False, display=1, test_initialization=False)
    solver.net_param.CopyFrom(p)
    only = _single_phase(p)
    if only is not None or rel in NO_TEST_NET:        # a train-only or test-only file: the other phase has no data
        other = caffe.TEST if only in (None, caffe.TRAIN) else caffe.TRAIN
        with pytest.raises(NetError, match="unknown bottom blob"):
            caffe.Net(p, other)
        if only == caffe.TEST:
            solver.train_state.phase = caffe.TEST     # SSD's test.prototxt: the solver steps its TEST net
    else:
        solver.test_iter.append(1)
        solver.test_interval = 1000
        stage = _test_stage(p)
        if stage:
            solver.test_state.add(stage=[stage])
    s = solvers.get_solver(solver)
    assert s.net.layers and all(net.layers for net in s.test_nets)
    s.step(2)
    assert s.iter == 2 and np.isfinite(s.smoothed_loss)
    for net in [s.net] + s.test_nets:
        _close(net)
    _DONE[key] = float(s.smoothed_loss)
    return _DONE[key]


def _key(p):
    q = caffe_pb2.NetParameter()
    q.CopyFrom(p)
    q.ClearField("name")
    return q.SerializeToString(deterministic=True)


_DONE = {}
# DIGITS' classification net has no TEST data layer: Caffe cannot build its TEST phase either
NO_TEST_NET = {"NVIDIA__caffe/classification/model/train_val.prototxt"}
# Nets that repeat another architecture at full cost (FLOAT16 copies, legacy and NVIDIA copies, the big
# ImageNet/SSD families beyond one member each): DISTCAFFE_ZOO_ALL=1 runs them too (19 min on 2 shared cores
# for the whole manifest); the default run keeps CI to a few minutes. SSD300 at batch 1 is tests/test_zoo_ssd.py.
HEAVY = re.compile(r"fp16|FP16|legacy|/solvers/|inception_v|resnet50/train_val_|resnet50_exp|RN50|AN-FP16|"
                   r"NVIDIA__caffe/models/(bvlc_|vgg16|alexnet)|WIDER_FACE/SFD.exp/|SSD_300x300/train")


def _close(net):
    for layer in net.layers:
        close = getattr(layer, "close", None)
        if close is not None:
            close()


TRT = "NVIDIA__caffe/examples/TensorRT/trt.prototxt"


@pytest.mark.parametrize("rel", [
    r for r in _train_val() if r != TRT and (os.environ.get("DISTCAFFE_ZOO_ALL") == "1" or not HEAVY.search(r))])
def test_zoo_train_val_net_builds_and_trains_two_steps(rel, data, zoo):
    caffe.set_mode_cpu()
    caffe.set_random_seed(1)
    run_net(rel, data)


def test_trt_example_is_the_clear_error(data, zoo):
    with pytest.raises(NetError, match="TensorRT.*deploy_trt.prototxt"):
        caffe.Net(prepare(TRT, data), caffe.TEST)


def test_manifest_is_covered(zoo):
    assert len(_train_val()) >= 100
