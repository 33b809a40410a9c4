"""One worker of the prototxt fuzzer (tests/test_fuzz_prototxt.py): reads `ZOO_FILE SEED` lines on stdin, builds
the seeded mutation of that zoo net, runs it through the entry points (parse, Net in TRAIN and TEST phase, a
forward pass when the net is small) and prints one JSON outcome line per case. Its address space is capped
(RLIMIT_AS), so any allocation beyond the bound shows up as an outcome, never as the machine swapping."""
import json
import os
import re
import resource
import sys
import traceback

import numpy as np

EXTREMES = ["0", "-1", "1", "2147483647", "2147483648", "4294967295", "99999999999", "1e30", "-1e30", "inf",
            "nan", "0.0", "999", "65536"]
NUMBER = re.compile(rb"(?<![\w.])-?\d+(\.\d+)?(e-?\d+)?(?![\w.])")
WORD = re.compile(rb'"[^"\n]*"|[A-Za-z_]+')


def mutate(text, seed):
    """A seeded mutation of prototxt bytes: 1-3 edits among extreme numbers, dropped/duplicated lines, damaged
    strings or names, stray or missing braces, truncation, random bytes."""
    rng = np.random.default_rng(seed)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(8))
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
        else:                                             # random bytes
            i = int(rng.integers(len(text) + 1))
            text = text[:i] + bytes(rng.integers(0, 256, int(rng.integers(1, 8))).astype(np.uint8)) + text[i:]
    return text


def run_case(path, seed):
    from distcaffe import Net, backend
    from distcaffe.errors import CaffeError
    from distcaffe.io import parse_net_text
    from distcaffe.proto import caffe_pb2
    text = open(path, "rb").read()
    if seed:
        text = mutate(text, seed)
    outcome = {"file": path, "seed": seed}
    try:
        param = parse_net_text(text, filename=path)
        outcome["parsed"] = True
        for phase in (caffe_pb2.TRAIN, caffe_pb2.TEST):
            backend.set_random_seed(0)
            net = Net(param, phase=phase)
            if phase == caffe_pb2.TEST and net.memory_used < 16 << 20:
                for name in net.inputs:
                    blob = net.blobs[name]
                    blob.data[...] = np.random.default_rng(0).random(blob.shape)
                net.forward()
            net.close() if hasattr(net, "close") else None
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
    return outcome


def main():
    limit = int(os.environ.get("FUZZ_MEMORY_LIMIT_MB", "3072")) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from distcaffe.log import set_quiet
    set_quiet(True)
    for line in sys.stdin:
        path, seed = line.rsplit(" ", 1)
        print(json.dumps(run_case(path, int(seed))), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
