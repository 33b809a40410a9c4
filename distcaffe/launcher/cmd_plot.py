"""`distcaffe plot LOG|METRICS OUT.png`: losses, accuracy-like outputs and the learning rate against iteration,
each on its own axis, from a Caffe-format training log or a distcaffe metrics file (.csv / .jsonl)."""
import os

from distcaffe.errors import CaffeError
from distcaffe.launcher import flags as F

from .parse_log import parse_log


def _series(rows, skip=("NumIters", "LearningRate")):
    """{output name: [(iteration, value)]} of rows."""
    keys = sorted({k for r in rows for k in r} - set(skip))
    return {k: [(r["NumIters"], r[k]) for r in rows if k in r] for k in keys}


def layout(train, test):
    """([(y label, [(phase, output, points)])], lr points): losses on one axis, every other output (accuracy)
    on a second, the learning rate at the iteration it was logged for on a third."""
    curves = [("train", k, pts) for k, pts in _series(train).items()] + \
             [("test", k, pts) for k, pts in _series(test).items()]
    losses = [c for c in curves if "loss" in c[1]]
    others = [c for c in curves if "loss" not in c[1]]
    lrs = [(r["NumIters"], r["LearningRate"]) for r in train if r["LearningRate"] == r["LearningRate"]]
    return [("loss", losses)] + ([("accuracy / other outputs", others)] if others else []), lrs


def plot(argv):
    args = F.parse("plot", argv, [], positional=("log", "out"), about=__doc__)
    if args is None:
        return 0
    train, test = parse_log(args["log"])
    if not train and not test:
        raise CaffeError("%s: no 'Train net output' or 'Test net output' lines found" % args["log"])
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CaffeError("plot needs matplotlib: pip install 'distcaffe[plot]'") from None
    panels, lrs = layout(train, test)
    heights = [3] * len(panels) + ([1] if lrs else [])
    fig, axes = plt.subplots(len(heights), 1, figsize=(8, 2.4 * sum(heights) / 2 + 1), sharex=True,
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    axes = [a[0] for a in axes]
    for ax, (label, group) in zip(axes, panels):
        for phase, key, pts in group:
            ax.plot(*zip(*pts), "-" if phase == "train" else "o-", label="%s %s" % (phase, key),
                    markersize=3 if phase == "test" else 0)
        ax.set_ylabel(label)
        if group:
            ax.legend(loc="best")
        ax.grid(alpha=0.3)
    if lrs:
        axes[-1].step(*zip(*lrs), where="post", color="tab:purple")
        axes[-1].set_ylabel("learning rate")
        axes[-1].grid(alpha=0.3)
    axes[-1].set_xlabel("iteration")
    axes[0].set_title(os.path.basename(args["log"]))
    fig.tight_layout()
    tmp = args["out"] + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, args["out"])
    print("wrote %s (%d train points, %d test points)" % (args["out"], len(train), len(test)))
    return 0
