"""Data-parallel scaling: measure 1..N ranks here, project 8..1024 GPUs with an alpha-beta ring-allreduce model.

    python benchmarks/scaling.py --max-ranks 2 --iters 30 --out benchmarks/results

Measured (real `mpiexec -n k` CPU ranks, one BLAS thread each, the engine's GradientReducer): per-iteration
forward, backward, exposed communication (from the slowest rank's end of backward to the end of the bucket
allreduces), time waiting for the slowest rank, the same buckets' allreduce time alone, the fraction of
communication hidden behind backward (1 - exposed / alone) and weak-scaling efficiency (iteration time at
1 rank / at k ranks, per-rank batch fixed). Medians over the iterations.
Projected: ring allreduce T(n, p) = 2(p-1)/p * n * beta + 2(p-1) * alpha per bucket, buckets sent one after
another as backward makes them ready (the engine's overlap); iteration = forward + backward + what is left
of communication after backward. Writes scaling.json, scaling.md (tables) and scaling.png.
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

NET = """name: "cifar_quick_input"
reduce_buckets: {buckets}
layer {{ name: "data" type: "Input" top: "data" top: "label"
  input_param {{ shape {{ dim: {batch} dim: 3 dim: 32 dim: 32 }} shape {{ dim: {batch} }} }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 32 pad: 2 kernel_size: 5 weight_filler {{ type: "gaussian" std: 0.0001 }} }} }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param {{ pool: MAX kernel_size: 3 stride: 2 }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "pool1" top: "pool1" }}
layer {{ name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param {{ num_output: 32 pad: 2 kernel_size: 5 weight_filler {{ type: "gaussian" std: 0.01 }} }} }}
layer {{ name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }}
layer {{ name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param {{ pool: AVE kernel_size: 3 stride: 2 }} }}
layer {{ name: "conv3" type: "Convolution" bottom: "pool2" top: "conv3"
  convolution_param {{ num_output: 64 pad: 2 kernel_size: 5 weight_filler {{ type: "gaussian" std: 0.01 }} }} }}
layer {{ name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }}
layer {{ name: "pool3" type: "Pooling" bottom: "conv3" top: "pool3"
  pooling_param {{ pool: AVE kernel_size: 3 stride: 2 }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "pool3" top: "ip1"
  inner_product_param {{ num_output: {hidden} weight_filler {{ type: "gaussian" std: 0.1 }} }} }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param {{ num_output: 10 weight_filler {{ type: "gaussian" std: 0.1 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
"""


# --- the model (pure functions; tests/test_scaling_model.py checks them by hand) -------------------------
def ring_allreduce_time(n_bytes, p, alpha, beta):
    """Ring allreduce of n bytes over p ranks: 2(p-1)/p * n * beta + 2(p-1) * alpha (alpha: s per message
    step, beta: s per byte)."""
    if p <= 1:
        return 0.0
    return 2.0 * (p - 1) / p * n_bytes * beta + 2.0 * (p - 1) * alpha


def overlapped_comm(bucket_bytes, ready_times, backward_time, p, alpha, beta):
    """(total communication, exposed part) when bucket k may start at ready_times[k] (seconds after backward
    began) and buckets go one at a time in order; exposed = what runs past the end of backward."""
    end = 0.0
    total = 0.0
    for n, ready in zip(bucket_bytes, ready_times):
        t = ring_allreduce_time(n, p, alpha, beta)
        end = max(end, ready) + t
        total += t
    return total, max(0.0, end - backward_time)


def project(forward, backward, bucket_bytes, ready_fractions, ranks, alpha, beta, batch):
    """Rows for each p in `ranks`: iteration time, communication, hidden fraction, weak-scaling efficiency and
    images/s. `ready_fractions[k]`: fraction of backward done when bucket k is ready."""
    base = forward + backward
    rows = []
    for p in ranks:
        ready = [f * backward for f in ready_fractions]
        total, exposed = overlapped_comm(bucket_bytes, ready, backward, p, alpha, beta)
        it = base + exposed
        rows.append({"ranks": p, "iteration_s": it, "comm_s": total, "exposed_s": exposed,
                     "hidden": 1.0 - exposed / total if total > 0 else 1.0, "efficiency": base / it,
                     "images_per_s": p * batch / it})
    return rows


# --- measurement (one rank of an mpiexec job) ---------------------------------------------------------
def rank_main(args):
    """Time `args.iters` iterations on this rank; rank 0 prints one JSON line of medians."""
    import numpy as np
    from google.protobuf import text_format

    from distcaffe import backend
    from distcaffe.log import set_quiet
    from distcaffe.net import Net
    from distcaffe.proto import caffe_pb2
    from distcaffe.engine.buckets import GradientReducer
    from distcaffe.engine.worker import make_communicator

    set_quiet(True)
    backend.set_mode_cpu()
    backend.set_random_seed(1)
    comm = make_communicator("auto", int(os.environ.get("PMI_SIZE", "1")), None)
    param = text_format.Parse(NET.format(batch=args.batch, buckets=args.buckets, hidden=args.hidden),
                              caffe_pb2.NetParameter())
    param.state.phase = caffe_pb2.TRAIN
    net = Net(param, phase=caffe_pb2.TRAIN)
    rng = np.random.default_rng(comm.rank)
    net.blobs["data"].data[...] = rng.normal(size=net.blobs["data"].shape)
    net.blobs["label"].data[...] = rng.integers(0, 10, net.blobs["label"].shape[0])
    reducer = GradientReducer(net, comm, args.buckets)
    last = len(net.layers) - 1
    rows = []
    for i in range(args.iters + args.warmup):
        net.clear_param_diffs()
        comm.barrier()
        t0 = time.perf_counter()
        net.forward_from_to(0, last)
        t1 = time.perf_counter()
        reducer.begin_iteration()
        net.backward_from_to(last, 0)
        t2, wall2 = time.perf_counter(), time.time()
        reducer.finish(1.0 / comm.size)
        t3, wall3 = time.perf_counter(), time.time()
        ends = np.zeros(comm.size)
        ends[comm.rank] = wall2
        comm.allreduce(ends)                          # when each rank finished backward (one host's clock)
        skew = ends.max() - wall2                     # waiting for the slowest rank, not for the network
        if i >= args.warmup:
            rows.append([t1 - t0, t2 - t1, max(0.0, wall3 - ends.max()), skew]
                        + [(b.started_at - t1) / max(t2 - t1, 1e-9) for b in reducer.buckets])
    alone = []
    for _ in range(max(3, args.iters // 3)):
        comm.barrier()
        t = time.perf_counter()
        for bucket in reducer.buckets:
            comm.allreduce(bucket.buffer)
        alone.append(time.perf_counter() - t)
    med = np.median(np.array(rows), axis=0)
    result = {"ranks": comm.size, "forward_s": med[0], "backward_s": med[1], "exposed_s": med[2], "skew_s": med[3],
              "ready_fractions": [min(1.0, max(0.0, f)) for f in med[4:]], "comm_alone_s": float(np.median(alone)),
              "bucket_bytes": [int(b.buffer.nbytes) for b in reducer.buckets], "batch": args.batch}
    result = {k: (float(v) if isinstance(v, np.floating) else v) for k, v in result.items()}
    result["iteration_s"] = result["forward_s"] + result["backward_s"] + result["exposed_s"] + result["skew_s"]
    if comm.rank == 0:
        print("SCALING " + json.dumps(result), flush=True)
    comm.close()


def measure(k, args):
    """Run the measurement with k ranks (real mpiexec for k > 1); returns rank 0's result."""
    cmd = [sys.executable, __file__, "--rank-run", "--iters", str(args.iters), "--batch", str(args.batch),
           "--buckets", str(args.buckets), "--hidden", str(args.hidden), "--warmup", str(args.warmup)]
    if k > 1:
        cmd = [shutil.which("mpiexec"), "-n", str(k)] + cmd
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    for line in r.stdout.splitlines():
        if line.startswith("SCALING "):
            return json.loads(line[len("SCALING "):])
    raise RuntimeError("measurement with %d ranks failed:\n%s" % (k, r.stderr[-3000:]))


def fit_alpha_beta(args):
    """Latency and inverse bandwidth of this machine's MPI from 8-byte and large allreduces with 2 ranks."""
    code = ("import time, numpy as np; from mpi4py import MPI; c = MPI.COMM_WORLD\n"
            "def t(n, reps):\n"
            "    a = np.ones(n // 8); c.Barrier(); s = time.perf_counter()\n"
            "    for _ in range(reps): c.Allreduce(MPI.IN_PLACE, a)\n"
            "    return (time.perf_counter() - s) / reps\n"
            "small, big = t(8, 2000), t(%d, 10)\n"
            "if c.rank == 0: print('AB', small, big)\n" % args.fit_bytes)
    r = subprocess.run([shutil.which("mpiexec"), "-n", "2", sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=300)
    small, big = (float(x) for x in r.stdout.split("AB")[1].split())
    alpha = small / 2.0                               # 2(p-1) = 2 steps at p = 2
    beta = max(big - 2 * alpha, 1e-12) / args.fit_bytes  # 2(p-1)/p = 1 at p = 2
    return alpha, beta


def table(rows, cols):
    head = "| " + " | ".join(c[0] for c in cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "".join("| " + " | ".join(c[2] % r[c[1]] for c in cols) + " |\n" for r in rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-ranks", type=int, default=2)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32, help="per-rank batch (weak scaling)")
    ap.add_argument("--buckets", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=64, help="ip1 width: grows the gradient size")
    ap.add_argument("--fit-bytes", type=int, default=16 << 20)
    ap.add_argument("--alpha-us", type=float, default=5.0, help="projection: per-step latency (us)")
    ap.add_argument("--beta-gbps", type=float, default=12.5, help="projection: link bandwidth (GB/s)")
    ap.add_argument("--compute-scale", type=float, default=1.0,
                    help="projection: multiply measured compute (e.g. 0.02 for a GPU ~50x faster than this CPU)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--rank-run", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rank_run:
        sys.path.insert(0, str(ROOT))
        return rank_main(args)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    measured = [measure(k, args) for k in range(1, args.max_ranks + 1)]
    t1 = measured[0]["iteration_s"]
    for m in measured:
        m["hidden"] = 1.0 - m["exposed_s"] / m["comm_alone_s"] if m["ranks"] > 1 else float("nan")
        m["efficiency"] = t1 / m["iteration_s"]
        m["images_per_s"] = m["ranks"] * m["batch"] / m["iteration_s"]
    alpha_here, beta_here = fit_alpha_beta(args)
    base = measured[0]
    alpha, beta = args.alpha_us * 1e-6, 1.0 / (args.beta_gbps * 1e9)
    ranks = [8, 16, 32, 64, 128, 256, 512, 1024]
    fwd, bwd = base["forward_s"] * args.compute_scale, base["backward_s"] * args.compute_scale
    ready = measured[-1]["ready_fractions"]
    projection = project(fwd, bwd, base["bucket_bytes"], ready, ranks, alpha, beta, args.batch)
    no_overlap = project(fwd, bwd, [sum(base["bucket_bytes"])], [1.0], ranks, alpha, beta, args.batch)
    for row, flat in zip(projection, no_overlap):
        row["efficiency_no_overlap"] = flat["efficiency"]
    result = {"measured": measured, "alpha_here_s": alpha_here, "beta_here_s_per_byte": beta_here,
              "projection": projection, "alpha_s": alpha, "beta_s_per_byte": beta, "args": vars(args)}
    (out / "scaling.json").write_text(json.dumps(result, indent=1))
    md = "Measured (%s, %d gradient bytes in %d buckets, per-rank batch %d):\n\n" % (
        "CPU ranks, 1 BLAS thread each", sum(base["bucket_bytes"]), len(base["bucket_bytes"]), args.batch)
    md += table([dict(m, **{k: 1e3 * m[k] for k in ("forward_s", "backward_s", "exposed_s", "comm_alone_s",
                                                      "skew_s")}) for m in measured],
                [("ranks", "ranks", "%d"), ("forward ms", "forward_s", "%.1f"), ("backward ms", "backward_s", "%.1f"),
                 ("comm alone ms", "comm_alone_s", "%.2f"), ("exposed comm ms", "exposed_s", "%.2f"),
                 ("wait for slowest rank ms", "skew_s", "%.2f"),
                 ("hidden", "hidden", "%.2f"), ("weak-scaling eff.", "efficiency", "%.2f"),
                 ("img/s", "images_per_s", "%.0f")])
    md += ("\nThis machine's MPI: alpha = %.1f us, beta = %.2f GB/s (fit from 8 B and %d MB allreduces, 2 ranks)."
           "\n\nProjection (alpha = %.1f us, %.1f GB/s links, compute = measured x %g, ring allreduce, "
           "buckets overlapped with backward):\n\n" % (alpha_here * 1e6, 1e-9 / beta_here, args.fit_bytes >> 20,
                                                      args.alpha_us, args.beta_gbps, args.compute_scale))
    md += table([dict(r, iteration_ms=1e3 * r["iteration_s"], comm_ms=1e3 * r["comm_s"],
                      exposed_ms=1e3 * r["exposed_s"]) for r in projection],
                [("GPUs", "ranks", "%d"), ("iteration ms", "iteration_ms", "%.2f"), ("comm ms", "comm_ms", "%.2f"),
                 ("exposed ms", "exposed_ms", "%.2f"), ("hidden", "hidden", "%.2f"),
                 ("efficiency", "efficiency", "%.3f"), ("eff. without overlap", "efficiency_no_overlap", "%.3f"),
                 ("img/s", "images_per_s", "%.0f")])
    (out / "scaling.md").write_text(md)
    plot(measured, projection, out / "scaling.png")
    print(md)
    return 0


def plot(measured, projection, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot([m["ranks"] for m in measured], [m["efficiency"] for m in measured], "o-", label="measured (CPU ranks)")
    a.set_xlabel("ranks")
    a.set_ylabel("weak-scaling efficiency")
    a.set_ylim(0, 1.05)
    a.legend()
    ps = [r["ranks"] for r in projection]
    b.semilogx(ps, [r["efficiency"] for r in projection], "o-", base=2, label="buckets overlapped")
    b.semilogx(ps, [r["efficiency_no_overlap"] for r in projection], "s--", base=2,
               label="one allreduce after backward")
    b.set_xlabel("GPUs (projected)")
    b.set_ylabel("weak-scaling efficiency")
    b.set_ylim(0, 1.05)
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    sys.exit(main())
