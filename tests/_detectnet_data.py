"""Small generated DetectNet (KITTI) data: an image LMDB of raw BGR Datums and a label LMDB of DIGITS'
"label image" Datums (float_data, 1 x (MAX_BOXES + 1) x 16: row 0 = (box count, 16), then one box a row:
x, y, w, h, alpha, class, scenario, roty, truncated, occluded, dimensions xyz, location xyz)."""
import numpy as np

from distcaffe.data.db import open_writer
from distcaffe.data.datum import array_to_datum
from distcaffe.proto import caffe_pb2

MAX_BOXES = 4


def label_image(boxes, rows=MAX_BOXES + 1):
    """The (1, rows, 16) label image of `boxes` [(x, y, w, h, class)]."""
    out = np.zeros((1, rows, 16), np.float32)
    out[0, 0, :2] = len(boxes), 16
    for i, (x, y, w, h, cls) in enumerate(boxes):
        out[0, 1 + i, [0, 1, 2, 3, 5]] = x, y, w, h, cls
    return out


def label_datum(arr):
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = arr.shape
    datum.float_data.extend(arr.reshape(-1).tolist())
    return datum


def kitti(path, n=3, size=(136, 72), seed=0, backend="lmdb"):
    """`n` images of `size` (width, height) with 1-2 bright class-1 boxes on noise; returns the image and label
    database paths and the boxes per image."""
    rng = np.random.default_rng(seed)
    w, h = size
    all_boxes = []
    with open_writer(path + "_images", backend) as images, open_writer(path + "_labels", backend) as labels:
        for i in range(n):
            img = rng.integers(0, 60, (3, h, w)).astype(np.uint8)
            boxes = []
            for _ in range(1 + i % 2):
                bw, bh = int(rng.integers(w // 6, w // 3)), int(rng.integers(h // 4, h // 2))
                x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
                img[:, y:y + bh, x:x + bw] = np.array([90, 40, 200], np.uint8)[:, None, None]
                boxes.append((x, y, bw, bh, 1))
            images.put("%08d" % i, array_to_datum(img, 0).SerializeToString())
            labels.put("%08d" % i, label_datum(label_image(boxes)).SerializeToString())
            all_boxes.append(boxes)
    return path + "_images", path + "_labels", all_boxes
