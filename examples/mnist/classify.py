"""Classify a few held-out digits with the pycaffe-style API and the weights `make demo` trained.

usage: python examples/mnist/classify.py [WEIGHTS] [TEST_LMDB] [N]
"""
import sys

import lmdb
import numpy as np

import distcaffe as caffe


def first_digits(db_path, n):
    """The first n (image, label) pairs of a Caffe MNIST LMDB, as pycaffe users read them."""
    images, labels = [], []
    env = lmdb.open(db_path, readonly=True, lock=False)
    with env.begin() as txn:
        for _, value in txn.cursor():
            datum = caffe.caffe_pb2.Datum.FromString(value)
            images.append(caffe.io.datum_to_array(datum))
            labels.append(datum.label)
            if len(images) == n:
                break
    env.close()
    return np.stack(images).astype(np.float32), np.array(labels)


def main(argv):
    weights = argv[0] if argv else "examples/mnist/lenet_iter_2000.caffemodel"
    db = argv[1] if len(argv) > 1 else "examples/mnist/data/mnist_test_lmdb"
    n = int(argv[2]) if len(argv) > 2 else 10
    caffe.set_mode_cpu()
    net = caffe.Net("examples/mnist/lenet.prototxt", caffe.TEST, weights=weights)
    images, labels = first_digits(db, n)
    images = images[:, :, 2:26, 2:26]  # the centre crop the net was tested on (transform_param crop_size: 24)
    net.blobs["data"].reshape(*images.shape)
    prob = net.forward(data=images * 0.00390625)["prob"]
    predicted = prob.argmax(axis=1)
    for i, (p, t) in enumerate(zip(predicted, labels)):
        print("digit %2d: predicted %d (p=%.3f), label %d %s" % (i, p, prob[i, p], t, "ok" if p == t else "WRONG"))
    print("classified %d/%d test digits correctly" % ((predicted == labels).sum(), n))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
