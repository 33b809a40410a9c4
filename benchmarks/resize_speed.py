"""Image resize speed: distcaffe.data.resize (separable) vs the dense einsum it replaced vs OpenCV's cv2.resize.

    python benchmarks/resize_speed.py [--repeat 5] [--skip-einsum] [--algo CUBIC ...]

A random 375x500 3-channel uint8 image (BGR, (C, H, W) for distcaffe, (H, W, C) for OpenCV) resized to 256x256
with each interpolation. Each implementation runs in its own process; the table gives median milliseconds and
the ratio to OpenCV. The einsum row is the old O(H*W*h*w) path (one run: it takes about a minute for CUBIC).
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALGOS = ["NEAREST", "LINEAR", "CUBIC", "AREA"]
SRC, DST = (375, 500), (256, 256)


def _time(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2] * 1e3


def measure(impl, algo, repeat):
    """Median ms of one resize with `impl` (distcaffe, einsum, opencv); run in a child process."""
    import numpy as np
    img = np.random.default_rng(0).integers(0, 256, (3,) + SRC, dtype=np.uint8)
    if impl == "opencv":
        import cv2
        hwc = np.ascontiguousarray(img.transpose(1, 2, 0))
        flag = getattr(cv2, "INTER_" + algo)
        return _time(lambda: cv2.resize(hwc, DST[::-1], interpolation=flag), repeat)
    sys.path.insert(0, ROOT)
    from distcaffe.data import resize as R
    code = getattr(R, algo)
    if impl == "distcaffe":
        return _time(lambda: R.resize(img, DST[0], DST[1], code), repeat)

    def einsum():
        my, mx = R._matrix(DST[0], SRC[0], code), R._matrix(DST[1], SRC[1], code)
        out = np.einsum("yh,chw,xw->cyx", my, img.astype(np.float64), mx)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return _time(einsum, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-einsum", action="store_true", help="leave out the old dense einsum (slow)")
    ap.add_argument("--algo", nargs="+", choices=ALGOS, default=ALGOS, help="interpolations to time")
    ap.add_argument("--child", nargs=2, metavar=("IMPL", "ALGO"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], args.repeat)))
        return
    impls = ["distcaffe", "opencv"] + ([] if args.skip_einsum else ["einsum"])
    print("| interpolation | %s | distcaffe / OpenCV |" % " | ".join("%s ms" % i for i in impls))
    print("|---|%s---|" % ("---|" * len(impls)))
    for algo in args.algo:
        ms = {}
        for impl in impls:
            if impl == "einsum" and algo == "LINEAR":
                ms[impl] = float("nan")       # uint8 LINEAR never took the einsum path (fixed point)
                continue
            out = subprocess.run([sys.executable, __file__, "--repeat", str(args.repeat), "--child", impl, algo],
                                 capture_output=True, text=True, check=True)
            ms[impl] = json.loads(out.stdout)
        print("| %s | %s | %.2f |" % (algo, " | ".join("%.1f" % ms[i] for i in impls),
                                      ms["distcaffe"] / ms["opencv"]))


if __name__ == "__main__":
    main()
