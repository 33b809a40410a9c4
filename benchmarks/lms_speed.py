"""Large Model Support on a GPU: ResNet-50 (examples/imagenet's, in training mode) at a batch that fits a
device budget without LMS, then at a batch whose footprint is FACTOR x that budget with -lms, prefetch on and
off (off = IBM Caffe's LMS, which waits on every copy). Each run is its own process; one JSON line per run.

    python benchmarks/lms_speed.py --batch 32 --factor 4 --iters 8          # needs a GPU (cupy)
    python benchmarks/lms_speed.py --cpu --net <cifar10_quick> --batch 2 --iters 3   # dry run of the script

The budget is the device memory the fitting run held (cupy pool: arrays and temporaries); the LMS runs get it
as their budget, so "over the budget" is measured, not assumed. `train_param` is shared with the CPU tests.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_param(net, batch):
    """The training NetParameter of `net` at `batch`: 'resnet50' (examples/imagenet's, as gpu_bench builds it)
    or a deploy prototxt path (net_speed's rule: label Input, SoftmaxWithLoss, BatchNorm in training mode)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if net == "resnet50":
        from gpu_bench import _resnet50_deploy, _with_loss
        return _with_loss(_resnet50_deploy(), batch, False)[0]
    from net_speed import train_net_param
    return train_net_param(str(net), batch)[0]


def child(a):
    """One timed run in this process: prints {mode, batch, img_s, pool_bytes, lms...}."""
    import numpy as np

    import distcaffe
    from distcaffe import caffe_pb2, lms, solvers
    from distcaffe.lms.schedule import layer_workspace
    if a.cpu:                          # the dry run: numpy plays the device, the footprint is counted
        distcaffe.set_mode_cpu()
        sync, held = (lambda: None), None
    else:
        distcaffe.set_device(a.gpu)
        distcaffe.set_mode_gpu()
        cp = distcaffe.backend.cupy()
        sync, held = cp.cuda.Device().synchronize, cp.get_default_memory_pool().total_bytes
    if a.mode != "fit":
        lms.set_lms(1, budget=a.budget, prefetch=a.mode == "lms")
    sp = caffe_pb2.SolverParameter(base_lr=0.01, momentum=0.9, weight_decay=1e-4, lr_policy="fixed",
                                   max_iter=10 ** 6, random_seed=1, snapshot_after_train=False)
    sp.net_param.CopyFrom(train_param(a.net, a.batch))
    s = solvers.get_solver(sp)
    rng = np.random.RandomState(0)
    s.net.blobs["data"].data[...] = rng.randn(*s.net.blobs["data"].shape)
    s.net.blobs["label"].data[...] = rng.randint(0, 10, a.batch)
    times, predicted = [], None
    for k in range(a.iters):
        if k == a.iters - 1 and s.net.lms is not None:
            predicted = s.net.lms.mgr.predict(1)[0]      # what the last iteration should copy
        sync()
        t = time.perf_counter()
        s.step(1)
        sync()
        times.append(time.perf_counter() - t)
    copies = s.net.lms.mgr.copies(1)[0] if s.net.lms is not None else None      # before any host read below
    arrays = sum(sa.size * sa.dtype.itemsize for sa in lms._arrays(s.net)) + sum(
        h.nbytes if hasattr(h, "nbytes") else h.count * h.dtype.itemsize for h in s._history)
    if held is None:                   # CPU: the arrays plus the largest pass's workspace, as LMS accounts it
        net = s.net
        ws = max(layer_workspace(net.layers[i], net._bottom(i), net._top(i), b)
                 for i in range(len(net.layers)) for b in (False, True))
        held = lambda: arrays + ws     # noqa: E731
    out = {"mode": a.mode, "batch": a.batch, "img_s": a.batch / statistics.median(times[2:]),
           "device_bytes": held(), "array_bytes": arrays, "loss": float(s.net.blobs["loss"].data)}
    if s.net.lms is not None:
        m = s.net.lms.mgr
        out.update(m.stats())
        out["copies_per_iteration"] = copies
        out["predicted_per_iteration"] = predicted
    print("RESULT " + json.dumps(out), flush=True)


def run(a, mode, batch, budget=0):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--mode", mode, "--batch", str(batch),
           "--budget", str(budget), "--iters", str(a.iters), "--net", a.net, "--gpu", str(a.gpu)] + (
        ["--cpu"] if a.cpu else [])
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[7:])
            print(json.dumps(res), flush=True)
            return res
    sys.stderr.write(p.stderr[-3000:])
    raise SystemExit("%s run at batch %d failed (exit %d)" % (mode, batch, p.returncode))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32, help="the fitting batch")
    ap.add_argument("--factor", type=float, default=4.0, help="LMS footprint / budget")
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--net", default="resnet50", help="'resnet50' or a deploy prototxt")
    ap.add_argument("--cpu", action="store_true", help="dry run on the CPU (numpy as the device)")
    ap.add_argument("--json", help="also write the summary here")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--mode", default="fit")
    ap.add_argument("--budget", type=int, default=0)
    a = ap.parse_args()
    if a.child:
        return child(a)
    fit = run(a, "fit", a.batch)
    twice = run(a, "fit", 2 * a.batch)
    per_image = (twice["device_bytes"] - fit["device_bytes"]) / a.batch
    fixed = fit["device_bytes"] - per_image * a.batch
    budget = fit["device_bytes"]
    big = int((a.factor * budget - fixed) / per_image)
    # on a GPU the pool holds only arrays; the temporaries the fitting run needed come from cupy beside it
    pool = budget if a.cpu else budget - (fit["device_bytes"] - fit["array_bytes"])
    on = run(a, "lms", big, pool)
    off = run(a, "lms-noprefetch", big, pool)
    summary = {"budget_bytes": budget, "lms_pool_bytes": pool, "fit_batch": a.batch, "lms_batch": big,
               "lms_footprint_over_budget": (fixed + per_image * big) / budget,
               "fit_img_s": fit["img_s"], "lms_prefetch_img_s": on["img_s"], "lms_noprefetch_img_s": off["img_s"],
               "time_ratio_prefetch": fit["img_s"] / on["img_s"], "time_ratio_noprefetch": fit["img_s"] / off["img_s"],
               "lms_device_bytes": on["device_bytes"], "goal_met": fit["img_s"] / on["img_s"] <= 1.3}
    summary["runs"] = [fit, twice, on, off]
    print("SUMMARY " + json.dumps(summary), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
