"""One worker of the prototxt fuzzer (tests/test_fuzz_prototxt.py): reads `ZOO_FILE SEED` lines on stdin, builds
the seeded mutation of that zoo net, runs it through the entry points (parse, Net in TRAIN and TEST phase, a
forward pass when the net is small) and prints one JSON outcome line per case. Three cases in four mutate the
net with its data layers pointed at tiny generated data of their kind (tests/_zoo_data.py, made once per worker
under $FUZZ_DATA_DIR), so that mutations reach the set-up of every layer and the forward pass instead of
stopping at an absent LMDB; the fourth mutates the zoo file's own text (comments, legacy formats). Its address
space is capped (RLIMIT_AS), so any allocation beyond the bound shows up as an outcome, never as swapping."""
import json
import os
import re
import resource
import sys
import tempfile
import traceback

import numpy as np

EXTREMES = ["0", "-1", "1", "2147483647", "2147483648", "4294967295", "99999999999", "1e30", "-1e30", "inf",
            "nan", "0.0", "999", "65536"]
NUMBER = re.compile(rb"(?<![\w.])-?\d+(\.\d+)?(e-?\d+)?(?![\w.])")
WORD = re.compile(rb'"[^"\n]*"|[A-Za-z_]+')
SMALL = ["0", "1", "2", "3", "4", "7", "16", "-1", "0.5"]
STRING = re.compile(rb'"[^"\n]*"')
DEEP_EDITS = [0, 1, 2, 3, 4, 8, 8, 9, 9]


def mutate(text, seed, deep=False):
    """A seeded mutation of prototxt bytes: 1-3 edits among extreme numbers (0-2), dropped/duplicated lines (3),
    damaged strings or names (4), stray or missing braces (5), truncation (6), random bytes (7), and two that
    keep the text parseable so that nets get built: a small number for a number (8), one of the file's strings
    for another: types, blob names (9). `deep`: only the edits that mostly still parse (0-4, 8, 9)."""
    rng = np.random.default_rng(seed)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.choice(DEEP_EDITS)) if deep else int(rng.integers(10))
        if kind <= 2:                                     # extreme number (the most productive edit)
            spots = list(NUMBER.finditer(text))
            if spots:
                m = spots[int(rng.integers(len(spots)))]
                text = text[:m.start()] + EXTREMES[int(rng.integers(len(EXTREMES)))].encode() + text[m.end():]
        elif kind == 3:                                   # drop or duplicate a line
            lines = text.split(b"\n")
            i = int(rng.integers(len(lines)))
            lines[i:i + 1] = [] if rng.random() < 0.5 else [lines[i], lines[i]]
            text = b"\n".join(lines)
        elif kind == 4:                                   # damage a word or string (types, names, bottoms)
            spots = list(WORD.finditer(text))
            if spots:
                m = spots[int(rng.integers(len(spots)))]
                word = bytearray(m.group())
                word[int(rng.integers(len(word)))] = int(rng.integers(97, 123))
                text = text[:m.start()] + bytes(word) + text[m.end():]
        elif kind == 5:                                   # stray or missing brace
            i = int(rng.integers(len(text) + 1))
            text = text[:i] + (b"{" if rng.random() < 0.5 else b"}") + text[i:] if rng.random() < 0.5 else \
                text.replace(b"}", b"", 1)
        elif kind == 6:                                   # truncation
            text = text[:int(rng.integers(len(text) + 1))]
        elif kind == 7:                                   # random bytes
            i = int(rng.integers(len(text) + 1))
            text = text[:i] + bytes(rng.integers(0, 256, int(rng.integers(1, 8))).astype(np.uint8)) + text[i:]
        elif kind == 8:                                   # a small number (stays in range: the net builds)
            spots = list(NUMBER.finditer(text))
            if spots:
                m = spots[int(rng.integers(len(spots)))]
                text = text[:m.start()] + SMALL[int(rng.integers(len(SMALL)))].encode() + text[m.end():]
        else:                                             # a string of the file for another: types, blob names
            spots = list(STRING.finditer(text))
            if spots:
                m, other = (spots[int(i)] for i in rng.integers(len(spots), size=2))
                text = text[:m.start()] + other.group() + text[m.end():]
    return text


FORWARD_BYTES = 32 << 20      # nets (blobs and weights) up to this size also run a forward pass
_DATA, _PREPARED = [], {}


def with_data(path):
    """Prototxt bytes of zoo net `path` with its data layers pointed at generated data, or None when it has none
    (deploy nets) or cannot be prepared (a file that is itself an error)."""
    if path not in _PREPARED:
        from conftest import ZOO
        from distcaffe.errors import CaffeError
        from distcaffe.io import format_text, read_net_param
        from _zoo_data import DATA_TYPES, Data, point_data
        if not _DATA:
            _DATA.append(Data(tempfile.mkdtemp(dir=os.environ.get("FUZZ_DATA_DIR"))))
        _PREPARED[path] = None
        cap = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (cap[1], cap[1]))   # LMDB writers reserve a large map
        try:
            param = read_net_param(path)
            if any(layer.type in DATA_TYPES for layer in param.layer):
                rel = os.path.relpath(path, ZOO)
                _PREPARED[path] = format_text(point_data(param, rel, _DATA[0])).encode()
        except CaffeError:
            pass
        finally:
            resource.setrlimit(resource.RLIMIT_AS, cap)
    return _PREPARED[path]


def run_case(path, seed):
    from distcaffe import Net, backend
    from distcaffe.errors import CaffeError
    from distcaffe.io import parse_net_text
    from distcaffe.proto import caffe_pb2
    prepared = with_data(path)
    deep = bool(seed % 4 and prepared)
    text = prepared if deep else open(path, "rb").read()
    outcome = {"file": path, "seed": seed, "stage": "parse",
               "input": "generated data" if deep else "zoo text, data absent" if prepared else "zoo text, no data layer"}
    if seed:
        text = mutate(text, seed, deep=deep)
    net = None
    try:
        param = parse_net_text(text, filename=path)
        for phase in (caffe_pb2.TRAIN, caffe_pb2.TEST):
            outcome["stage"] = "build %s" % caffe_pb2.Phase.Name(phase)
            backend.set_random_seed(0)
            net = Net(param, phase=phase)
            if net.memory_used < FORWARD_BYTES:
                outcome["stage"] = "forward %s" % caffe_pb2.Phase.Name(phase)
                for name in net.inputs:
                    blob = net.blobs[name]
                    blob.data[...] = np.random.default_rng(0).random(blob.shape)
                net.forward()
            net.close()
        outcome["result"] = "valid"
    except CaffeError as e:
        line = str(e)
        outcome["result"] = "error"
        outcome["message"] = line[:300]
        outcome["one_line"] = "\n" not in line and len(line) <= 2000
    except BaseException as e:  # noqa: B036 - every other outcome is what the fuzzer looks for
        outcome["result"] = "traceback"
        outcome["message"] = "%s: %s" % (type(e).__name__, str(e)[:300])
        outcome["where"] = traceback.format_exc().splitlines()[-3:]
    finally:
        if net is not None:
            net.close()
    return outcome


def main():
    limit = int(os.environ.get("FUZZ_MEMORY_LIMIT_MB", "3072")) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    from distcaffe.log import set_quiet
    from _zoo_data import PYLOSS_DIR
    set_quiet(True)
    sys.path.insert(0, str(PYLOSS_DIR))          # BVLC's pyloss layer of the linreg example
    for line in sys.stdin:
        path, seed = line.rsplit(" ", 1)
        print(json.dumps(run_case(path, int(seed))), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
