"""`distcaffe train`: Caffe's `caffe train` — solver file, fine-tuning weights or a snapshot to resume, device
choice, the SIGINT/SIGHUP/SIGTERM actions; several ranks (mpirun/srun, -gpu all, --ray) go to launcher.distributed."""
from distcaffe import backend
from distcaffe.errors import CaffeError
from distcaffe.log import get_logger

from distcaffe.launcher import distributed
from distcaffe.launcher import flags as F
from distcaffe.launcher import resume

log = get_logger("caffe")

TRAIN_FLAGS = [
    F.Flag("solver", str, "", "the solver definition protocol buffer text file"),
    F.WEIGHTS,
    F.Flag("snapshot", str, "", "a .solverstate snapshot to resume training from; 'auto': the newest one of the "
                                "solver's snapshot_prefix (none yet: start from scratch)"),
    F.GPU, F.LEVEL, F.STAGE,
    F.Flag("sigint_effect", str, "stop", "action on SIGINT: snapshot, stop or none"),
    F.Flag("sighup_effect", str, "snapshot", "action on SIGHUP: snapshot, stop or none"),
    F.Flag("share_blobs", bool, True, "intermediate blobs' diffs, and data no backward reads, share memory (the "
                                      "same numbers; off under -lms)"),
] + F.LMS_FLAGS + distributed.DIST_FLAGS


def _select_device(param, gpus):
    """Caffe's rule: -gpu wins; else an explicit `solver_mode: GPU` uses device_id (CPU with a warning when no
    GPU is present, so a Caffe solver file runs unchanged on a CPU machine)."""
    from distcaffe.proto import caffe_pb2
    if not gpus and param.HasField("solver_mode") and param.solver_mode == caffe_pb2.SolverParameter.GPU:
        if backend.gpu_available():
            gpus = [param.device_id]
        else:
            log.warning("solver_mode is GPU but no CUDA device is visible: training on CPU")
    if len(gpus) > 1:
        raise CaffeError("train: -gpu %s names %d devices; one process trains on one device (start one rank per GPU "
                         "with mpirun/srun, or use the distributed launcher)" % (",".join(map(str, gpus)), len(gpus)))
    F.use_device("train", gpus)
    log.info("Using %s", "GPU %d" % gpus[0] if gpus else "CPU")


def train(argv):
    from distcaffe import solvers
    from distcaffe.solvers.signals import SignalHandler

    args = F.parse("train", argv, TRAIN_FLAGS)
    if args is None:
        return 0
    resume.apply_to_args(args)
    F.use_lms("train", args)
    if distributed.wanted(args):
        return distributed.run(args, argv)
    if not args["solver"]:
        raise CaffeError("train: need a solver definition to train (-solver solver.prototxt)")
    handler = SignalHandler(args["sigint_effect"], args["sighup_effect"])
    param, base_dir = solvers.load_solver_param(args["solver"])
    param.train_state.level = args["level"]
    param.train_state.stage.extend(F.stages(args["stage"]))
    _select_device(param, F.parse_gpus("train", args["gpu"]))
    solver = solvers.solver_class(param, "solver %s" % args["solver"])(param, base_dir=base_dir, name=args["solver"])
    solver.action_request_function = handler.requested_action
    solver.net.share_diffs = solver.net.share_data = args["share_blobs"]
    if args["weights"]:
        solver.copy_weights(args["weights"])
    log.info("Starting Optimization")
    with handler:
        solver.solve(resume_file=args["snapshot"] or None)
    from distcaffe.lms import report
    report(solver.net)
    return 0
