"""Tiny data sets of every kind Caffe's data layers read, made by our own tools (LMDB/LevelDB Datums and mean
files, image lists, HDF5 lists, annotated LMDBs, KITTI label-image LMDBs, window files), and `point_data`, which
points a zoo net's data layers at them: used by the zoo training test and the prototxt fuzzer's worker."""
import os
from pathlib import Path

import numpy as np

from conftest import ZOO
from distcaffe.data import array_to_datum
from distcaffe.data.db import open_writer
from distcaffe.data.tools import compute_image_mean
from distcaffe.io import read_net_param
from _detection_data import annoset
from _detectnet_data import kitti

DATA_TYPES = ("Data", "ImageData", "HDF5Data", "AnnotatedData", "WindowData")
PYLOSS_DIR = Path(__file__).parent / "bvlc_pycaffe" / "examples" / "pycaffe" / "layers"
SSD_SIZE = {"SSD_300x300": 300, "SFD.exp": 320}       # SFD trains at 640; it is fully convolutional down to 320


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



def _data_channels(net, layer):
    """Input channels the net needs from this data layer's first top: 2 for a Slice into a siamese pair."""
    for other in net.layer:
        if other.type == "Slice" and layer.top and layer.top[0] in other.bottom:
            return len(other.top)
    tp = layer.transform_param
    return 1 if (tp.scale and tp.scale < 0.01 and not tp.crop_size) else 3        # MNIST's 1/256 or 1/255


def prepare(rel, data, shrink=1):
    """The zoo net `rel`'s NetParameter with data layers pointed at generated data (point_data)."""
    return point_data(read_net_param(str(ZOO / rel)), rel, data, shrink)


def point_data(p, rel, data, shrink=1):
    """NetParameter `p` (of zoo file `rel`) with data layers pointed at generated data, batches of 1-2, crops
    divided by `shrink`, SSD sizes shrunk."""
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

