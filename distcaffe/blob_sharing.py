"""Blob sharing: intermediate blobs' diffs, and data that backward never reads, reuse a few buffers whose
lifetimes in a pass do not overlap (Caffe's ShareData/ShareDiff, planned over the net).

Caffe keeps every blob's data and diff for the whole pass; a framework with autograd frees each gradient once
consumed and each activation no backward needs. These plans (Caffe2's memonger `share_grad_blobs` and its
forward counterpart) give Caffe's model that memory with the same numbers:
- a diff is live in backward from the layer that first writes it (its consumer, or the Split summing its
  branches) down to the last layer that reads it (its producer, after any in-place layers on it);
- a data is live in forward from its producer to its last consumer, when no layer touching it reads it in
  backward (`Layer.backward_reads_data`: a Convolution's top, an Eltwise SUM's inputs, a BatchNorm's blob).
Blobs whose values someone may read outside those intervals keep their own: net inputs and outputs, loss tops,
diffs first read before written or last written without a reader (backward's outputs), arrays shared with a
parameter, and blobs of layers that keep values in a diff from forward to backward (`Layer.holds_bottom_diff`:
HingeLoss, Python layers). So only the values a training loop reads stay meaningful (inputs, outputs,
parameters): off by default (`Net.share_diffs`, `Net.share_data`), on in `distcaffe train`.
"""
from .blob import SyncedArray
from .log import get_logger

log = get_logger("net")


class SharedBuffers:
    """One net's sharing plan for one field of its blobs ("_diff" or "_data"): `apply()` before each backward
    or forward (re-plans when a reshape or a layer replaced a shared array), `release()` makes every array
    private again."""

    def __init__(self, net, field):
        self.net, self.field = net, field
        self.planned = False
        self.assigned = []           # (blob, the shared SyncedArray it was given, its group's index)
        self.buffers = []            # the shared SyncedArrays
        self.intervals = []          # (start, end, blob ids) of every shared group, in pass order

    def apply(self):
        if self.planned and all(getattr(b, self.field) is a for b, a, _ in self.assigned):
            return
        self.release()
        intervals = (diff_intervals if self.field == "_diff" else data_intervals)(self.net, self.groups())
        self._assign(intervals)
        self.planned = True

    def release(self):
        """Private arrays again (zeroed, as a fresh blob's); blobs that shared one array (Split's tops share
        their bottom's data, Flatten's its bottom's diff) share their new one."""
        fresh = {}
        for blob, arr, group in self.assigned:
            if getattr(blob, self.field) is arr:
                if group not in fresh:
                    fresh[group] = SyncedArray(blob.capacity, self._dtype(blob))
                setattr(blob, self.field, fresh[group])
        self.assigned, self.buffers, self.intervals, self.planned = [], [], [], False

    def _dtype(self, blob):
        return blob.diff_dtype if self.field == "_diff" else blob.dtype

    def groups(self):
        """Blob ids grouped by the array they hold (a Flatten's top holds its bottom's) or will hold (a Split's
        tops take their bottom's data in forward), leaving out arrays shared with a parameter."""
        net = self.net
        key = {bid: id(getattr(blob, self.field)) for bid, blob in enumerate(net._blobs)}
        if self.field == "_data":
            for i, layer in enumerate(net.layers):
                if layer.tops_share_data:
                    for tid in net.top_ids[i]:
                        old, new = key[tid], key[net.bottom_ids[i][0]]
                        key = {b: new if k == old else k for b, k in key.items()}
        by_array = {}
        for bid, k in key.items():
            by_array.setdefault(k, []).append(bid)
        params = {id(getattr(p, self.field)) for p in net._params}
        return [ids for k, ids in by_array.items() if k not in params]

    def _assign(self, intervals):
        """Greedy interval colouring in pass order: a buffer is free once its holder's last user has run; the
        best-fitting free buffer is taken (grown if none is large enough), else a new one."""
        net = self.net
        self.intervals = sorted(intervals, key=lambda t: t[0])
        buffers = []                 # [size, dtype, [(blob id, group)], busy until this time]
        for group, (start, end, ids) in enumerate(self.intervals):
            blobs = [net._blobs[b] for b in ids]
            dtype, size = self._dtype(blobs[0]), max(b.capacity for b in blobs)
            free = [buf for buf in buffers if buf[3] < start and buf[1] == dtype]
            fits = [buf for buf in free if buf[0] >= size]
            if fits:
                buf = min(fits, key=lambda b: b[0])
            elif free:
                buf = max(free, key=lambda b: b[0])
                buf[0] = size
            else:
                buf = [size, dtype, [], None]
                buffers.append(buf)
            buf[2].extend((bid, group) for bid in ids)
            buf[3] = end
        for size, dtype, members, _ in buffers:
            arr = SyncedArray(size, dtype)
            self.buffers.append(arr)
            for bid, group in members:
                setattr(net._blobs[bid], self.field, arr)
                self.assigned.append((net._blobs[bid], arr, group))
        alone = sum(net._blobs[ids[0]].capacity * self._dtype(net._blobs[ids[0]]).itemsize
                    for _, _, ids in intervals)
        log.info("Blob sharing (%s): %d blobs in %d buffers, %.1f MB instead of %.1f MB", self.field[1:],
                 len(self.assigned), len(self.buffers), sum(a.nbytes() for a in self.buffers) / 2 ** 20,
                 alone / 2 ** 20)


def _always_private(net):
    ids = set(net._input_ids) | set(net._output_ids)
    return ids | {bid for bid, w in enumerate(net._blob_loss_weights) if w}


def diff_intervals(net, groups):
    """[(start, end, blob ids)] in backward order (time = -layer index) of every group whose diff may be shared."""
    private = _always_private(net)
    for i, layer in enumerate(net.layers):
        if layer.holds_bottom_diff:
            private |= set(net.bottom_ids[i]) | set(net.top_ids[i])
    events = {}                  # blob id -> [(layer, reads, writes)]
    for i in range(len(net.layers)):
        if net.layer_need_backward[i]:
            written = {b for b, need in zip(net.bottom_ids[i], net.bottom_need_backward[i]) if need}
            for bid in set(net.top_ids[i]) | written:
                events.setdefault(bid, []).append((i, bid in net.top_ids[i], bid in written))
    out = []
    for ids in groups:
        seen = [e for bid in ids for e in events.get(bid, ())]
        if private.intersection(ids) or not seen:
            continue
        first, last = max(e[0] for e in seen), min(e[0] for e in seen)
        if any(reads for i, reads, _ in seen if i == first) or any(writes for i, _, writes in seen if i == last):
            continue
        out.append((-first, -last, ids))
    return out


def data_intervals(net, groups):
    """[(producer, last consumer, blob ids)] in forward order of every group whose data no backward reads."""
    private = _always_private(net)
    users = {}                   # blob id -> layers touching it
    for i, layer in enumerate(net.layers):
        if not net.bottom_ids[i]:                    # a data layer's tops (its prefetch may fill them)
            private |= set(net.top_ids[i])
        bottom, top = net._bottom(i), net._top(i)
        reads_bottom, reads_top = layer.backward_reads_data(bottom, top) if net.layer_need_backward[i] else ((), ())
        for j, bid in enumerate(net.bottom_ids[i]):
            users.setdefault(bid, []).append(i)
            if j in reads_bottom:
                private.add(bid)
        for j, bid in enumerate(net.top_ids[i]):
            users.setdefault(bid, []).append(i)
            if j in reads_top:
                private.add(bid)
    return [(min(i for b in ids for i in users[b]), max(i for b in ids for i in users[b]), ids)
            for ids in groups if not private.intersection(ids) and all(b in users for b in ids)]
