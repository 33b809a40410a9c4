"""Interleaved A/B of two checkouts' distcaffe on one zoo net: each checkout's net in its own worker process
(net_speed.py's), rounds alternating A B, B A, ..., so that this machine's drift (10-30% within minutes) falls on
both. Prints each side's median round and B/A.

    python benchmarks/ab_checkouts.py /tmp/old-checkout . --net cifar10_quick --threads 2 --rounds 12 --iters 10
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

import net_speed


def spawn(tree, net, threads, zoo):
    """tree's net_speed worker for `net`, importing tree's distcaffe, its pools sized to `threads`."""
    env = dict(net_speed.worker_env(threads), PYTHONPATH=os.path.abspath(tree))
    proc = subprocess.Popen([sys.executable, os.path.join(tree, "benchmarks", "net_speed.py"), "--worker",
                             "distcaffe", "--nets", net, "--zoo", zoo], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env, text=True)
    if not json.loads(proc.stdout.readline() or "{}").get("ready"):
        raise SystemExit("ab_checkouts: the worker of %s did not start (exit %s)" % (tree, proc.wait()))
    return proc


def ask(proc, line):
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", help="checkout A (the baseline)")
    ap.add_argument("b", help="checkout B")
    ap.add_argument("--net", default="cifar10_quick", choices=sorted(net_speed.NETS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--iters", type=int, default=5, help="passes per round (its median is the round's)")
    ap.add_argument("--zoo", default=os.environ.get("DISTCAFFE_ZOO", "/work/shared/zoo"))
    args = ap.parse_args()
    workers = {"A": spawn(args.a, args.net, args.threads, args.zoo), "B": spawn(args.b, args.net, args.threads,
                                                                                   args.zoo)}
    rounds = {"A": [], "B": []}
    for r in range(args.rounds):
        for side in ("AB" if r % 2 == 0 else "BA"):
            rounds[side].append(ask(workers[side], "run %d" % args.iters)["wall"])
    for proc in workers.values():
        ask(proc, "quit")
        proc.wait()
    a, b = statistics.median(rounds["A"]), statistics.median(rounds["B"])
    print("%s, %d thread(s): A %.1f ms, B %.1f ms, B/A %.3f" % (args.net, args.threads, a, b, b / a))
    for side in "AB":
        print("  %s rounds: %s" % (side, " ".join("%.1f" % t for t in rounds[side])))


if __name__ == "__main__":
    main()
