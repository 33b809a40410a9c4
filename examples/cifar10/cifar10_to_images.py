"""Turn the CIFAR-10 python batches (cifar-10-batches-py/, downloaded by you) into PNGs + list files
for `distcaffe convert_imageset`. Nothing is fetched at run time.

usage: python examples/cifar10/cifar10_to_images.py cifar-10-batches-py examples/cifar10/data
"""
import os
import pickle
import sys

import numpy as np
from PIL import Image


def write_split(batches, src, out, name):
    os.makedirs(os.path.join(out, name), exist_ok=True)
    lines = []
    for batch in batches:
        with open(os.path.join(src, batch), "rb") as f:
            d = pickle.load(f, encoding="bytes")
        images = d[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        for i, (img, label) in enumerate(zip(images, d[b"labels"])):
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
