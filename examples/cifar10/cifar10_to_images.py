"""Turn the CIFAR-10 binary batches (cifar-10-batches-bin/, the "binary version" Caffe's get_cifar10.sh fetches;
downloaded by you) into PNGs + list files for `distcaffe convert_imageset`. Nothing is fetched at run time, and
the files are read as plain bytes (1 label byte + 3072 pixel bytes per image), never unpickled.

usage: python examples/cifar10/cifar10_to_images.py cifar-10-batches-bin examples/cifar10/data
"""
import os
import sys

import numpy as np
from PIL import Image

RECORD = 1 + 3 * 32 * 32


def read_batch(path):
    """(images N x 32 x 32 x 3 uint8, labels) of one CIFAR-10 binary batch file."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise SystemExit("%s: not a CIFAR-10 binary batch (%d bytes is not a multiple of %d)" % (path, raw.size,
                                                                                               RECORD))
    records = raw.reshape(-1, RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), records[:, 0]


def write_split(batches, src, out, name):
    os.makedirs(os.path.join(out, name), exist_ok=True)
    lines = []
    for batch in batches:
        images, labels = read_batch(os.path.join(src, batch + ".bin"))
        for i, (img, label) in enumerate(zip(images, labels)):
            rel = "%s/%s_%05d.png" % (name, batch, i)
            Image.fromarray(np.ascontiguousarray(img)).save(os.path.join(out, rel))
            lines.append("%s %d\n" % (rel, label))
    with open(os.path.join(out, name + ".txt"), "w") as f:
        f.writelines(lines)
    return len(lines)


def main(argv):
    if len(argv) != 2:
        print(__doc__)
        return 2
    src, out = argv
    n_train = write_split(["data_batch_%d" % i for i in range(1, 6)], src, out, "train")
    n_test = write_split(["test_batch"], src, out, "test")
    print("wrote %d train and %d test images under %s" % (n_train, n_test, out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
