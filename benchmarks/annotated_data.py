"""AnnotatedData (SSD) pipeline throughput vs the SSD300 net's consumption, in the same run.

    python benchmarks/annotated_data.py [--images 64] [--seconds 20] [--ssd-iters 2]

1. an AnnotatedDatum LMDB of COCO-sized (500x375) JPEG images with 1-3 boxes each, written by convert_annoset;
2. the AnnotatedData layer with SSD300 (VGG16, COCO) train.prototxt's own transform_param and batch_samplers
   (distort, expand, 7 samplers, WARP 300x300 with random interpolation, mirror), batch 32, threads 1 and 2:
   images/s delivered by forward;
3. the same with the resize switched to FIT_LARGE_SIZE_AND_PAD and a `noise_param` (NOISE below, OpenCV);
4. the zoo SSD300 train net's forward+backward at batch 1 on the same data: images/s it consumes here.
Ratio = pipeline images/s / net images/s (> 1: the pipeline keeps up).
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np
from google.protobuf import text_format

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import distcaffe as caffe  # noqa: E402
from distcaffe.data.convert_annoset import convert_annoset  # noqa: E402
from distcaffe.io import read_net_param  # noqa: E402
from distcaffe.log import set_quiet  # noqa: E402
from distcaffe.proto import caffe_pb2  # noqa: E402

SSD = os.path.join(os.path.dirname(ROOT), "shared", "zoo", "NVIDIA__caffe", "models", "VGGNet", "coco",
                   "SSD_300x300", "train.prototxt")
NOISE = ("hist_eq: true gauss_blur: true jpeg: 80 erode: true saltpepper: true "
         "saltpepper_param { fraction: 0.01 value: 0 }")
LABEL_MAP = 'item { name: "bg" label: 0 } item { name: "a" label: 1 } item { name: "b" label: 2 }'


def write_annoset(tmp, n):
    """n 500x375 JPEGs with VOC XML boxes -> an AnnotatedDatum LMDB (our convert_annoset, encoded)."""
    from PIL import Image
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        img = rng.integers(0, 80, (375, 500, 3)).astype(np.uint8)
        objs = ""
        for k in range(1 + i % 3):
            x0, y0 = int(rng.integers(0, 300)), int(rng.integers(0, 200))
            x1, y1 = x0 + int(rng.integers(40, 200)), y0 + int(rng.integers(40, 175))
            img[y0:y1, x0:x1] = (200, 60 * k, 120)
            objs += ("<object><name>%s</name><difficult>0</difficult><bndbox><xmin>%d</xmin><ymin>%d</ymin>"
                     "<xmax>%d</xmax><ymax>%d</ymax></bndbox></object>" % ("ab"[k % 2], x0, y0, x1, y1))
        Image.fromarray(img).save(os.path.join(tmp, "%d.jpg" % i), quality=90)
        with open(os.path.join(tmp, "%d.xml" % i), "w") as f:
            f.write("<annotation><size><width>500</width><height>375</height></size>%s</annotation>" % objs)
        lines.append("%d.jpg %d.xml" % (i, i))
    with open(os.path.join(tmp, "list.txt"), "w") as f:
        f.write("\n".join(lines))
    with open(os.path.join(tmp, "labelmap.prototxt"), "w") as f:
        f.write(LABEL_MAP)
    db = os.path.join(tmp, "lmdb")
    convert_annoset(tmp + "/", os.path.join(tmp, "list.txt"), db, "xml", os.path.join(tmp, "labelmap.prototxt"),
                    encoded=True)
    return db, os.path.join(tmp, "labelmap.prototxt")


def ssd_net(db, labelmap, batch, threads=None, data_only=False, noise=False):
    p = read_net_param(SSD)
    data = p.layer[0]
    if noise:
        tp = data.transform_param
        tp.resize_param.resize_mode = caffe_pb2.ResizeParameter.FIT_LARGE_SIZE_AND_PAD
        text_format.Merge(NOISE, tp.noise_param)
    data.data_param.source, data.data_param.batch_size = db, batch
    data.annotated_data_param.label_map_file = labelmap
    if threads is not None:
        data.data_param.threads = data.data_param.parser_threads = threads
    if data_only:
        del p.layer[1:]
    return caffe.Net(p, caffe.TRAIN)


def pipeline_rate(db, labelmap, threads, seconds, noise=False):
    net = ssd_net(db, labelmap, 32, threads, data_only=True, noise=noise)
    net.forward()                                              # threads started, first batch through
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        net.forward()
        n += 32
    rate = n / (time.perf_counter() - start)
    net.layers[0].close()
    return rate


def net_rate(db, labelmap, iters):
    net = ssd_net(db, labelmap, 1)
    net.forward()
    net.backward()
    start = time.perf_counter()
    for _ in range(iters):
        net.forward()
        net.backward()
    rate = iters / (time.perf_counter() - start)
    net.layers[0].close()
    return rate


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--ssd-iters", type=int, default=2)
    args = ap.parse_args()
    set_quiet()
    caffe.set_mode_cpu()
    with tempfile.TemporaryDirectory() as tmp:
        db, labelmap = write_annoset(tmp, args.images)
        rates = {t: pipeline_rate(db, labelmap, t, args.seconds) for t in (1, 2)}
        noisy = {t: pipeline_rate(db, labelmap, t, args.seconds, noise=True) for t in (1, 2)}
        consumed = net_rate(db, labelmap, args.ssd_iters)
    print("| AnnotatedData, SSD300 train transform, batch 32 | threads=1 | threads=2 |")
    print("|---|---|---|")
    print("| pipeline images/s | %.1f | %.1f |" % (rates[1], rates[2]))
    print("| pipeline images/s, FIT_LARGE_SIZE_AND_PAD + noise_param | %.1f | %.1f |" % (noisy[1], noisy[2]))
    print("| SSD300 forward+backward images/s (batch 1, same run) | %.3f | %.3f |" % (consumed, consumed))
    print("| ratio pipeline / net | %.0f | %.0f |" % (rates[1] / consumed, rates[2] / consumed))
    print("| ratio pipeline / net, FIT_LARGE_SIZE_AND_PAD + noise_param | %.0f | %.0f |"
          % (noisy[1] / consumed, noisy[2] / consumed))
    print("Per-image pipeline cost: %.1f ms on 2 threads (%.1f ms with FIT_LARGE + noise); the net needs %.1f ms "
          "per image." % (1000 / rates[2], 1000 / noisy[2], 1000 / consumed))


if __name__ == "__main__":
    main()
