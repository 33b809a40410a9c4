"""Diff sharing: intermediate blobs' diffs reuse a few buffers whose lifetimes in backward do not overlap.

Caffe keeps every blob's diff for the whole pass; a framework with autograd frees each gradient once consumed.
This plan (Caffe2's memonger `share_grad_blobs`) gets the same memory from Caffe's model, with the same numbers:
a blob's diff is live in backward from the layer that first writes it (its consumer, or the Split summing its
branches) down to the last layer that reads it (its producer, after any in-place layers on it); blobs whose
intervals do not overlap share one buffer. Blobs whose diff someone may read outside that interval keep their
own: net inputs and outputs, loss tops, diffs first read before written or last written without a reader
(backward's outputs), diffs shared with a parameter, and blobs of layers that keep values in a diff from forward
to backward (`Layer.holds_bottom_diff`: HingeLoss, Python layers). So after `backward` only the diffs a
pycaffe user reads of such a net (inputs, outputs, parameters) are meaningful; off by default (`Net.share_diffs`).
"""
from .blob import SyncedArray
from .log import get_logger

log = get_logger("net")


class DiffSharing:
    """The sharing plan of one net: `apply()` before each backward (re-plans when a reshape replaced a shared
    diff), `release()` gives every blob a private diff again."""

    def __init__(self, net):
        self.net = net
        self.assigned = []           # (blob, the shared SyncedArray it was given, its group's index)
        self.buffers = []            # the shared SyncedArrays

    def apply(self):
        if self.assigned and all(b._diff is a for b, a, _ in self.assigned):
            return
        self.release()
        self._assign(self._intervals())

    def release(self):
        """Private diffs again (zeroed, as a fresh blob's); blobs that shared one array (Flatten, Reshape) share
        their new one."""
        fresh = {}
        for blob, arr, group in self.assigned:
            if blob._diff is arr:
                if group not in fresh:
                    fresh[group] = SyncedArray(blob.capacity, blob.diff_dtype)
                blob._diff = fresh[group]
        self.assigned, self.buffers = [], []

    def _groups(self):
        """Blob ids grouped by the diff array they hold (a Flatten's top holds its bottom's)."""
        net = self.net
        by_array = {}
        for bid, blob in enumerate(net._blobs):
            by_array.setdefault(id(blob._diff), []).append(bid)
        params = {id(p._diff) for p in net._params}
        return [ids for key, ids in by_array.items() if key not in params]

    def _intervals(self):
        """[(first layer writing, last layer reading, blob ids)] of every group whose diff may be shared."""
        net = self.net
        private = set(net._input_ids) | set(net._output_ids)
        private |= {bid for bid, w in enumerate(net._blob_loss_weights) if w}
        for i, layer in enumerate(net.layers):
            if layer.holds_bottom_diff:
                private |= set(net.bottom_ids[i]) | set(net.top_ids[i])
        events = {}                  # blob id -> [(layer, reads, writes)] in backward order
        for i in range(len(net.layers) - 1, -1, -1):
            if not net.layer_need_backward[i]:
                continue
            written = {b for b, need in zip(net.bottom_ids[i], net.bottom_need_backward[i]) if need}
            for bid in set(net.top_ids[i]) | written:
                events.setdefault(bid, []).append((i, bid in net.top_ids[i], bid in written))
        out = []
        for ids in self._groups():
            if private.intersection(ids):
                continue
            seen = sorted((e for bid in ids for e in events.get(bid, ())), key=lambda e: -e[0])
            if not seen:
                continue
            first = [e for e in seen if e[0] == seen[0][0]]
            last = [e for e in seen if e[0] == seen[-1][0]]
            if any(reads for _, reads, _ in first) or any(writes for _, _, writes in last):
                continue
            out.append((seen[0][0], seen[-1][0], ids))
        return out

    def _assign(self, intervals):
        """Greedy interval colouring in backward order: a buffer is free once its holder's last reader has
        run; the best-fitting free buffer is taken (grown if none is large enough), else a new one."""
        net = self.net
        buffers = []                 # [size, dtype, [(blob id, group)], free once layer `last` has run]
        for group, (first, last, ids) in enumerate(sorted(intervals, key=lambda t: -t[0])):
            blobs = [net._blobs[b] for b in ids]
            dtype, size = blobs[0].diff_dtype, max(b.capacity for b in blobs)
            free = [buf for buf in buffers if buf[3] > first and buf[1] == dtype]
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
            buf[3] = last
        for size, dtype, members, _ in buffers:
            arr = SyncedArray(size, dtype)
            self.buffers.append(arr)
            for bid, group in members:
                net._blobs[bid]._diff = arr
                self.assigned.append((net._blobs[bid], arr, group))
        private = sum(net._blobs[ids[0]].capacity * net._blobs[ids[0]].diff_dtype.itemsize for _, _, ids in intervals)
        log.info("Diff sharing: %d blobs' diffs in %d buffers, %.1f MB instead of %.1f MB", len(self.assigned),
                 len(self.buffers), sum(a.nbytes() for a in self.buffers) / 2 ** 20, private / 2 ** 20)
