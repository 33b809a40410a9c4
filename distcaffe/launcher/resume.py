"""`-snapshot auto`: resume from the newest `.solverstate` (or `.solverstate.h5`) written with the solver's
snapshot_prefix, or start from scratch when there is none — what a resubmitted batch job wants."""
import glob
import os
import re

from distcaffe.log import get_logger

log = get_logger("caffe")
_ITER = re.compile(r"_iter_(\d+)\.solverstate(\.h5)?$")


def latest_state(prefix):
    """The snapshot with the highest iteration for `prefix` (Caffe's `<prefix>_iter_<N>.solverstate[.h5]`),
    or None."""
    found = [(int(m.group(1)), path) for path in glob.glob(glob.escape(prefix) + "_iter_*.solverstate*")
             if (m := _ITER.search(path))]
    return max(found)[1] if found else None


def resolve_snapshot(value, solver):
    """The -snapshot value to use: `auto` -> the newest state of `solver`'s prefix (None when none yet)."""
    if value != "auto":
        return value or None
    from distcaffe.solvers import load_solver_param
    prefix = load_solver_param(solver)[0].snapshot_prefix
    state = latest_state(prefix)
    if state:
        log.info("-snapshot auto: resuming from %s", state)
    else:
        log.info("-snapshot auto: no %s_iter_*.solverstate yet (resolved: %s); starting from scratch", prefix,
                 os.path.abspath(prefix))
    return state


def apply_to_args(args):
    """Resolve `-snapshot auto` in parsed train flags, in place; with -weights too, a found state wins (a
    resubmitted fine-tuning job resumes) and none means fine-tuning from the weights."""
    if args.get("snapshot") and args.get("weights") and args["snapshot"] != "auto":
        from distcaffe.errors import CaffeError
        raise CaffeError("train: give a snapshot to resume training or weights to finetune, but not both")
    if args.get("snapshot") and args.get("solver"):
        args["snapshot"] = resolve_snapshot(args["snapshot"], args["solver"]) or ""
        if args["snapshot"] and args.get("weights"):
            log.info("-snapshot auto: resuming, so -weights %s is not loaded", args["weights"])
            args["weights"] = ""
    return args
