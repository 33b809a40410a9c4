"""The one flag parser of every `distcaffe` command, with gflags' rules (Caffe's tools): `-flag value`,
`-flag=value`, `--flag` alike; booleans as `-flag`, `-noflag`, `-flag=false`; exact names only (no prefix
matching: `-shuf` is an error, with "did you mean -shuffle?"); `--` ends the flags; positional arguments may
sit between flags. `-help` prints the one usage format. Every mistake is one CaffeError line."""
import difflib

from distcaffe.errors import CaffeError

_TRUE, _FALSE = ("1", "true", "yes", "y", "t"), ("0", "false", "no", "n", "f")


class Flag:
    """One flag: name, type (str, int, float or bool), default, a help line and old spellings still accepted."""

    def __init__(self, name, kind=str, default=None, help="", aliases=()):
        self.name, self.kind, self.default, self.help, self.aliases = name, kind, default, help, tuple(aliases)

    def convert(self, command, text):
        if self.kind is bool:
            low = text.lower()
            if low in _TRUE or low in _FALSE:
                return low in _TRUE
            raise CaffeError("%s: -%s expects true or false, got '%s'" % (command, self.name, text))
        try:
            return self.kind(text)
        except ValueError:
            raise CaffeError("%s: -%s expects %s, got '%s'" % (command, self.name, self.kind.__name__, text)) from None


# Flags that mean the same in every command (Caffe's tools/caffe.cpp definitions).
GPU = Flag("gpu", str, "", "GPU device id(s) to use: '0', '0,1' or 'all'; CPU when unset")
MODEL = Flag("model", str, "", "the model definition protocol buffer text file")
WEIGHTS = Flag("weights", str, "", "pretrained weights (.caffemodel), comma-separated to load several")
ITERATIONS = Flag("iterations", int, 50, "the number of iterations to run")
PHASE = Flag("phase", str, "", "network phase (TRAIN or TEST); used by `time` and `test`")
LEVEL = Flag("level", int, 0, "network level")
STAGE = Flag("stage", str, "", "network stages, comma-separated")
# IBM Caffe's Large Model Support, plus distcaffe's budget and prefetch switches
LMS_FLAGS = [
    Flag("lms", int, 0, "Large Model Support: arrays over this many KB live on the host and are copied to the "
                        "device when a layer needs them (<= 0: off)"),
    Flag("lms_frac", float, 0.0, "LMS engages only when the net is expected to take more than this fraction of "
                                 "the device budget (0-1)"),
    Flag("lms_budget", int, 0, "LMS device budget in MiB (0: the device's free memory; required on CPU)"),
    Flag("lms_prefetch", bool, True, "LMS: copy in what the next layers need while this one computes"),
]


def usage(command, flags, positional=(), optional=(), about=""):
    """The usage text of a command: synopsis, what it does, then each flag with its type and default."""
    args = "".join(" %s" % p.upper() for p in positional) + "".join(" [%s]" % p.upper() for p in optional)
    lines = ["usage: distcaffe %s [flags]%s" % (command, args)]
    if about:
        lines += ["", about]
    if flags:
        lines += ["", "flags:"]
    for f in flags:
        kind = "bool" if f.kind is bool else f.kind.__name__
        lines.append("  -%-18s %s (%s, default: %s)" % (f.name, f.help, kind, "''" if f.default == "" else f.default))
    return "\n".join(lines)


def _unknown(command, name, by_name):
    guess = difflib.get_close_matches(name, sorted(by_name), n=1, cutoff=0.6)
    hint = "did you mean -%s?" % by_name[guess[0]].name if guess else "known flags: %s" % ", ".join(
        "-" + f for f in sorted({f.name for f in by_name.values()}))
    return CaffeError("%s: unknown flag '-%s'; %s (`distcaffe %s -help` lists them)" % (command, name, hint, command))


def parse(command, argv, flags, positional=(), optional=(), about=""):
    """dict name -> value of every flag and positional argument in `argv`, or None when -help was asked (the
    usage is printed). `positional` names the required arguments, `optional` those that may follow them."""
    by_name = {}
    for f in flags:
        by_name.update({n: f for n in (f.name,) + f.aliases})
    values = {f.name: f.default for f in flags}
    args, argv, i = [], list(argv), 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            args += argv[i:]
            break
        if not arg.startswith("-") or arg == "-":
            args.append(arg)
            continue
        name, eq, text = arg[2 if arg.startswith("--") else 1:].partition("=")
        if name in ("h", "help", "helpfull", "helpshort"):
            print(usage(command, flags, positional, optional, about))
            return None
        flag = by_name.get(name)
        if flag is None and name.startswith("no") and name[2:] in by_name and not eq:
            if by_name[name[2:]].kind is not bool:
                raise CaffeError("%s: -%s: -%s is not a boolean flag" % (command, name, name[2:]))
            values[by_name[name[2:]].name] = False
            continue
        if flag is None:
            raise _unknown(command, name, by_name)
        if eq:
            values[flag.name] = flag.convert(command, text)
        elif flag.kind is bool:
            values[flag.name] = True
        else:
            if i >= len(argv):
                raise CaffeError("%s: flag -%s needs a value" % (command, name))
            values[flag.name] = flag.convert(command, argv[i])
            i += 1
    if len(args) < len(positional) or len(args) > len(positional) + len(optional):
        want = " ".join(p.upper() for p in positional) + "".join(" [%s]" % p.upper() for p in optional)
        got = "unexpected argument '%s'" % args[len(positional) + len(optional)] if len(args) > len(
            positional) + len(optional) else "missing %s" % " ".join(p.upper() for p in positional[len(args):])
        raise CaffeError("%s: %s (usage: distcaffe %s [flags]%s; flags look like -name value or -name=value)"
                         % (command, got, command, " " + want if want else ""))
    values.update(zip(tuple(positional) + tuple(optional), args))
    for name in optional[max(0, len(args) - len(positional)):]:
        values.setdefault(name, None)
    return values


def stages(value):
    return [s for s in value.split(",") if s] if value else []


def parse_gpus(command, value):
    """Device ids from a -gpu value: '' -> [], '0,1' -> [0, 1], 'all' -> every visible device."""
    from distcaffe import backend
    if not value:
        return []
    if value == "all":
        n = backend.gpu_count()
        if not n:
            raise CaffeError("%s: -gpu all, but no CUDA device is visible (is cupy installed, is a GPU present?)"
                             % command)
        return list(range(n))
    try:
        ids = [int(v) for v in value.split(",") if v != ""]
    except ValueError:
        raise CaffeError("%s: -gpu expects device ids like 0 or 0,1 or 'all', got '%s'" % (command, value)) from None
    if not ids or any(d < 0 for d in ids):
        raise CaffeError("%s: -gpu expects device ids like 0 or 0,1 or 'all', got '%s'" % (command, value))
    return ids


def use_device(command, gpus):
    """Select the device for a single-process command: GPU gpus[0] (a clear error without one), else CPU."""
    from distcaffe import backend
    if not gpus:
        backend.set_mode_cpu()
        return
    if not backend.gpu_available():
        raise CaffeError("%s: -gpu %s asked for, but no CUDA device is visible (run without -gpu for CPU)"
                         % (command, ",".join(map(str, gpus))))
    if gpus[0] >= backend.gpu_count():
        raise CaffeError("%s: -gpu %d, but only %d device(s) are visible" % (command, gpus[0], backend.gpu_count()))
    backend.set_device(gpus[0])
    backend.set_mode_gpu()


def phase(command, value, default):
    from distcaffe.net import TEST, TRAIN
    if not value:
        return default
    if value.upper() not in ("TRAIN", "TEST"):
        raise CaffeError("%s: -phase must be TRAIN or TEST, got '%s'" % (command, value))
    return TRAIN if value.upper() == "TRAIN" else TEST


def use_lms(command, args):
    """Apply the -lms flags process-wide, before any net is built."""
    from distcaffe import lms
    if args["lms_budget"] < 0:
        raise CaffeError("%s: -lms_budget must be >= 0 MiB, got %d" % (command, args["lms_budget"]))
    try:
        lms.set_lms(args["lms"], frac=args["lms_frac"], budget=args["lms_budget"] * 2 ** 20 or None,
                    prefetch=args["lms_prefetch"])
    except CaffeError as e:
        raise CaffeError("%s: %s" % (command, e)) from None
