"""Prototxt fuzzer: seeded mutations of the zoo's nets (tests/_fuzz_worker.py; train_val nets mostly with their
data layers pointed at generated data, so that cases get past them) must each end as a valid net or one clean
CaffeError line -- no traceback, no hang, no signal, no allocation beyond the worker's address-space cap. CI runs a 40 s budget; DISTCAFFE_FUZZ_SECONDS / DISTCAFFE_FUZZ_SEED run longer or other cases (the
counts of a long run are in benchmarks/RESULTS.md; `python tests/test_fuzz_prototxt.py SECONDS` prints them)."""
import collections
import json
import os
import pathlib
import queue
import subprocess
import sys
import tempfile
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import ZOO  # noqa: E402

pytestmark = pytest.mark.slow
CASE_TIMEOUT = 300.0    # seconds one case may take before it counts as a hang (ResNet-50 takes ~60 s loaded)


def zoo_nets():
    """Net prototxts of the zoo (not solvers), smallest first."""
    rows = [line.split("\t") for line in (ZOO / "MANIFEST.tsv").read_text().splitlines()[1:]]
    nets = [ZOO / r[0] for r in rows if r[4] != "solver"]
    return sorted(nets, key=lambda p: (p.stat().st_size, str(p)))


class Worker:
    """A _fuzz_worker.py process fed one case at a time; restarted after a crash or a hang."""

    def __init__(self, data_dir):
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "_fuzz_worker.py")], cwd=str(ROOT),
                                     env=dict(os.environ, PYTHONPATH=str(ROOT), FUZZ_DATA_DIR=data_dir),
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.lines = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(ln) for ln in self.proc.stdout] + [self.lines.put(None)],
                         daemon=True).start()

    def run(self, path, seed):
        self.proc.stdin.write("%s %d\n" % (path, seed))
        self.proc.stdin.flush()
        try:
            line = self.lines.get(timeout=CASE_TIMEOUT)
        except queue.Empty:
            self.proc.kill()
            return {"file": str(path), "seed": seed, "result": "hang"}
        if line is None:
            self.proc.wait()
            return {"file": str(path), "seed": seed, "result": "signal %d" % -self.proc.returncode}
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(30)


def fuzz(seconds, base_seed=0):
    """Cases round-robin over the zoo nets until `seconds` pass; returns (Counter of results, bad outcomes,
    Counter of (what was mutated, result, the stage a case ended in))."""
    nets = zoo_nets()
    counts, bad, stages = collections.Counter(), [], collections.Counter()
    with tempfile.TemporaryDirectory(prefix="fuzz_data_") as data_dir:
        worker = Worker(data_dir)
        deadline = time.monotonic() + seconds
        case = 0
        while time.monotonic() < deadline:
            path = nets[case % len(nets)]
            seed = base_seed * 1000003 + case + 1
            out = worker.run(path, seed)
            counts[out["result"]] += 1
            stages["%s: %s, %s" % (out.get("input"), out["result"], out.get("stage"))] += 1
            if out["result"] not in ("valid", "error") or not out.get("one_line", True):
                bad.append(out)
            if out["result"] in ("hang",) or out["result"].startswith("signal"):
                worker = Worker(data_dir)
            case += 1
        worker.close()
    return counts, bad, stages


def test_fuzzed_zoo_prototxts_end_cleanly():
    assert ZOO.is_dir(), "the zoo (../shared/zoo) is needed"
    counts, bad, stages = fuzz(float(os.environ.get("DISTCAFFE_FUZZ_SECONDS", "40")),
                               int(os.environ.get("DISTCAFFE_FUZZ_SEED", "0")))
    assert sum(counts.values()) >= 50, counts
    assert not bad, (counts, bad[:5])
    # mutated train_val nets on generated data get past their data layers, some through a forward pass
    assert stages["generated data: valid, forward TEST"] >= 5, stages


if __name__ == "__main__":
    result = fuzz(float(sys.argv[1]) if len(sys.argv) > 1 else 600, int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    print(json.dumps({"counts": result[0], "bad": result[1], "stages": dict(sorted(result[2].items()))}, indent=1))
