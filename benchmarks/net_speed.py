"""Forward+backward time and peak memory of the zoo's nets: distcaffe vs PyTorch, each in its own process.

usage: python benchmarks/net_speed.py [--nets lenet,cifar10_quick,...] [--threads 1,2] [--rounds 6]
                                      [--iters 5] [--quick] [--private-blobs] [--caffe PATH | --no-caffe]
                                      [--out benchmarks/results/net_speed]
       python benchmarks/net_speed.py --train [--nets lenet,cifar10_quick] [--threads 1] ...

Each net is a zoo deploy prototxt (/work/shared/zoo, or --zoo DIR) with its input set to the benchmark's batch,
a label Input and SoftmaxWithLoss in place of the final Softmax, run in the TRAIN phase (BatchNorm on batch
statistics), with blobs shared as `distcaffe train` runs it (`Net.share_diffs` and `Net.share_data`: an
intermediate diff's memory is reused once backward is past it, as PyTorch frees a gradient once consumed, and so is
a data no backward reads once forward is past it; `--private-blobs`: every blob keeps its own data and diff, a bare
pycaffe Net's default). The PyTorch model is built from the same NetParameter, layer for layer (a BatchNorm +
Scale pair is one affine BatchNorm2d, as a PyTorch user writes it). Per net and thread count, one worker process
per framework (BLAS/OpenMP pools sized by environment before either library loads) is started; the driver alternates
rounds between them (the idle one waits on a pipe, not spinning; round r takes the r-th order of the frameworks,
so each comes first and after each other as often) so that a noisy machine slows them alike.
A round is `--iters` passes (5; LeNet 20, CIFAR-10 quick 10); its median wall and CPU (process_time, all
threads) milliseconds are kept, and the reported figure is the median over rounds. Peak RSS is the worker's
ru_maxrss at the end.
Writes <out>.json (every round) and <out>.md (the table).

BVLC Caffe, when its `caffe` tool is found (`--caffe PATH`, else `caffe` on PATH; `--no-caffe` leaves it out), is
the third peer, in the same alternation: each of its rounds is one `caffe time -phase TRAIN -iterations <iters>`
process on the same net, whose input comes from a DummyData layer (Gaussian data, as the other two get; label 0);
the round's figure is Caffe's own "Average Forward-Backward" less that DummyData layer's average (its refill each
pass is not part of the net), so it is a mean over the round's passes and wall time only (no CPU column), with
Caffe's start-up and warm-up pass outside it. Peak RSS is the largest of its processes'. Caffe's `time` does not
clear parameter diffs between passes (the other two do). Installing it on Debian 12, as root: add bullseye
(`deb http://deb.debian.org/debian bullseye main`, pinned below bookworm), `apt-get install -t bullseye caffe`
(1.0.0+git20180821, CPU_ONLY), and `apt-get install libopenblas0-pthread` so that its libblas.so.3 is OpenBLAS,
not the reference BLAS.

--train: distcaffe only, one process per net: a full training iteration (`solver.step(1)`: a Data layer
reading an LMDB of random records through the prefetch queue, forward+backward, SGD momentum update,
display every iteration) against forward+backward alone on the same net, alternating rounds; writes
<out>_train.{json,md}.
"""
import argparse
import itertools
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# The environment each worker starts from: as the user's shell had it, before `import distcaffe` (the driver's,
# for the net definitions) sets its OpenBLAS defaults in this process.
ENV0 = dict(os.environ)
ROOT = os.path.dirname(HERE)

# name: (zoo prototxt, batch)
NETS = {
    "lenet": ("BVLC__caffe/examples/mnist/lenet.prototxt", 64),
    "cifar10_quick": ("BVLC__caffe/examples/cifar10/cifar10_quick.prototxt", 100),
    "alexnet": ("BVLC__caffe/models/bvlc_alexnet/deploy.prototxt", 16),
    "googlenet": ("BVLC__caffe/models/bvlc_googlenet/deploy.prototxt", 8),
    "resnet50": ("KaimingHe__deep-residual-networks/prototxt/ResNet-50-deploy.prototxt", 8),
}
# Passes per round unless --iters says: rounds of ~0.2 s at least, so that a millisecond-scale net's figure is
# not one short burst of a machine whose speed moves (LeNet at 5 passes: 0.79-1.06x BVLC Caffe between runs; at
# 20, three runs read 0.84-0.89x).
ROUND_PASSES = {"lenet": 20, "cifar10_quick": 10}
FRAMEWORKS = ("distcaffe", "pytorch")
BVLC = "bvlc"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


# --- the benchmark nets ---------------------------------------------------------------------------
def train_net_param(path, batch):
    """The deploy net at `batch`, with a label Input and SoftmaxWithLoss instead of its final Softmax."""
    from distcaffe.io import read_net_param
    net = read_net_param(path)
    data = net.layer[0]
    assert data.type == "Input", "%s: the first layer must be an Input layer" % path
    data.input_param.shape[0].dim[0] = batch
    num_classes = None
    for lp in net.layer:
        if lp.type == "BatchNorm":
            lp.batch_norm_param.ClearField("use_global_stats")
        if lp.type == "InnerProduct":
            num_classes = lp.inner_product_param.num_output
    soft = net.layer[-1]
    assert soft.type == "Softmax", "%s: the last layer must be a Softmax" % path
    label = net.layer.add(name="label", type="Input", top=["label"])
    label.input_param.shape.add(dim=[batch])
    net.layer.add(name="loss", type="SoftmaxWithLoss", bottom=[soft.bottom[0], "label"], top=["loss"])
    del net.layer[-3]                                   # the Softmax
    return net, num_classes


def _pair(values, default):
    values = list(values)
    if not values:
        return (default, default)
    return (values[0], values[-1])


def torch_model(net_param):
    """A torch.nn.Module computing the same graph as `net_param` (Convolution, Pooling, ReLU, LRN, Concat,
    Dropout, InnerProduct, BatchNorm(+Scale), Eltwise SUM, SoftmaxWithLoss)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from distcaffe.proto import caffe_pb2
    PP = caffe_pb2.PoolingParameter

    layers = list(net_param.layer)
    shapes = {}
    steps = []                                          # (kind, module name or None, bottoms, top, extra)
    mods = nn.ModuleDict()
    fused_scale = set()
    for i, lp in enumerate(layers):
        if lp.type == "Input":
            for top, shape in zip(lp.top, lp.input_param.shape):
                shapes[top] = list(shape.dim)
            continue
        if lp.name in fused_scale:
            continue
        b = list(lp.bottom)
        key = "m%d" % i
        shp = shapes[b[0]]
        if lp.type == "Convolution":
            cp = lp.convolution_param
            k = _pair(cp.kernel_size, 0) if not cp.HasField("kernel_h") else (cp.kernel_h, cp.kernel_w)
            s = _pair(cp.stride, 1) if not cp.HasField("stride_h") else (cp.stride_h, cp.stride_w)
            p = _pair(cp.pad, 0) if not cp.HasField("pad_h") else (cp.pad_h, cp.pad_w)
            d = _pair(cp.dilation, 1)
            mods[key] = nn.Conv2d(shp[1], cp.num_output, k, s, p, d, groups=cp.group, bias=cp.bias_term)
            out = [(shp[2 + a] + 2 * p[a] - (d[a] * (k[a] - 1) + 1)) // s[a] + 1 for a in range(2)]
            shapes[lp.top[0]] = [shp[0], cp.num_output] + out
            steps.append(("mod", key, b, lp.top[0]))
        elif lp.type == "Pooling":
            pp = lp.pooling_param
            k = tuple(shp[2:]) if pp.global_pooling else (
                (pp.kernel_size,) * 2 if pp.HasField("kernel_size") else (pp.kernel_h, pp.kernel_w))
            s = (pp.stride_h, pp.stride_w) if pp.HasField("stride_h") else (pp.stride,) * 2
            p = (pp.pad_h, pp.pad_w) if pp.HasField("pad_h") else (pp.pad,) * 2
            cls = nn.MaxPool2d if pp.pool == PP.MAX else nn.AvgPool2d
            mods[key] = cls(k, s, p, ceil_mode=True)
            with torch.no_grad():
                out = mods[key](torch.zeros([1] + shp[1:])).shape[2:]
            shapes[lp.top[0]] = shp[:2] + list(out)
            steps.append(("mod", key, b, lp.top[0]))
        elif lp.type == "ReLU":
            shapes[lp.top[0]] = shp
            steps.append(("relu", None, b, lp.top[0]))
        elif lp.type == "LRN":
            q = lp.lrn_param
            mods[key] = nn.LocalResponseNorm(q.local_size, q.alpha, q.beta, q.k)
            shapes[lp.top[0]] = shp
            steps.append(("mod", key, b, lp.top[0]))
        elif lp.type == "Concat":
            shapes[lp.top[0]] = shp[:1] + [sum(shapes[x][1] for x in b)] + shp[2:]
            steps.append(("concat", None, b, lp.top[0]))
        elif lp.type == "Dropout":
            mods[key] = nn.Dropout(lp.dropout_param.dropout_ratio)
            shapes[lp.top[0]] = shp
            steps.append(("mod", key, b, lp.top[0]))
        elif lp.type == "InnerProduct":
            n_in = 1
            for v in shp[1:]:
                n_in *= v
            mods[key] = nn.Linear(n_in, lp.inner_product_param.num_output,
                                  bias=lp.inner_product_param.bias_term)
            shapes[lp.top[0]] = [shp[0], lp.inner_product_param.num_output]
            steps.append(("linear", key, b, lp.top[0]))
        elif lp.type == "BatchNorm":
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            affine = nxt is not None and nxt.type == "Scale" and list(nxt.bottom) == list(lp.top)
            if affine:
                fused_scale.add(nxt.name)
            affine = affine or lp.batch_norm_param.scale_bias     # NVCaffe's BatchNorm with its own scale/bias
            mods[key] = nn.BatchNorm2d(shp[1], eps=lp.batch_norm_param.eps, affine=affine)
            top = nxt.top[0] if nxt is not None and nxt.name in fused_scale else lp.top[0]
            shapes[top] = shp
            steps.append(("mod", key, b, top))
        elif lp.type == "Eltwise":
            assert lp.eltwise_param.operation == caffe_pb2.EltwiseParameter.SUM and not lp.eltwise_param.coeff
            shapes[lp.top[0]] = shp
            steps.append(("sum", None, b, lp.top[0]))
        elif lp.type == "SoftmaxWithLoss":
            steps.append(("loss", None, b, lp.top[0]))
        else:
            raise ValueError("net_speed: no PyTorch equivalent for layer type %s" % lp.type)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.mods = mods

        def forward(self, blobs):
            blobs = dict(blobs)
            for kind, key, b, top in steps:
                x = blobs[b[0]]
                if kind == "mod":
                    y = self.mods[key](x)
                elif kind == "relu":
                    y = F.relu(x, inplace=top == b[0])
                elif kind == "concat":
                    y = torch.cat([blobs[n] for n in b], 1)
                elif kind == "linear":
                    y = self.mods[key](x.flatten(1))
                elif kind == "sum":
                    y = x + blobs[b[1]]
                else:
                    y = F.cross_entropy(x, blobs[b[1]])
                blobs[top] = y
            return y

    return Model(), shapes


# --- one framework's worker process ---------------------------------------------------------------
def _build(framework, name, zoo, share=True):
    path, batch = NETS[name]
    net_param, classes = train_net_param(os.path.join(zoo, path), batch)
    import numpy as np
    rng = np.random.default_rng(0)
    if framework == "distcaffe":
        import distcaffe as caffe
        from distcaffe.log import set_quiet
        set_quiet()
        net = caffe.Net(net_param, caffe.TRAIN)
        net.share_diffs = net.share_data = share
        net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].shape)
        net.blobs["label"].data[...] = rng.integers(0, classes, batch)

        def step():
            net.clear_param_diffs()
            net.forward_backward()
        return step
    import torch
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    model, shapes = torch_model(net_param)
    model.train()
    blobs = {"data": torch.from_numpy(rng.standard_normal(shapes["data"]).astype(np.float32)),
             "label": torch.from_numpy(rng.integers(0, classes, batch))}

    def step():
        model.zero_grad()
        model(blobs).backward()
    return step


def worker(framework, name, zoo, share=True):
    """Build the net, warm it up, then answer 'run N' lines with one round's times; 'quit' with peak RSS."""
    step = _build(framework, name, zoo, share)
    step()
    step()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "run":
            wall, cpu = [], []
            for _ in range(int(cmd[1])):
                w, c = time.perf_counter(), time.process_time()
                step()
                wall.append((time.perf_counter() - w) * 1e3)
                cpu.append((time.process_time() - c) * 1e3)
            print(json.dumps({"wall": statistics.median(wall), "cpu": statistics.median(cpu)}), flush=True)
        else:
            rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            print(json.dumps({"rss_mb": rss_mb}), flush=True)
            return


# --- a full training iteration vs forward+backward (distcaffe) --------------------------------------
def _lmdb_of_random_records(path, shape, count, classes):
    import numpy as np
    from distcaffe.data.lmdb_writer import LMDBWriter
    from distcaffe.io import array_to_datum
    rng = np.random.default_rng(0)
    with LMDBWriter(path) as w:
        for i in range(count):
            img = rng.integers(0, 256, shape).astype(np.uint8)
            w.put("%08d" % i, array_to_datum(img, int(rng.integers(0, classes))).SerializeToString())


def train_worker(name, zoo, rounds, iters, share=True):
    """Per-iteration wall/CPU ms of solver.step(1) and of forward+backward alone, alternating rounds."""
    import tempfile
    from distcaffe import solvers
    from distcaffe.log import set_quiet
    from distcaffe.proto import caffe_pb2
    set_quiet()
    path, batch = NETS[name]
    net_param, classes = train_net_param(os.path.join(zoo, path), batch)
    data = net_param.layer[0]
    shape = list(data.input_param.shape[0].dim)[1:]
    tmp = tempfile.mkdtemp(prefix="net_speed_")
    _lmdb_of_random_records(os.path.join(tmp, "db"), shape, 4 * batch, classes)
    lp = caffe_pb2.LayerParameter(name="data", type="Data", top=["data", "label"])
    lp.data_param.source, lp.data_param.batch_size = os.path.join(tmp, "db"), batch
    lp.data_param.backend = caffe_pb2.DataParameter.LMDB
    lp.transform_param.scale = 1.0 / 256
    label = [i for i, layer in enumerate(net_param.layer) if layer.name == "label"][0]
    del net_param.layer[label]
    net_param.layer[0].CopyFrom(lp)
    sp = caffe_pb2.SolverParameter(base_lr=0.001, momentum=0.9, weight_decay=0.0005, lr_policy="fixed",
                                   display=1, max_iter=1 << 30, snapshot_after_train=False,
                                   solver_mode=caffe_pb2.SolverParameter.CPU)
    sp.net_param.CopyFrom(net_param)
    solver = solvers.get_solver(sp)
    net = solver.net
    net.share_diffs = net.share_data = share

    def fwd_bwd():
        net.clear_param_diffs()
        net.forward_backward()

    passes = {"train_iteration": lambda: solver.step(1), "forward_backward": fwd_bwd}
    for fn in passes.values():
        fn()
        fn()
    res = {k: {"wall": [], "cpu": []} for k in passes}
    for r in range(rounds):
        for key in (list(passes) if r % 2 == 0 else list(passes)[::-1]):
            wall, cpu = [], []
            for _ in range(iters):
                w, c = time.perf_counter(), time.process_time()
                passes[key]()
                wall.append((time.perf_counter() - w) * 1e3)
                cpu.append((time.process_time() - c) * 1e3)
            res[key]["wall"].append(statistics.median(wall))
            res[key]["cpu"].append(statistics.median(cpu))
    print(json.dumps(res), flush=True)


def worker_env(threads):
    """A worker's environment: the user's (ENV0) with every pool sized to `threads` and this checkout importable."""
    env = dict(ENV0, **{v: str(threads) for v in THREAD_VARS})
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def measure_train(name, threads, rounds, iters, zoo, mode=()):
    env = worker_env(threads)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--train-worker", "--nets", name, "--zoo", zoo,
                          "--rounds", str(rounds), "--iters", str(iters)] + list(mode), env=env, stdout=subprocess.PIPE,
                         text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def blobs_mode(args):
    """The worker flags and the line saying which distcaffe memory mode a run measures."""
    if "--private-blobs" in args:
        return ["--private-blobs"], "distcaffe blobs: private (every blob its own data and diff, a bare pycaffe Net)"
    return [], "distcaffe blobs: shared (`Net.share_diffs` and `Net.share_data`, as `distcaffe train` runs)"


def train_markdown(rows, args):
    out = ["Command: `python benchmarks/net_speed.py %s`" % " ".join(args), "", blobs_mode(args)[1], "",
           "| net | batch | threads | training iteration ms (wall / CPU) | forward+backward ms (wall / CPU) | "
           "iteration / fwd+bwd (wall / CPU) |", "|---|---|---|---|---|---|"]
    for r in rows:
        out.append("| %s | %d | %d | %.1f / %.1f | %.1f / %.1f | %.2f / %.2f |" % (
            r["net"], r["batch"], r["threads"], r["iter_wall"], r["iter_cpu"], r["fb_wall"], r["fb_cpu"],
            r["iter_wall"] / r["fb_wall"], r["iter_cpu"] / r["fb_cpu"]))
    return "\n".join(out) + "\n"


def main_train(args):
    rows, results = [], {}
    for threads in [int(t) for t in args.threads.split(",")]:
        for name in args.nets.split(","):
            res = results["%s@%d" % (name, threads)] = measure_train(name, threads, args.rounds, passes(args, name),
                                                                     args.zoo, blobs_mode(sys.argv)[0])
            med = {k: {m: statistics.median(v[m]) for m in ("wall", "cpu")} for k, v in res.items()}
            rows.append(dict(net=name, batch=NETS[name][1], threads=threads,
                             iter_wall=med["train_iteration"]["wall"], iter_cpu=med["train_iteration"]["cpu"],
                             fb_wall=med["forward_backward"]["wall"], fb_cpu=med["forward_backward"]["cpu"]))
            print("%-14s %d thr: iteration %.1f ms (cpu %.1f) | fwd+bwd %.1f ms (cpu %.1f)" % (
                name, threads, rows[-1]["iter_wall"], rows[-1]["iter_cpu"], rows[-1]["fb_wall"],
                rows[-1]["fb_cpu"]), flush=True)
    _write(args.out + "_train", {"rounds": results, "summary": rows}, train_markdown(rows, sys.argv[1:]))


def _write(out, record, md):
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump(dict({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "argv": sys.argv[1:],
                        "blobs": blobs_mode(sys.argv)[1]}, **record), f, indent=1)
    with open(out + ".md", "w") as f:
        f.write(md)
    print(md)


# --- the driver -----------------------------------------------------------------------------------
class Worker:
    def __init__(self, framework, name, threads, zoo, mode=()):
        env = worker_env(threads)
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", framework,
                                      "--nets", name, "--zoo", zoo] + list(mode), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, text=True)
        self.framework = framework

    def ask(self, line):
        if line is not None:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        if not reply:
            raise SystemExit("net_speed: the %s worker died (exit %s)" % (self.framework, self.proc.wait()))
        return json.loads(reply)

    def close(self):
        rss = self.ask("quit")["rss_mb"]
        self.proc.wait()
        return rss


DUMMY = "net_speed_input"
_CAFFE_TIME = {"fb": re.compile(r"Average Forward-Backward: ([0-9.eE+-]+) ms"),
               "fwd": re.compile(r"\]\s+%s\s+forward: ([0-9.eE+-]+) ms" % DUMMY),
               "bwd": re.compile(r"\]\s+%s\s+backward: ([0-9.eE+-]+) ms" % DUMMY)}


def bvlc_net_text(name, zoo):
    """The benchmark net as BVLC Caffe's `caffe time` runs it: the Input layers replaced by one DummyData layer."""
    from google.protobuf import text_format
    path, batch = NETS[name]
    net_param, _ = train_net_param(os.path.join(zoo, path), batch)
    inputs = [lp for lp in net_param.layer if lp.type == "Input"]
    dummy = net_param.layer.add(name=DUMMY, type="DummyData")
    for lp in inputs:
        for top, shape in zip(lp.top, lp.input_param.shape):
            dummy.top.append(top)
            dummy.dummy_data_param.shape.add().CopyFrom(shape)
            filler = dummy.dummy_data_param.data_filler.add()
            if top == "label":
                filler.type, filler.value = "constant", 0
            else:
                filler.type, filler.std = "gaussian", 1.0
        net_param.layer.remove(lp)
    net_param.layer.insert(0, net_param.layer.pop())
    return text_format.MessageToString(net_param)


class CaffeTool:
    """BVLC Caffe as a peer: each round one `caffe time` process (its start-up and warm-up are not timed)."""

    def __init__(self, caffe, name, threads, zoo):
        import tempfile
        fd, self.model = tempfile.mkstemp(prefix="net_speed_%s_" % name, suffix=".prototxt")
        with os.fdopen(fd, "w") as f:
            f.write(bvlc_net_text(name, zoo))
        self.caffe, self.rss_mb = caffe, 0.0
        self.env = worker_env(threads)

    def ask(self, line):
        """'run N': one round of N passes, {'wall': mean ms of the net's own layers}."""
        if line is None:
            return {}
        proc = subprocess.Popen([self.caffe, "time", "-model", self.model, "-phase", "TRAIN", "-iterations",
                                 line.split()[1]], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        log = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        found = {k: rx.search(log) for k, rx in _CAFFE_TIME.items()}
        if proc.returncode != 0 or not all(found.values()):
            raise SystemExit("net_speed: %s time -model %s failed (exit %s):\n%s" % (
                self.caffe, self.model, proc.returncode, log[-2000:]))
        self.rss_mb = max(self.rss_mb, usage.ru_maxrss / 1024.0)
        ms = {k: float(m.group(1)) for k, m in found.items()}
        return {"wall": ms["fb"] - ms["fwd"] - ms["bwd"], "cpu": None}

    def close(self):
        os.unlink(self.model)
        return self.rss_mb


def find_caffe(args):
    """The BVLC `caffe` tool to measure against, or None (--no-caffe, or none found)."""
    if args.no_caffe:
        return None
    path = args.caffe or shutil.which("caffe")
    if args.caffe and not (path and os.access(path, os.X_OK)):
        raise SystemExit("net_speed: --caffe %s: not an executable" % args.caffe)
    return path


def measure(name, threads, rounds, iters, zoo, mode=(), caffe=None):
    """Alternating rounds of the frameworks (and BVLC Caffe, given its tool); per framework the rounds' medians
    and the peak RSS."""
    workers = {}
    for fw in FRAMEWORKS:              # built one after the other: neither build disturbs the other's warm-up
        workers[fw] = Worker(fw, name, threads, zoo, mode)
        workers[fw].ask(None)
    if caffe:
        workers[BVLC] = CaffeTool(caffe, name, threads, zoo)
    order = list(workers)
    orders = list(itertools.permutations(order))      # every order in turn: each framework as often first,
    res = {fw: {"wall": [], "cpu": []} for fw in order}  # and after each other one (2: alternating; 3: 6 rounds)
    for r in range(rounds):
        for fw in orders[r % len(orders)]:
            out = workers[fw].ask("run %d" % iters)
            res[fw]["wall"].append(out["wall"])
            res[fw]["cpu"].append(out["cpu"])
    for fw in order:
        res[fw]["rss_mb"] = workers[fw].close()
    return res


def summary_rows(results):
    rows = []
    for key, res in results.items():
        name, threads = key.rsplit("@", 1)
        med = {fw: {m: statistics.median(res[fw][m]) for m in ("wall", "cpu")} for fw in FRAMEWORKS}
        rows.append(dict(net=name, batch=NETS[name][1], threads=int(threads),
                         ours_wall=med["distcaffe"]["wall"], peer_wall=med["pytorch"]["wall"],
                         ours_cpu=med["distcaffe"]["cpu"], peer_cpu=med["pytorch"]["cpu"],
                         ours_rss=res["distcaffe"]["rss_mb"], peer_rss=res["pytorch"]["rss_mb"]))
        if BVLC in res:
            rows[-1].update(bvlc_wall=statistics.median(res[BVLC]["wall"]), bvlc_rss=res[BVLC]["rss_mb"])
    return rows


def markdown(rows, args):
    out = ["Command: `python benchmarks/net_speed.py %s`" % " ".join(args), "", blobs_mode(args)[1], "",
           "| net | batch | threads | distcaffe wall ms | PyTorch wall ms | wall ratio | distcaffe CPU ms | "
           "PyTorch CPU ms | CPU ratio | distcaffe peak RSS MB | PyTorch peak RSS MB |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append("| %s | %d | %d | %.1f | %.1f | %.2f | %.1f | %.1f | %.2f | %.0f | %.0f |" % (
            r["net"], r["batch"], r["threads"], r["ours_wall"], r["peer_wall"], r["ours_wall"] / r["peer_wall"],
            r["ours_cpu"], r["peer_cpu"], r["ours_cpu"] / r["peer_cpu"], r["ours_rss"], r["peer_rss"]))
    bvlc = [r for r in rows if "bvlc_wall" in r]
    if bvlc:
        out += ["", "BVLC Caffe (`caffe time`, the same alternation; wall ms of the net's layers, a mean per round):",
                "", "| net | batch | threads | distcaffe wall ms | BVLC Caffe wall ms | distcaffe / BVLC | "
                "distcaffe peak RSS MB | BVLC Caffe peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
        for r in bvlc:
            out.append("| %s | %d | %d | %.1f | %.1f | %.2f | %.0f | %.0f |" % (
                r["net"], r["batch"], r["threads"], r["ours_wall"], r["bvlc_wall"], r["ours_wall"] / r["bvlc_wall"],
                r["ours_rss"], r["bvlc_rss"]))
    return "\n".join(out) + "\n"


def passes(args, name):
    """Passes per round for `name`: --iters, else its ROUND_PASSES (5 for the large nets)."""
    return args.iters or ROUND_PASSES.get(name, 5)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--iters", type=int, help="passes per round (default 5; LeNet 20, CIFAR-10 quick 10)")
    ap.add_argument("--quick", action="store_true", help="3 rounds of 2 passes (while iterating)")
    ap.add_argument("--zoo", default=os.environ.get("DISTCAFFE_ZOO", "/work/shared/zoo"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "net_speed"))
    ap.add_argument("--train", action="store_true", help="a full training iteration vs forward+backward")
    ap.add_argument("--private-blobs", action="store_true", help="distcaffe without blob sharing (pycaffe's Net)")
    ap.add_argument("--caffe", help="BVLC Caffe's `caffe` tool, a third peer (default: `caffe` on PATH, if any)")
    ap.add_argument("--no-caffe", action="store_true", help="leave BVLC Caffe out")
    ap.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    ap.add_argument("--train-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.nets, args.zoo, not args.private_blobs)
    if args.quick:
        args.rounds, args.iters = 3, 2
    if args.train_worker:
        return train_worker(args.nets, args.zoo, args.rounds, args.iters, not args.private_blobs)
    if args.train:
        return main_train(args)
    results = {}
    caffe = find_caffe(args)
    for threads in [int(t) for t in args.threads.split(",")]:
        for name in args.nets.split(","):
            if name not in NETS:
                raise SystemExit("net_speed: unknown net %s (known: %s)" % (name, ", ".join(NETS)))
            t0 = time.time()
            results["%s@%d" % (name, threads)] = measure(name, threads, args.rounds, passes(args, name), args.zoo,
                                                         blobs_mode(sys.argv)[0], caffe)
            row = summary_rows({"%s@%d" % (name, threads): results["%s@%d" % (name, threads)]})[0]
            bvlc = (" | bvlc %.1f ms (%.2fx)" % (row["bvlc_wall"], row["ours_wall"] / row["bvlc_wall"])
                    if "bvlc_wall" in row else "")
            print("%-14s %d thr: distcaffe %.1f ms (cpu %.1f) | pytorch %.1f ms (cpu %.1f) | wall %.2fx cpu %.2fx"
                  " | rss %.0f / %.0f MB%s  [%.0f s]" % (
                      name, threads, row["ours_wall"], row["ours_cpu"], row["peer_wall"], row["peer_cpu"],
                      row["ours_wall"] / row["peer_wall"], row["ours_cpu"] / row["peer_cpu"], row["ours_rss"],
                      row["peer_rss"], bvlc, time.time() - t0), flush=True)
    rows = summary_rows(results)
    _write(args.out, {"rounds": results, "summary": rows}, markdown(rows, sys.argv[1:]))


if __name__ == "__main__":
    main()
