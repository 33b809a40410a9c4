"""`distcaffe test`, `time` and `device_query`: Caffe's scoring, per-layer benchmark and device listing, with
Caffe's log wording (tools/caffe.cpp)."""
import time as _time

from distcaffe import backend
from distcaffe.errors import CaffeError
from distcaffe.log import get_logger

from distcaffe.launcher import flags as F

log = get_logger("caffe")

TEST_FLAGS = [F.MODEL, F.WEIGHTS, F.ITERATIONS, F.GPU, F.PHASE, F.LEVEL, F.STAGE] + F.LMS_FLAGS
TIME_FLAGS = [F.MODEL, F.ITERATIONS, F.GPU, F.PHASE, F.LEVEL, F.STAGE] + F.LMS_FLAGS
DEVICE_FLAGS = [F.GPU]


def _net(command, args, default_phase):
    from distcaffe.net import Net
    if not args["model"]:
        raise CaffeError("%s: need a model definition (-model net.prototxt)" % command)
    F.use_device(command, F.parse_gpus(command, args["gpu"])[:1])
    F.use_lms(command, args)
    return Net(args["model"], phase=F.phase(command, args["phase"], default_phase), level=args["level"],
               stages=F.stages(args["stage"]))


def test(argv):
    """Score a model: forward -iterations batches, log each batch's outputs and their means."""
    from distcaffe.net import TEST
    args = F.parse("test", argv, TEST_FLAGS)
    if args is None:
        return 0
    if not args["weights"]:
        raise CaffeError("test: need model weights to score (-weights model.caffemodel)")
    net = _net("test", args, TEST)
    for path in args["weights"].split(","):
        net.copy_from(path)
    iterations = args["iterations"]
    if iterations < 1:
        raise CaffeError("test: -iterations must be >= 1 (got %d)" % iterations)
    log.info("Running for %d iterations.", iterations)
    scores, names, loss = [], [], 0.0
    for i in range(iterations):
        loss += net.forward_prefilled()
        idx = 0
        for name in net.outputs:
            for v in backend.to_host(net.blobs[name].dev_data).ravel():
                if i == 0:
                    scores.append(0.0)
                    names.append(name)
                scores[idx] += float(v)
                idx += 1
                log.info("Batch %d, %s = %g", i, name, v)
    log.info("Loss: %g", loss / iterations)
    for name, total in zip(names, scores):
        mean = total / iterations
        weight = net.blob_loss_weights_by_name.get(name, 0.0)
        log.info("%s = %g%s", name, mean, " (* %g = %g loss)" % (weight, weight * mean) if weight else "")
    from distcaffe.lms import report
    report(net)
    return 0


def _sync():
    if backend.is_gpu():
        backend.cupy().cuda.Device().synchronize()


def _ms(start):
    _sync()
    return (_time.perf_counter() - start) * 1000.0


def time(argv):
    """Benchmark: average forward and backward time per layer over -iterations passes (Caffe's `caffe time`)."""
    from distcaffe.net import TRAIN
    args = F.parse("time", argv, TIME_FLAGS)
    if args is None:
        return 0
    net = _net("time", args, TRAIN)
    iterations = args["iterations"]
    if iterations < 1:
        raise CaffeError("time: -iterations must be >= 1 (got %d)" % iterations)
    n = len(net.layers)
    log.info("Performing Forward")
    log.info("Initial loss: %g", net.forward_prefilled())
    log.info("Performing Backward")
    net.backward_from_to(n - 1, 0)
    forward, backward = [0.0] * n, [0.0] * n
    log.info("*** Benchmark begins ***")
    log.info("Testing for %d iterations.", iterations)
    total = _time.perf_counter()
    fwd_total = bwd_total = 0.0
    for j in range(iterations):
        it = _time.perf_counter()
        t = _time.perf_counter()
        for i in range(n):
            lt = _time.perf_counter()
            net.forward_from_to(i, i)
            forward[i] += _ms(lt)
        fwd_total += _ms(t)
        t = _time.perf_counter()
        for i in range(n - 1, -1, -1):
            lt = _time.perf_counter()
            net.backward_from_to(i, i)
            backward[i] += _ms(lt)
        bwd_total += _ms(t)
        log.info("Iteration: %d forward-backward time: %g ms.", j + 1, _ms(it))
    total_ms = _ms(total)
    log.info("Average time per layer: ")
    for i, name in enumerate(net._layer_names):
        log.info("%10s\tforward: %g ms.", name, forward[i] / iterations)
        log.info("%10s\tbackward: %g ms.", name, backward[i] / iterations)
    log.info("Average Forward pass: %g ms.", fwd_total / iterations)
    log.info("Average Backward pass: %g ms.", bwd_total / iterations)
    log.info("Average Forward-Backward: %g ms.", total_ms / iterations)
    log.info("Total Time: %g ms.", total_ms)
    log.info("*** Benchmark ends ***")
    from distcaffe.lms import report
    report(net)
    return 0


def device_query(argv):
    """Caffe's device_query: properties of the -gpu device(s) (all visible ones when unset)."""
    args = F.parse("device_query", argv, DEVICE_FLAGS)
    if args is None:
        return 0
    if not backend.gpu_available():
        raise CaffeError("device_query: no CUDA device is visible (cupy missing or no GPU); distcaffe runs on CPU "
                         "here")
    ids = F.parse_gpus("device_query", args["gpu"]) or list(range(backend.gpu_count()))
    runtime = backend.cupy().cuda.runtime
    for d in ids:
        if d >= backend.gpu_count():
            raise CaffeError("device_query: -gpu %d, but only %d device(s) are visible" % (d, backend.gpu_count()))
        p = runtime.getDeviceProperties(d)
        name = p["name"].decode() if isinstance(p["name"], bytes) else p["name"]
        log.info("Querying GPUs %d", d)
        for label, value in (("Device id", d), ("Major revision number", p["major"]),
                             ("Minor revision number", p["minor"]), ("Name", name),
                             ("Total global memory", p["totalGlobalMem"]),
                             ("Total shared memory per block", p["sharedMemPerBlock"]),
                             ("Total registers per block", p["regsPerBlock"]), ("Warp size", p["warpSize"]),
                             ("Maximum threads per block", p["maxThreadsPerBlock"]),
                             ("Clock rate", p["clockRate"]), ("Total constant memory", p["totalConstMem"]),
                             ("Number of multiprocessors", p["multiProcessorCount"])):
            log.info("%s: %s", label, value)
    return 0
