"""A lone `distcaffe train` (one process, CPU) of LeNet on the MNIST sample: img/sec with the BLAS pool as the
CLI sizes it (no *_NUM_THREADS set) against explicit OPENBLAS_NUM_THREADS=1 and =2, rounds interleaved so
that every setting sees the same machine load.

    python benchmarks/threads.py [--iters 200] [--rounds 3]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POOLS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def cli(*args, env=None, cwd=ROOT):
    r = subprocess.run([sys.executable, "-m", "distcaffe.launcher.cli", *args], cwd=cwd, env=env,
                       capture_output=True, text=True)
    if r.returncode:
        sys.exit("%s failed:\n%s" % (args, r.stderr[-3000:]))
    return r.stderr


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="dcthreads")
    base = {k: v for k, v in os.environ.items() if k not in POOLS}
    base["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    cli("data", "mnist-sample", os.path.join(work, "data"), env=base)
    net = open(os.path.join(ROOT, "examples/mnist/lenet_train_test.prototxt")).read()
    net = net.replace("examples/mnist/data", os.path.join(work, "data"))
    open(os.path.join(work, "net.prototxt"), "w").write(net)
    open(os.path.join(work, "solver.prototxt"), "w").write(
        'net: "net.prototxt"\nbase_lr: 0.01\nmomentum: 0.9\nlr_policy: "fixed"\ndisplay: 0\nmax_iter: %d\n'
        'snapshot_after_train: false\nsolver_mode: CPU\nrandom_seed: 1\n' % a.iters)
    settings = {"sized by distcaffe (nothing set)": {}, "OPENBLAS_NUM_THREADS=1": {"OPENBLAS_NUM_THREADS": "1"},
                "OPENBLAS_NUM_THREADS=2": {"OPENBLAS_NUM_THREADS": "2"}}
    rates = {name: [] for name in settings}
    for _ in range(a.rounds):
        for name, extra in settings.items():
            err = cli("train", "-solver", "solver.prototxt", env=dict(base, **extra), cwd=work)
            rates[name].append(float(re.search(r"= ([\d.e+]+) img/sec", err).group(1)))
    print("cpus: affinity %d, os.cpu_count %d, load average %s" % (
        len(os.sched_getaffinity(0)), os.cpu_count(), " ".join("%.1f" % x for x in os.getloadavg())))
    print("| BLAS threads | img/sec (median of %d) | all rounds |" % a.rounds)
    print("|---|---|---|")
    for name, r in rates.items():
        print("| %s | %.0f | %s |" % (name, statistics.median(r), ", ".join("%.0f" % x for x in r)))


if __name__ == "__main__":
    main()
