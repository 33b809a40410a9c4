"""caffe.io.resize_image vs BVLC's resize_image (scikit-image's resize), each in its own process.

BVLC's body is normalize to [0, 1], skimage.transform.resize(..., order, mode='constant'), rescale; ours gives
the same numbers (tests/test_pycaffe.py) as two cached matrix products. Prints ms per image, first call
(ours builds and caches the axis operators) and steady state, and the ratio.

    python benchmarks/pycaffe_resize.py [--repeats 10]
"""
import argparse
import json
import subprocess
import sys
import time

CASES = [((375, 500, 3), (256, 256), 1), ((375, 500, 3), (256, 256), 3), ((256, 256, 3), (227, 227), 1),
         ((28, 28, 1), (224, 224), 1)]

WORKER = r"""
import json, sys, time
import numpy as np
which, repeats, cases = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
if which == "distcaffe":
    import caffe
    resize = caffe.io.resize_image
else:
    from skimage.transform import resize as sk_resize
    def resize(im, dims, order):
        lo, hi = im.min(), im.max()
        return (sk_resize((im - lo) / (hi - lo), dims, order=order, mode="constant") * (hi - lo) + lo).astype(
            np.float32)
out = []
for shape, dims, order in cases:
    im = np.random.default_rng(0).random(shape).astype(np.float32)
    t = time.perf_counter(); resize(im, dims, order); first = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(repeats):
        resize(im, dims, order)
    out.append([first * 1e3, (time.perf_counter() - t) / repeats * 1e3])
print(json.dumps(out))
"""


def measure(which, repeats):
    proc = subprocess.run([sys.executable, "-c", WORKER, which, str(repeats), json.dumps(CASES)], check=True,
                          capture_output=True, text=True)
    return json.loads(proc.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    t0 = time.time()
    ours, bvlc = measure("distcaffe", args.repeats), measure("skimage", args.repeats)
    print("| resize (HxWxK -> hxw, order) | BVLC/skimage ms | distcaffe ms (first call) | distcaffe ms (steady) "
          "| speed-up (steady) |")
    print("|---|---|---|---|---|")
    for (shape, dims, order), (o_first, o_ms), (_, b_ms) in zip(CASES, ours, bvlc):
        print("| %s -> %s, order %d | %.1f | %.1f | %.1f | %.1fx |" % ("x".join(map(str, shape)), "x".join(map(str, dims)),
                                                                    order, b_ms, o_first, o_ms, b_ms / o_ms))
    print("(%.0f s)" % (time.time() - t0))


if __name__ == "__main__":
    main()
