"""Entry point of the `distcaffe` command: dispatches `distcaffe <command> ...` like Caffe's tool.

Each command lives in its own module and is imported only when used, so `distcaffe upgrade_net_proto_text`
never pays for MPI or Ray. Any CaffeError becomes one line on stderr and exit code 2.
"""
import difflib
import importlib
import sys
import traceback

from distcaffe.errors import CaffeError

# command name -> (module, function, one-line help). The function takes argv (list of str), returns an int.
COMMANDS = {
    "train": ("distcaffe.launcher.cmd_train", "train", "train or fine-tune a model (one process, MPI ranks, or Ray actors)"),
    "test": ("distcaffe.launcher.cmd_caffe", "test", "score a model over -iterations batches"),
    "time": ("distcaffe.launcher.cmd_caffe", "time", "benchmark per-layer forward/backward time"),
    "device_query": ("distcaffe.launcher.cmd_caffe", "device_query", "show the devices this process can use"),
    "upgrade_net_proto_text": ("distcaffe.launcher.cmd_upgrade", "upgrade_net_proto_text", "upgrade a V0/V1 net prototxt"),
    "upgrade_net_proto_binary": ("distcaffe.launcher.cmd_upgrade", "upgrade_net_proto_binary", "upgrade a V0/V1 binary net"),
    "upgrade_solver_proto_text": ("distcaffe.launcher.cmd_upgrade", "upgrade_solver_proto_text", "upgrade a solver prototxt"),
    "convert_imageset": ("distcaffe.launcher.cmd_data", "convert_imageset", "convert a list of images to an LMDB of Datums"),
    "convert_annoset": ("distcaffe.launcher.cmd_data", "convert_annoset",
                        "convert images + VOC/COCO/txt boxes to an LMDB of AnnotatedDatum"),
    "convert_mnist_data": ("distcaffe.launcher.cmd_data", "convert_mnist_data", "convert MNIST IDX files to an LMDB"),
    "compute_image_mean": ("distcaffe.launcher.cmd_data", "compute_image_mean", "mean image of an LMDB as binaryproto"),
    "data": ("distcaffe.launcher.cmd_data", "data", "demo data sets: `distcaffe data mnist-sample OUTDIR`"),
    "scripts": ("distcaffe.launcher.cmd_scripts", "scripts", "job scripts: `distcaffe scripts slurm|pbs|torque [DIR]`"),
    "examples": ("distcaffe.launcher.cmd_scripts", "examples", "copy the example nets/solvers: `distcaffe examples DIR`"),
    "plot": ("distcaffe.launcher.cmd_plot", "plot", "plot loss/accuracy/lr from a training log to a PNG"),
}


def usage():
    lines = ["usage: distcaffe <command> [flags]   (`distcaffe <command> -help` lists a command's flags)", "",
             "commands:"]
    lines += ["  %-26s %s" % (name, spec[2]) for name, spec in COMMANDS.items()]
    return "\n".join(lines)


def _rank_in(environ):
    """The rank a launcher's environment gives a process, or None (not a launched rank)."""
    from distcaffe.launcher.env import detect
    try:
        placement = detect(environ)
    except CaffeError:
        return None
    return placement.rank if placement.is_mpi else None


def _launched_world():
    """Under mpirun/mpiexec/srun with several ranks: MPI up before anything that can fail, numpy included
    (engine.startup); None otherwise."""
    from distcaffe.launcher.env import detect
    placement = detect()
    if not placement.is_mpi or placement.size < 2:
        return None
    from distcaffe.engine.startup import LaunchedWorld
    world = LaunchedWorld(placement.rank, placement.size, placement.local_size, rank_of=_rank_in).start()
    mpi_size = world.MPI.COMM_WORLD.Get_size()
    if mpi_size != placement.size:   # N one-rank worlds would each train alone and overwrite each other's snapshots
        print("distcaffe: error: rank %d: the %s environment says %d ranks but the MPI world has %d: the MPI that "
              "mpi4py uses did not start this job (srun --mpi= must name a PMI this MPI speaks, see srun --mpi=list; "
              "the pip 'mpich' of the mpi extra cannot join a site mpirun/srun job: build mpi4py against the site MPI)"
              % (placement.rank, placement.launcher, placement.size, mpi_size), file=sys.stderr)
        sys.exit(2)
    return world


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "-help", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-version", "--version"):
        import distcaffe
        print("distcaffe %s" % distcaffe.__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        guess = difflib.get_close_matches(name, COMMANDS, n=1, cutoff=0.6)
        print("distcaffe: error: unknown command '%s'%s\n%s" % (
            name, "; did you mean '%s'?" % guess[0] if guess else "", usage()), file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    world, started = None, False
    try:
        world = _launched_world() if name == "train" else None
        from distcaffe.launcher.threads import size_thread_pools
        threads = size_thread_pools()  # before any BLAS call: ranks sharing a node (or a busy one) must not oversubscribe
        if threads and name == "train":
            from distcaffe.log import get_logger
            get_logger("launcher").info(threads)
        command = getattr(importlib.import_module(module), func)
        started = True
        code = int(command(rest) or 0)
    except CaffeError as e:
        if world is not None:
            world.fail("%s (exit code 2)" % e, 2)
        print("distcaffe: error: %s" % e, file=sys.stderr)
        return 2
    except Exception as e:
        if world is None:
            raise
        traceback.print_exc()   # this rank's own traceback, into its stderr / log, before the one-line summary
        world.fail("%s%s: %s (exit code 1)" % ("" if started else "cannot start: ", type(e).__name__, e), 1)
    except KeyboardInterrupt:
        print("distcaffe: interrupted", file=sys.stderr)
        return 130
    if world is not None and code:
        world.fail("train ended with exit status %d" % code, code)
    return code


if __name__ == "__main__":
    sys.exit(main())
