"""Prototxt parsing time vs file size: distcaffe's read path (parse_text: UTF-8 check, comment strip, protobuf's
text parser, error shaping) against protobuf's text_format.Parse alone, to show where the time goes and that it
grows linearly (no quadratic path). usage: python benchmarks/prototxt_parse.py [LAYERS ...]"""
import sys
import time

from google.protobuf import text_format

from distcaffe.io.text import parse_text
from distcaffe.proto import caffe_pb2

LAYER = ('layer { name: "ip%d" type: "InnerProduct" bottom: "data" top: "ip%d" '
         'inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }\n')


def best(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(sizes):
    print("| layers | MB | distcaffe s | protobuf text_format s | ratio | distcaffe us/byte |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        text = "".join(LAYER % (i, i) for i in range(n))
        ours = best(lambda: parse_text(text, caffe_pb2.NetParameter))
        peer = best(lambda: text_format.Parse(text, caffe_pb2.NetParameter()))
        print("| %d | %.2f | %.2f | %.2f | %.2f | %.2f |" % (n, len(text) / 1e6, ours, peer, ours / peer,
                                                           ours / len(text) * 1e6))


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [2000, 8000, 32000])
