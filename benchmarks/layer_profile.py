"""Where a net's forward+backward time goes, layer by layer: wall and CPU milliseconds of each layer's forward
and backward, and how many threads were busy in it (CPU / wall), distcaffe only.

usage: python benchmarks/layer_profile.py [--net cifar10_quick] [--threads 2] [--iters 20] [--top 20]

The net is net_speed.py's (the zoo deploy net at its benchmark batch, a label Input and SoftmaxWithLoss, TRAIN,
blobs shared), in a process whose BLAS/OpenMP/numba pools are sized to --threads before numpy loads. After two
warm-up passes, each of --iters passes is timed per layer through `Net.before_/after_forward` and
`before_/after_backward` (perf_counter and process_time, which counts all of the process's threads); the table
gives each (layer, direction)'s median, largest wall first, the pass's median total, and the medians summed by
layer type. It reads the cost of a layer where it runs, not a ratio against a peer: net_speed.py is the
benchmark.
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def profile(name, iters, zoo):
    """{(layer, 'forward'|'backward'): [(wall ms, cpu ms) per pass]}, {layer: Caffe type} and the passes' wall
    ms."""
    sys.path.insert(0, os.path.dirname(HERE))
    import net_speed
    import distcaffe as caffe
    from distcaffe.log import set_quiet
    set_quiet()
    import numpy as np
    path, batch = net_speed.NETS[name]
    net_param, classes = net_speed.train_net_param(os.path.join(zoo, path), batch)
    net = caffe.Net(net_param, caffe.TRAIN)
    net.share_diffs = net.share_data = True
    rng = np.random.default_rng(0)
    net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].shape)
    net.blobs["label"].data[...] = rng.integers(0, classes, batch)
    times, started, totals = {}, {}, []

    def start(i):
        started[i] = (time.perf_counter(), time.process_time())

    def stop(direction):
        def cb(i):
            w, c = started.pop(i)
            times.setdefault((net.layers[i].name, direction), []).append(
                ((time.perf_counter() - w) * 1e3, (time.process_time() - c) * 1e3))
        return cb
    for k in range(iters + 2):
        if k == 2:
            times.clear()
            net.before_forward.append(start)
            net.after_forward.append(stop("forward"))
            net.before_backward.append(start)
            net.after_backward.append(stop("backward"))
        t = time.perf_counter()
        net.clear_param_diffs()
        net.forward_backward()
        if k >= 2:
            totals.append((time.perf_counter() - t) * 1e3)
    return times, {layer.name: layer.type for layer in net.layers}, totals


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", default="cifar10_quick")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--top", type=int, default=20, help="rows of the table (largest wall first)")
    ap.add_argument("--zoo", default=os.environ.get("DISTCAFFE_ZOO", "/work/shared/zoo"))
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    times, types, totals = profile(args.net, args.iters, args.zoo)
    rows = sorted(((statistics.median(w for w, _ in v), statistics.median(c for _, c in v), k)
                   for k, v in times.items()), reverse=True)
    wall = sum(r[0] for r in rows)
    cpu = sum(r[1] for r in rows)
    print("%s, %d thread(s), %d passes: median pass %.1f ms; layers' medians sum to %.1f ms wall, %.1f ms CPU "
          "(%.2f busy)" % (args.net, args.threads, args.iters, statistics.median(totals), wall, cpu, cpu / wall))
    print("%-28s %-8s %9s %9s %5s" % ("layer", "pass", "wall ms", "CPU ms", "busy"))
    for w, c, (layer, direction) in rows[:args.top]:
        print("%-28s %-8s %9.2f %9.2f %5.2f" % (layer, direction, w, c, c / w if w else 0.0))
    by_type = {}
    for w, c, (layer, direction) in rows:
        total = by_type.setdefault((types[layer], direction), [0.0, 0.0])
        total[0], total[1] = total[0] + w, total[1] + c
    print("\n%-28s %-8s %9s %9s %5s" % ("type (sum of its layers)", "pass", "wall ms", "CPU ms", "busy"))
    for (kind, direction), (w, c) in sorted(by_type.items(), key=lambda item: -item[1][0]):
        print("%-28s %-8s %9.2f %9.2f %5.2f" % (kind, direction, w, c, c / w if w else 0.0))


if __name__ == "__main__":
    main()
