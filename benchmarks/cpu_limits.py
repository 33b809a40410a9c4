"""What bounds CPU speed on this machine, for issue 12's open targets: GEMM vs direct-convolution GFLOP/s, the weight
product's layouts, and what a second thread costs (pool hand-off, GIL hand-offs between numpy calls).

usage: python benchmarks/cpu_limits.py [--out benchmarks/results/cpu_limits]

Every part runs in its own fresh process, one BLAS/OpenMP thread unless said, so that no library's idle threads
spin into another's (numpy's OpenBLAS, PyTorch's OpenMP). Medians of repeated calls, in ms or GFLOP/s.
- gemm: numpy sgemm GFLOP/s, square 1024 and 2048 (OpenBLAS's ceiling here), and the net's convolution shapes.
- onednn: PyTorch's CPU convolution (oneDNN) on CIFAR-10 quick's three layers, forward and forward+backward.
- weight_product: a weight-diff GEMM plus its add into the diff, (kernel_dim, outputs) added transposed against
  (outputs, kernel_dim) added straight (`ConvolutionLayer.STRAIGHT_PRODUCT_BYTES`).
- handoff: one numpy add, alone and split in halves with the caller doing one (`cpu_split`'s pattern); two
  threads each running a chain of numpy adds against one thread running both (the GIL's hand-offs).
- direct: a Convolution layer's forward as im2col + GEMM against the direct tap sums (`direct_conv`), on the
  shapes that set `ConvolutionLayer.DIRECT_WEIGHTS`.
Writes <out>.json and <out>.md.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ONE_THREAD = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}


def median_ms(f, n=7):
    """Median wall ms of n calls of f after one warm-up."""
    f()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def part_gemm():
    import numpy as np
    rng = np.random.default_rng(0)
    out = {}
    for m, k, n in ((1024, 1024, 1024), (2048, 2048, 2048), (32, 75, 13312), (32, 800, 1280), (64, 800, 1280)):
        a, b = rng.random((m, k), np.float32), rng.random((k, n), np.float32)
        c = np.empty((m, n), np.float32)
        out["%dx%dx%d" % (m, k, n)] = 2 * m * k * n / median_ms(lambda: np.matmul(a, b, out=c)) / 1e6
    return out


def part_onednn():
    import torch
    torch.set_num_threads(1)
    out = {}
    for name, (c, h, o) in {"conv1": (3, 32, 32), "conv2": (32, 16, 32), "conv3": (32, 8, 64)}.items():
        x = torch.rand(100, c, h, h, requires_grad=True)
        conv = torch.nn.Conv2d(c, o, 5, padding=2)
        flops = 2 * 100 * o * c * 25 * h * h
        g = torch.rand_like(conv(x))
        fwd = median_ms(lambda: conv(x))
        both = median_ms(lambda: torch.autograd.grad(conv(x), [x, conv.weight], g))
        out[name] = {"forward": flops / fwd / 1e6, "forward+backward": 3 * flops / both / 1e6}
    return out


def part_weight_product():
    import numpy as np
    rng = np.random.default_rng(0)
    out = {}
    for m, k, n in ((512, 4608, 392), (512, 4608, 1176), (2048, 512, 392), (256, 2304, 392), (256, 2304, 1568),
                    (128, 1152, 784), (32, 800, 1280)):
        col, g = rng.random((k, n), np.float32), rng.random((m, n), np.float32)
        pt, ps, diff = np.empty((k, m), np.float32), np.empty((m, k), np.float32), np.zeros((m, k), np.float32)

        def transposed():
            np.matmul(col, g.T, out=pt)
            diff.__iadd__(pt.T)

        def straight():
            np.matmul(g, col.T, out=ps)
            diff.__iadd__(ps)
        out["%dx%d, %d columns" % (m, k, n)] = {"transposed": median_ms(transposed), "straight": median_ms(straight)}
    return out


def part_handoff():
    import numpy as np
    from concurrent.futures import ThreadPoolExecutor
    pool = ThreadPoolExecutor(1)
    out = {"split add": {}, "GIL chains": {}}
    for size in (1 << 18, 1 << 22):
        a = np.random.rand(size).astype(np.float32)
        b, c, h = a.copy(), np.empty_like(a), size // 2

        def split():
            f = pool.submit(np.add, a[h:], b[h:], out=c[h:])
            np.add(a[:h], b[:h], out=c[:h])
            f.result()
        out["split add"][str(size)] = {"alone": median_ms(lambda: np.add(a, b, out=c), 25),
                                       "split": median_ms(split, 25)}
    for size, calls in ((1000, 2000), (30000, 300), (300000, 30)):
        arrays = [np.random.rand(size).astype(np.float32) for _ in range(2)]

        def chain(x):
            for _ in range(calls):
                np.add(x, x, out=x)
                x *= 0.5

        def both():
            f = pool.submit(chain, arrays[1])
            chain(arrays[0])
            f.result()
        serial = median_ms(lambda: (chain(arrays[0]), chain(arrays[1])), 5)
        out["GIL chains"]["%d x %d" % (size, calls)] = {"one thread": serial, "two threads": median_ms(both, 5)}
    return out


DIRECT_SHAPES = ((64, 1, 28, 20, 5, 0), (100, 3, 32, 32, 5, 2), (32, 3, 32, 16, 3, 1), (32, 3, 32, 64, 3, 1),
                 (64, 1, 28, 64, 5, 0), (32, 2, 32, 32, 5, 2), (32, 4, 32, 96, 3, 1), (32, 8, 16, 32, 3, 1),
                 (32, 3, 32, 48, 5, 2), (32, 6, 16, 64, 3, 1), (32, 8, 16, 32, 5, 2), (32, 32, 16, 16, 3, 1),
                 (32, 3, 32, 64, 7, 3), (16, 3, 64, 128, 5, 2), (8, 3, 112, 64, 3, 1))


def part_direct():
    """One Convolution layer's forward (a one-layer net), im2col + GEMM against the direct tap sums, 3 rounds
    alternating, the best median of each; the direct path forced on past its bounds (`DIRECT_WEIGHTS`, the
    per-image size) so both sides of them show. LeNet's and CIFAR-10 quick's conv1 also without numba."""
    import numpy as np
    from distcaffe import Net
    from distcaffe.io import parse_net_text
    from distcaffe.layers import fastpath
    from distcaffe.layers.vision import ConvolutionLayer
    from distcaffe.log import set_quiet
    from distcaffe.proto import caffe_pb2
    set_quiet()
    out = {}
    for n, c, h, o, k, pad in DIRECT_SHAPES:
        net = Net(parse_net_text('input: "x" input_shape { dim: %d dim: %d dim: %d dim: %d } layer { name: "c" '
                                 'type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: %d '
                                 'kernel_size: %d pad: %d weight_filler { type: "gaussian" std: 0.1 } } }'
                                 % (n, c, h, h, o, k, pad)), caffe_pb2.TEST)
        net.blobs["x"].data[...] = np.random.default_rng(0).standard_normal(net.blobs["x"].shape)
        times = {"gemm": [], "direct": []}
        for _ in range(3):
            for path in times:
                ConvolutionLayer.DIRECT_WEIGHTS = 0 if path == "gemm" else 1 << 30
                ConvolutionLayer.PER_IMAGE_MACS = 8 << 20 if path == "gemm" else 1 << 60
                times[path].append(median_ms(net.forward, 9))
        key = "%d, %d, %d, %d, %d, %d" % (n, c, h, o, k, pad)
        out[key] = {path: min(v) for path, v in times.items()}
        out[key]["weights"] = o * c * k * k
        if (c, o) in ((1, 20), (3, 32)):
            fastpath.set_enabled(False)
            out[key]["direct, numpy fallback"] = median_ms(net.forward, 3)
            fastpath.set_enabled(True)
    return out


PARTS = {"gemm": part_gemm, "onednn": part_onednn, "weight_product": part_weight_product, "handoff": part_handoff,
         "direct": part_direct}


def markdown(results, argv):
    lines = ["Command: `python benchmarks/cpu_limits.py %s`" % " ".join(argv), "",
             "sgemm GFLOP/s (numpy, 1 thread): " + ", ".join("%s %.0f" % kv for kv in results["gemm"].items()), "",
             "oneDNN convolution GFLOP/s (PyTorch, 1 thread, CIFAR-10 quick b100): " + ", ".join(
                 "%s %.0f forward / %.0f forward+backward" % (k, v["forward"], v["forward+backward"])
                 for k, v in results["onednn"].items()), "",
             "| weight product + add | transposed ms | straight ms |", "|---|---|---|"]
    lines += ["| %s | %.2f | %.2f |" % (k, v["transposed"], v["straight"]) for k, v in results["weight_product"].items()]
    lines += ["", "| hand-off | one thread ms | two threads ms |", "|---|---|---|"]
    lines += ["| add of %s floats | %.3f | %.3f |" % (k, v["alone"], v["split"])
              for k, v in results["handoff"]["split add"].items()]
    lines += ["| chains of adds, %s calls | %.2f | %.2f |" % (k, v["one thread"], v["two threads"])
              for k, v in results["handoff"]["GIL chains"].items()]
    lines += ["", "| forward (batch, channels, size, outputs, kernel, pad) | weights | im2col + GEMM ms | direct ms |",
              "|---|---|---|---|"]
    lines += ["| %s | %d | %.2f | %.2f%s |" % (k, v["weights"], v["gemm"], v["direct"],
                                              " (numpy fallback %.1f)" % v["direct, numpy fallback"]
                                              if "direct, numpy fallback" in v else "")
              for k, v in results["direct"].items()]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "cpu_limits"))
    ap.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)     # (one part, in a worker process)
    args = ap.parse_args()
    if args.part:
        json.dump(PARTS[args.part](), sys.stdout)
        return
    results = {}
    for name in PARTS:
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--part", name], check=True,
                              capture_output=True, text=True, env=dict(os.environ, **ONE_THREAD))
        results[name] = json.loads(done.stdout)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(dict(results, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), argv=sys.argv[1:]), f,
                  indent=1)
    md = markdown(results, sys.argv[1:])
    with open(args.out + ".md", "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
