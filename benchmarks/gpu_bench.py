"""GPU forward+backward img/s, distcaffe vs PyTorch + cuDNN on the same GPU, and the share of allreduce hidden
behind backward; the measuring half of benchmarks/gpu_check.sh (one framework per process).

usage: python benchmarks/gpu_bench.py speed   --framework distcaffe|pytorch --net NAME --seconds S --json OUT [--cpu]
       mpiexec -n 2 python benchmarks/gpu_bench.py overlap --seconds S --json OUT [--cpu]
       python benchmarks/gpu_bench.py report  --dir PARTS --out benchmarks/results/gpu [--tests-rc RC]

Nets (NAME): lenet_b64, alexnet_b256, resnet50_b64_float, resnet50_b64_float16 (examples/imagenet's ResNet-50 with
its Data layers replaced by inputs; FLOAT16 is distcaffe's FLOAT16 storage and math against PyTorch AMP
(autocast fp16). Each worker warms up (kernel compiles, cuDNN autotuning), then times whole passes for `--seconds`
(at least 3), synchronising the device before each clock read. `--cpu` runs the same code on the CPU at batch 2
and 32x32 ResNet images (the dry run that checks the script without a GPU). `overlap`: two ranks sharing one GPU through the MPI
communicator (device buffers staged on the host): backward alone, backward then allreduce, and backward with the
buckets' allreduce started as layers finish; hidden = (serial - overlapped) / (serial - backward alone).
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

NETS = ("lenet_b64", "alexnet_b256", "resnet50_b64_float", "resnet50_b64_float16")
TARGETS = {"resnet50_b64_float16": ("ratio", 0.8), "alexnet_b256": ("ratio", 0.8), "lenet_b64": ("img_s", 1e5)}

ALEXNET = """name: "AlexNet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 256 dim: 3 dim: 227 dim: 227 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 96 kernel_size: 11 stride: 4 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 256 pad: 2 kernel_size: 5 group: 2 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "norm2" type: "LRN" bottom: "conv2" top: "norm2" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool2" type: "Pooling" bottom: "norm2" top: "pool2" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv3" type: "Convolution" bottom: "pool2" top: "conv3" convolution_param { num_output: 384 pad: 1 kernel_size: 3 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
layer { name: "conv4" type: "Convolution" bottom: "conv3" top: "conv4" convolution_param { num_output: 384 pad: 1 kernel_size: 3 group: 2 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu4" type: "ReLU" bottom: "conv4" top: "conv4" }
layer { name: "conv5" type: "Convolution" bottom: "conv4" top: "conv5" convolution_param { num_output: 256 pad: 1 kernel_size: 3 group: 2 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu5" type: "ReLU" bottom: "conv5" top: "conv5" }
layer { name: "pool5" type: "Pooling" bottom: "conv5" top: "pool5" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc6" type: "InnerProduct" bottom: "pool5" top: "fc6" inner_product_param { num_output: 4096 weight_filler { type: "gaussian" std: 0.005 } } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7" inner_product_param { num_output: 4096 weight_filler { type: "gaussian" std: 0.005 } } }
layer { name: "relu7" type: "ReLU" bottom: "fc7" top: "fc7" }
layer { name: "drop7" type: "Dropout" bottom: "fc7" top: "fc7" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc8" type: "InnerProduct" bottom: "fc7" top: "fc8" inner_product_param { num_output: 1000 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }
"""


# --- the nets, as NetParameters with data + label Inputs and a SoftmaxWithLoss -------------------------------
def _with_loss(net, batch, fp16):
    """A deploy net at `batch` with a label Input and SoftmaxWithLoss for its final Softmax (net_speed's rule)."""
    import tempfile

    from net_speed import train_net_param
    from google.protobuf import text_format
    net.layer[0].input_param.shape[0].dim[0] = batch
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
        f.write(text_format.MessageToString(net))
    try:
        param, classes = train_net_param(f.name, batch)
    finally:
        os.unlink(f.name)
    if fp16:
        from distcaffe.proto import caffe_pb2
        param.default_forward_type = param.default_backward_type = caffe_pb2.FLOAT16
        param.default_forward_math = param.default_backward_math = caffe_pb2.FLOAT16
    return param, classes


def _resnet50_deploy():
    """examples/imagenet's ResNet-50 train net as a deploy net: an Input for the Data layer, TRAIN layers only,
    a final Softmax in place of the loss (put back by _with_loss), no NVCaffe type defaults."""
    from distcaffe.io import read_net_param
    from distcaffe.proto import caffe_pb2
    net = read_net_param(os.path.join(ROOT, "examples/imagenet/resnet50_fp16_train_val.prototxt"))
    keep = [lp for lp in net.layer if lp.type not in ("Data", "Accuracy")
            and not any(r.phase == caffe_pb2.TEST for r in lp.include)]
    for f in ("default_forward_type", "default_backward_type", "default_forward_math", "default_backward_math"):
        net.ClearField(f)
    del net.layer[:]
    data = net.layer.add(name="data", type="Input", top=["data"])
    data.input_param.shape.add(dim=[1, 3, 224, 224])
    for lp in keep:
        if lp.type == "SoftmaxWithLoss":
            net.layer.add(name="prob", type="Softmax", bottom=[lp.bottom[0]], top=["prob"])
        else:
            net.layer.add().CopyFrom(lp)
    return net


def build_net(name, cpu):
    """(NetParameter, classes, batch) of a benchmark net; the dry run (`cpu`) uses batch 2."""
    from distcaffe.io import parse_net_text, read_net_param
    if name not in NETS:
        raise SystemExit("gpu_bench: unknown net '%s' (known: %s)" % (name, ", ".join(NETS)))
    batch = 2 if cpu else int(name.split("_b")[1].split("_")[0])
    if name.startswith("lenet"):
        net = read_net_param(os.path.join(ROOT, "examples/mnist/lenet.prototxt"))
        net.layer[0].input_param.shape[0].dim[2:] = [28, 28]
    elif name.startswith("alexnet"):
        net = parse_net_text(ALEXNET)
        if cpu:                     # the dry run: 99x99 images (pool5 2x2)
            net.layer[0].input_param.shape[0].dim[2:] = [99, 99]
    else:
        net = _resnet50_deploy()
        if cpu:                     # the dry run: 32x32 images, the last pooling global (7x7 at 224)
            net.layer[0].input_param.shape[0].dim[2:] = [32, 32]
            pool = [lp for lp in net.layer if lp.type == "Pooling"][-1]
            pool.pooling_param.ClearField("kernel_size")
            pool.pooling_param.ClearField("stride")
            pool.pooling_param.global_pooling = True
    param, classes = _with_loss(net, batch, name.endswith("float16"))
    return param, classes, batch


# --- one framework, one net ---------------------------------------------------------------------------------
WARMUP, MIN_ITERS = 2, 3           # the dry run (--cpu) uses 1 and 1


def _timed(step, sync, seconds):
    """(passes, seconds) of `step` after WARMUP passes, for about `seconds` (at least MIN_ITERS passes)."""
    min_iters = MIN_ITERS
    for _ in range(WARMUP):
        step()
    sync()
    n, start = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - start < seconds:
        step()
        n += 1
        if n >= min_iters:
            sync()
    sync()
    return n, time.perf_counter() - start


def speed_distcaffe(name, seconds, cpu):
    import numpy as np

    from distcaffe import backend
    from distcaffe.log import set_quiet
    from distcaffe.net import TRAIN, Net
    set_quiet(True)
    if not cpu:
        backend.set_mode_gpu()
    param, classes, batch = build_net(name, cpu)
    net = Net(param, TRAIN)
    rng = np.random.default_rng(0)
    net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].shape)
    net.blobs["label"].data[...] = rng.integers(0, classes, batch)

    def step():
        net.clear_param_diffs()
        net.forward_backward_device()

    def sync():
        if not cpu:
            backend.cupy().cuda.Device().synchronize()
    n, dt = _timed(step, sync, seconds)
    backend.flush_checks()
    return {"img_s": n * batch / dt, "iters": n, "seconds": dt, "batch": batch}


def speed_pytorch(name, seconds, cpu):
    import numpy as np
    import torch

    from net_speed import torch_model
    device = "cpu" if cpu else "cuda"
    torch.backends.cudnn.benchmark = True
    param, classes, batch = build_net(name, cpu)
    for f in ("default_forward_type", "default_backward_type", "default_forward_math", "default_backward_math"):
        param.ClearField(f)
    model, shapes = torch_model(param)
    model = model.to(device).train()
    rng = np.random.default_rng(0)
    blobs = {"data": torch.from_numpy(rng.standard_normal(shapes["data"]).astype(np.float32)).to(device),
             "label": torch.from_numpy(rng.integers(0, classes, batch)).to(device)}
    amp = name.endswith("float16")

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.float16 if not cpu else torch.bfloat16, enabled=amp):
            loss = model(blobs)
        loss.backward()

    def sync():
        if not cpu:
            torch.cuda.synchronize()
    n, dt = _timed(step, sync, seconds)
    return {"img_s": n * batch / dt, "iters": n, "seconds": dt, "batch": batch, "amp": amp}


# --- allreduce hidden behind backward: 2 MPI ranks on one GPU --------------------------------------------------
def overlap(seconds, cpu, buckets=6):
    """Per-iteration times of backward alone, backward then allreduce, and overlapped; the hidden share."""
    import numpy as np

    from distcaffe import backend
    from distcaffe.engine.buckets import GradientReducer
    from distcaffe.engine.comm_mpi import MPICommunicator
    from distcaffe.log import set_quiet
    from distcaffe.net import TRAIN, Net
    set_quiet(True)
    comm = MPICommunicator()
    if not cpu:
        backend.set_mode_gpu()
    param, classes, _ = build_net("alexnet_b256", cpu)
    batch = 2 if cpu else 32
    param.layer[0].input_param.shape[0].dim[0] = batch
    for lp in param.layer:
        if lp.name == "label":
            lp.input_param.shape[0].dim[0] = batch
    net = Net(param, TRAIN)
    rng = np.random.default_rng(comm.rank)
    net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].shape)
    net.blobs["label"].data[...] = rng.integers(0, classes, batch)
    reducer = GradientReducer(net, comm, buckets)

    def sync():
        if not cpu:
            backend.cupy().cuda.Device().synchronize()

    def run(mode):
        def step():
            net.clear_param_diffs()
            reducer.begin_iteration()
            net.forward_backward_device()
            if mode != "alone":
                reducer.finish(1.0 / comm.size)
        if mode == "serial":
            reducer.detach()                     # no bucket starts during backward: all start after it
        comm.barrier()
        n, dt = _timed(step, sync, seconds)
        if mode == "serial":
            reducer.attach()
        return comm.sum_scalar(dt / n) / comm.size

    times = {mode: run(mode) for mode in ("alone", "serial", "overlapped")}
    comm_s = times["serial"] - times["alone"]
    hidden = (times["serial"] - times["overlapped"]) / comm_s if comm_s > 0 else 0.0
    out = dict(times, allreduce_hidden_fraction=min(1.0, max(0.0, hidden)), ranks=comm.size,
               gradient_mb=sum(p.count for p in net.learnable_params) * 4 / 1e6, buckets=buckets)
    comm.close()
    return out if comm.rank == 0 else None


# --- the report -------------------------------------------------------------------------------------------------
def report(parts, out, tests_rc, dry_run):
    """benchmarks/results/gpu.{json,md} from the parts' JSON files; returns the one-line verdict."""
    def part(name):
        path = os.path.join(parts, name + ".json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    res, rows = {}, []
    for name in NETS:
        d, t = part("distcaffe_" + name), part("pytorch_" + name)
        di, ti = (d or {}).get("img_s"), (t or {}).get("img_s")
        res[name] = {"distcaffe_img_s": di, "torch_img_s": ti, "ratio": di / ti if di and ti else None}
        rows.append("| %s | %s | %s | %s |" % (name, _fmt(di), _fmt(ti), _fmt(res[name]["ratio"], "%.2f")))
    ov = part("overlap") or {}
    res["allreduce_hidden_fraction"] = ov.get("allreduce_hidden_fraction")
    met = []
    for name, (kind, bound) in TARGETS.items():
        value = res[name]["ratio"] if kind == "ratio" else res[name]["distcaffe_img_s"]
        met.append("%s %s %s (target >= %g)" % (name, kind, _fmt(value, "%.3g"), bound) + (
            "" if value is not None and value >= bound else " MISSED"))
    verdict = "gpu-check%s: tests %s; %s; allreduce hidden %s" % (
        " DRY RUN (CPU)" if dry_run else "", "PASS" if tests_rc == 0 else "FAIL (rc %s)" % tests_rc, "; ".join(met),
        _fmt(res["allreduce_hidden_fraction"], "%.2f"))
    res["meta"] = {"tests_rc": tests_rc, "dry_run": dry_run, "verdict": verdict, "overlap": ov,
                   "device": os.environ.get("GPU_CHECK_DEVICE", ""), "date_utc": time.strftime("%Y-%m-%d %H:%M")}
    with open(out + ".json", "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
    with open(out + ".md", "w") as f:
        f.write("# GPU check (%s)\n\n%s\n\n`benchmarks/gpu_check.sh%s`, forward+backward, each framework in its own "
                "process, PyTorch + cuDNN (AMP for FLOAT16) on the same device.\n\n"
                "| net | distcaffe img/s | PyTorch img/s | ratio |\n|---|---|---|---|\n%s\n\n"
                "Allreduce hidden behind backward (2 MPI ranks on one GPU, host-staged): %s\n"
                % (res["meta"]["device"] or "device", verdict, " --dry-run" if dry_run else "", "\n".join(rows),
                   _fmt(res["allreduce_hidden_fraction"], "%.2f")))
    return verdict


def _fmt(v, fmt="%.0f"):
    return "n/a" if v is None else fmt % v


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=("speed", "overlap", "report"))
    ap.add_argument("--framework", choices=("distcaffe", "pytorch"))
    ap.add_argument("--net")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--json")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU at batch 2 (the dry run)")
    ap.add_argument("--dir")
    ap.add_argument("--out")
    ap.add_argument("--tests-rc", type=int, default=None)
    args = ap.parse_args(argv)
    if args.cpu:
        global WARMUP, MIN_ITERS
        WARMUP, MIN_ITERS = 1, 1
    if args.what == "report":
        print(report(args.dir, args.out, args.tests_rc, args.cpu))
        return 0
    if args.what == "speed":
        if not args.framework or not args.net:
            ap.error("speed needs --framework and --net")
        fn = speed_distcaffe if args.framework == "distcaffe" else speed_pytorch
        result = fn(args.net, args.seconds, args.cpu)
    else:
        result = overlap(args.seconds, args.cpu)
    if result is not None:
        print(json.dumps(result))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
