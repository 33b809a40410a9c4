"""`distcaffe plot LOG OUT.png`: training loss, test outputs (accuracy) and learning rate against iteration."""
import os

from distcaffe.errors import CaffeError
from distcaffe.launcher import flags as F

from .parse_log import parse_log


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
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for key in sorted({k for r in train for k in r} - {"NumIters", "LearningRate"}):
        pts = [(r["NumIters"], r[key]) for r in train if key in r]
        ax_loss.plot(*zip(*pts), label="train " + key, color="tab:blue")
    ax_loss.set_ylabel("train loss")
    ax_acc = ax_loss.twinx()
    for key in sorted({k for r in test for k in r} - {"NumIters", "LearningRate"}):
        pts = [(r["NumIters"], r[key]) for r in test if key in r]
        style = "o-" if "acc" in key else "s--"
        ax_acc.plot(*zip(*pts), style, label="test " + key, color="tab:green" if "acc" in key else "tab:red")
    ax_acc.set_ylabel("test outputs")
    handles = ax_loss.get_legend_handles_labels()
    more = ax_acc.get_legend_handles_labels()
    ax_loss.legend(handles[0] + more[0], handles[1] + more[1], loc="center right")
    lrs = [(r["NumIters"], r["LearningRate"]) for r in train if r["LearningRate"] == r["LearningRate"]]
    if lrs:
        ax_lr.plot(*zip(*lrs), color="tab:purple")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("iteration")
    ax_loss.set_title(args["log"])
    fig.tight_layout()
    fig.savefig(args["out"] + ".tmp.png", dpi=100)
    plt.close(fig)
    os.replace(args["out"] + ".tmp.png", args["out"])
    print("wrote %s (%d train points, %d test points)" % (args["out"], len(train), len(test)))
    return 0
