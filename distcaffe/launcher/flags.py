"""Caffe-style (gflags) command-line flags shared by the commands: `-flag value`, `-flag=value`, `--flag`,
booleans as `-flag`, `-noflag`, `-flag=false`. Unknown flags and stray arguments are one-line errors."""
from distcaffe.errors import CaffeError

_TRUE, _FALSE = ("1", "true", "yes", "y", "t"), ("0", "false", "no", "n", "f")


class Flag:
    """One flag: name, type (str, int, float or bool), default and a help line."""

    def __init__(self, name, kind=str, default=None, help=""):
        self.name, self.kind, self.default, self.help = name, kind, default, help

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


def usage(command, flags):
    return "usage: distcaffe %s [flags]\n" % command + "\n".join(
        "  -%-16s %s (default: %r)" % (f.name, f.help, f.default) for f in flags)


def parse(command, argv, flags):
    """dict name -> value for `argv`, or None when -help was asked (the usage is printed)."""
    by_name = {f.name: f for f in flags}
    values = {f.name: f.default for f in flags}
    i = 0
    argv = list(argv)
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            raise CaffeError("%s: unexpected argument '%s' (flags look like -name value or -name=value)"
                             % (command, arg))
        body = arg.lstrip("-")
        name, eq, text = body.partition("=")
        if name in ("h", "help", "helpfull"):
            print(usage(command, flags))
            return None
        flag = by_name.get(name)
        if flag is None and name.startswith("no") and by_name.get(name[2:]) is not None \
                and by_name[name[2:]].kind is bool and not eq:
            values[name[2:]] = False
            continue
        if flag is None:
            raise CaffeError("%s: unknown flag '-%s' (known flags: %s)"
                             % (command, name, ", ".join("-" + f.name for f in flags)))
        if eq:
            values[name] = flag.convert(command, text)
        elif flag.kind is bool:
            values[name] = True
        else:
            if i >= len(argv):
                raise CaffeError("%s: flag -%s needs a value" % (command, name))
            values[name] = flag.convert(command, argv[i])
            i += 1
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
