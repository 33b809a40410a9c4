"""The distributed side of `distcaffe train`: decides how ranks start (already started by mpirun/srun, local
processes to spawn, Ray actors) and runs this process's rank through engine.worker.

cmd_train calls `wanted(args)` and, when true, `run(args, argv)`; `DIST_FLAGS` are the extra flags.
"""
import sys

from distcaffe import backend
from distcaffe.errors import CaffeError
from distcaffe.log import get_logger

from distcaffe.launcher import env as E
from distcaffe.launcher import flags as F

log = get_logger("launcher")

DIST_FLAGS = [
    F.Flag("batch_semantics", str, "bvlc", "bvlc: global batch = prototxt batch x ranks; nvcaffe: the prototxt "
                                           "batch is divided among the GPUs of a node"),
    F.Flag("reduce_buckets", int, 0, "gradient buckets (0: the net's NetParameter.reduce_buckets)"),
    F.Flag("comm", str, "auto", "communicator: auto, mpi, nccl or single"),
    F.Flag("ray", str, "", "run on Ray: 'auto' (running cluster, else a local one) or a cluster ADDRESS"),
    F.Flag("cpu_workers", int, 0, "number of CPU ranks (local processes, or Ray actors with -ray)",
           aliases=("cpu-workers",)),
    F.Flag("placement", str, "PACK", "Ray placement group strategy: PACK or SPREAD"),
]


def _devices(options, solver_param=None):
    """Device ids this node offers the job: -gpu, else `solver_mode: GPU` as `-gpu all` when GPUs exist."""
    if options.gpu:
        return E.parse_gpu_flag(options.gpu, backend.gpu_count())
    if solver_param is not None and solver_param.HasField("solver_mode") and solver_param.solver_mode == 1:
        if backend.gpu_available():
            return list(range(backend.gpu_count()))
        log.warning("solver_mode is GPU but no CUDA device is visible: training on CPU")
    return []


def wanted(args, environ=None):
    """True when this `train` is more than one process: under an MPI/srun launcher with several ranks,
    `--ray`, `--cpu-workers N` > 1, or `-gpu` naming several devices (`all` on a multi-GPU node)."""
    from distcaffe.engine.worker import TrainOptions
    options = TrainOptions.from_any(args)
    if options.ray or options.cpu_workers > 1 or E.detect(environ).size > 1:
        return True
    return bool(options.gpu) and len(E.parse_gpu_flag(options.gpu, backend.gpu_count())) > 1


def run(args, argv, entry=("-m", "distcaffe.launcher.cli", "train")):
    """Train as the rank this process is, or start the ranks (spawn / Ray); returns the exit code."""
    from distcaffe.engine.worker import TrainOptions, train_distributed
    from distcaffe.solvers import load_solver_param
    options = TrainOptions.from_any(args)
    solver = args.get("solver")
    if not solver:
        raise CaffeError("train: need a solver definition to train (-solver solver.prototxt)")
    if args.get("snapshot") and args.get("weights"):
        raise CaffeError("train: give a snapshot to resume training or weights to finetune, but not both")
    if options.ray:
        from distcaffe.launcher.ray_launch import launch
        return launch(solver, options)
    placement = E.detect()
    devices = _devices(options, load_solver_param(solver)[0])
    if placement.size == 1:
        n = len(devices) if devices else options.cpu_workers
        if n > 1:
            from distcaffe.launcher.spawn import spawn
            return spawn(n, argv, entry)
    device = E.device_for_rank(devices, placement)
    log.info("Rank %d of %d (%s%s): %s", placement.rank, placement.size, placement.launcher,
             ", %s job %s" % (placement.scheduler, placement.job_id) if placement.scheduler else "",
             "GPU %d" % device if device is not None else "CPU")
    return train_distributed(solver, options, device=device, world_size=placement.size)


def main(argv=None):
    """`python -m distcaffe.launcher.distributed -solver S ...`: the distributed train path without cmd_train."""
    from distcaffe.launcher.cmd_train import TRAIN_FLAGS
    argv = sys.argv[1:] if argv is None else list(argv)
    args = F.parse("train", argv, TRAIN_FLAGS + DIST_FLAGS)
    if args is None:
        return 0
    from distcaffe.launcher.resume import apply_to_args
    apply_to_args(args)
    return run(args, argv, entry=("-m", "distcaffe.launcher.distributed"))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CaffeError as e:
        print("distcaffe: error: %s" % e, file=sys.stderr)
        sys.exit(2)
