"""The use schedule of Large Model Support: which arrays each step touches and how, in what order.

A step is one layer's forward or backward pass (or one solver update of a param). Each step lists the arrays
it uses with a mode: 'r' read, 'w' modified (read first), 'o' overwritten whole (no copy in needed: a top's data
in forward, a bottom's diff in backward, a cleared param diff). The first pass records what each step really
touches; the recorded cycle then repeats, and an array's next use (distance, mode) decides what to evict
(furthest first), what to write back (modified and read later) and what to drop (next use overwrites it).
"""
import numpy as np

INF = float("inf")


class Step:
    """One step of the cycle: its key, a label for messages, its uses {entry id: mode} and workspace bytes."""

    __slots__ = ("key", "label", "uses", "workspace", "overwrites")

    def __init__(self, key, label, workspace=0, overwrites=()):
        self.key, self.label, self.workspace = key, label, int(workspace)
        self.uses = {}
        self.overwrites = set(overwrites)

    def record(self, eid, write):
        """Log one access: the first access decides 'o' (written first, overwrite role) vs 'r'/'w'."""
        mode = self.uses.get(eid)
        if mode is None:
            self.uses[eid] = ("o" if eid in self.overwrites else "w") if write else "r"
        elif write and mode == "r":
            self.uses[eid] = "w"


class Cycle:
    """The recorded sequence of steps that repeats every iteration, with each entry's uses by position."""

    def __init__(self, steps):
        self.steps = steps
        self.n = len(steps)
        self.positions = {}
        self.uses_of = {}
        for pos, st in enumerate(steps):
            self.positions.setdefault(st.key, []).append(pos)
            for eid, mode in st.uses.items():
                self.uses_of.setdefault(eid, []).append((pos, mode))

    def locate(self, key, pos):
        """Position of the step `key` expected after position `pos` (None when it is not in the cycle)."""
        where = self.positions.get(key)
        if not where:
            return None
        if pos is None:
            return where[0]
        for p in where:
            if p > pos:
                return p
        return where[0]

    def next_use(self, eid, pos):
        """(distance in steps, mode) of the entry's next use strictly after `pos`; (INF, None) if never."""
        uses = self.uses_of.get(eid)
        if not uses:
            return INF, None
        for p, mode in uses:
            if p > pos:
                return p - pos, mode
        p, mode = uses[0]
        return p + self.n - pos, mode


SLACK = 64 * 1024          # small arrays and index temporaries any pass allocates


def _math_itemsize(layer):
    return np.dtype(layer.mdtype).itemsize


def layer_workspace(layer, bottom, top, backward):
    """Upper bound of the device temporaries one pass of a layer allocates (im2col columns, padded planes,
    BN's centred/normalized input, masks, GEMM outputs), from its geometry; checked against tracemalloc."""
    item = _math_itemsize(layer)
    io = sum(b.count for b in list(bottom) + list(top)) * item
    params = sum(b.count for b in layer.blobs) * item        # the weight gradient and its transpose
    ws = 3 * io + (2 if backward else 1) * params + SLACK
    if layer.type in ("Convolution", "Deconvolution"):
        col = layer.kernel_dim * layer.group * int(np.prod(layer.col_shape)) * layer.num * item
        ws += (3 if backward else 2) * col
    return ws


def update_workspace(param_nbytes, history_sets):
    """Temporaries of one solver update: one float32 term per history array (SGD 1x, Adam 2x the param)."""
    return max(1, history_sets) * int(param_nbytes)
