"""Prototxt parsing time vs file size: distcaffe's read path (parse_text: UTF-8 check, comment strip, the fast
text-format reader distcaffe.io.text_parser, required-field check) against protobuf's text_format.Parse (the
peer), each in its own process, on the same generated net text; also checks both give the same message bytes.
usage: python benchmarks/prototxt_parse.py [LAYERS ...]   (340000 layers is ~50 MB)"""
import hashlib
import subprocess
import sys
import time

LAYER = ('layer { name: "ip%d" type: "InnerProduct" bottom: "data" top: "ip%d" '
         'inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }\n')


def measure(who, layers):
    """Seconds (best of 3, 1 above 10 MB) for `who` to parse the text of `layers` layers, and the bytes' digest."""
    from google.protobuf import text_format

    from distcaffe.io.text import parse_text
    from distcaffe.proto import caffe_pb2
    text = "".join(LAYER % (i, i) for i in range(layers))
    times = []
    for _ in range(3 if len(text) < 10e6 else 1):
        t = time.perf_counter()
        if who == "distcaffe":
            message = parse_text(text, caffe_pb2.NetParameter)
        else:
            message = text_format.Parse(text, caffe_pb2.NetParameter())
        times.append(time.perf_counter() - t)
    print(min(times), len(text), hashlib.sha1(message.SerializeToString()).hexdigest())


def run(who, layers):
    out = subprocess.run([sys.executable, __file__, "--one", who, str(layers)], check=True, capture_output=True,
                         text=True).stdout.split()
    return float(out[0]), int(out[1]), out[2]


def main(sizes):
    print("| layers | MB | distcaffe parse_text s | protobuf text_format.Parse s (peer) | ratio | distcaffe us/byte |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        ours, size, digest = run("distcaffe", n)
        peer, _, peer_digest = run("text_format", n)
        assert digest == peer_digest, "the two parsers gave different messages"
        print("| %d | %.2f | %.2f | %.2f | %.3f | %.3f |" % (n, size / 1e6, ours, peer, ours / peer, ours / size * 1e6),
              flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        measure(sys.argv[2], int(sys.argv[3]))
    else:
        main([int(a) for a in sys.argv[1:]] or [2000, 8000, 32000])
