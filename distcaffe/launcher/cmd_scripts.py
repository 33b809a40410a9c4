"""`distcaffe scripts KIND [DIR]` and `distcaffe examples [DIR]`: the job scripts (SLURM, PBS Pro/OpenPBS,
Torque) and the example nets/solvers that ship with distcaffe — in the wheel under distcaffe/scripts and
distcaffe/examples, in a checkout at its top level. Without DIR the paths are printed; with DIR the files are
copied there (never over an existing file unless -force). `distcaffe scripts lib` prints the path of the
shell library the job scripts source (distcaffe-job.sh)."""
import os
import shutil

from distcaffe.errors import CaffeError
from distcaffe.launcher import flags as F

KINDS = {"slurm": "SLURM sbatch scripts", "pbs": "PBS Pro / OpenPBS qsub scripts",
         "torque": "Torque qsub scripts (-l nodes=N:ppn=P:gpus=G)"}
FORCE = F.Flag("force", bool, False, "overwrite files that already exist in DIR")


def shipped(name):
    """Directory of the shipped `name` (scripts, examples): inside the installed package, else the checkout."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for path in (os.path.join(package, name), os.path.join(os.path.dirname(package), name)):
        if os.path.isdir(path):
            return path
    raise CaffeError("the shipped %s are missing from this installation (looked in %s); reinstall distcaffe"
                     % (name, package))


def _files(top):
    return sorted(os.path.relpath(os.path.join(d, f), top) for d, dirs, fs in os.walk(top)
                  for f in fs if "__pycache__" not in d and "/data" not in d[len(top):] and not f.endswith(
                      (".caffemodel", ".solverstate", ".log", ".png", ".csv", ".jsonl")))


def _copy(top, names, dest, force):
    """Copy `names` (relative to top) under dest; one line per file written."""
    clash = [n for n in names if os.path.exists(os.path.join(dest, n))]
    if clash and not force:
        raise CaffeError("%s already exists (use -force to overwrite)" % os.path.join(dest, clash[0]))
    for name in names:
        target = os.path.join(dest, name)
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        shutil.copy2(os.path.join(top, name), target)
        print(target)


def scripts(argv):
    about = "kinds: " + "; ".join("%s (%s)" % kv for kv in KINDS.items()) + "; lib (the shared shell library)"
    a = F.parse("scripts", argv, [FORCE], positional=("kind",), optional=("dir",), about=about)
    if a is None:
        return 0
    top = shipped("scripts")
    if a["kind"] == "lib":
        print(os.path.join(top, "distcaffe-job.sh"))
        return 0
    if a["kind"] not in KINDS:
        raise CaffeError("scripts: unknown kind '%s' (known: %s, lib)" % (a["kind"], ", ".join(KINDS)))
    names = [n for n in _files(top) if n.startswith(a["kind"] + os.sep)]
    if a["dir"] is None:
        print("\n".join(os.path.join(top, n) for n in names))
        return 0
    _copy(os.path.join(top, a["kind"]), [os.path.relpath(n, a["kind"]) for n in names], a["dir"], a["force"])
    return 0


def examples(argv):
    a = F.parse("examples", argv, [FORCE], optional=("dir",),
                about="Copy the example nets and solvers (MNIST, CIFAR-10, fine-tuning, ResNet-50) into "
                      "DIR/examples, so the README's commands run from DIR; without DIR, print where they are.")
    if a is None:
        return 0
    top = shipped("examples")
    if a["dir"] is None:
        print(top)
        return 0
    _copy(top, _files(top), os.path.join(a["dir"], "examples"), a["force"])
    return 0
