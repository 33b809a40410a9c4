"""Gradient buckets (NVCaffe's `reduce_buckets`): the allreduce of each bucket overlaps the rest of backward.

Learnable parameters are ordered by the layer whose backward completes their gradient (the lowest
layer using them), top layer first, and cut into `reduce_buckets` contiguous buckets of about equal
size. A Net.after_backward hook starts a bucket's non-blocking allreduce as soon as the layer that
completes its last gradient is done, in the last of the `iter_size` backward passes.
"""
import time

import numpy as np

from distcaffe import backend

from .communicator import first_collective_timeout


def plan_buckets(sizes, ready_layers, n_buckets):
    """Bucket plan: list of lists of param indices, in reverse layer order, cut into <= n_buckets parts of
    about equal total size. `sizes[i]` is param i's element count, `ready_layers[i]` the layer after
    whose backward its gradient is complete."""
    order = sorted(range(len(sizes)), key=lambda i: (-ready_layers[i], i))
    total = float(sum(sizes))
    n_buckets = max(1, min(int(n_buckets), len(order)))
    buckets, current, filled = [], [], 0
    for i in order:
        # close the bucket before a param that would carry it past its share of the total
        if current and len(buckets) < n_buckets - 1 and filled + sizes[i] > total * (len(buckets) + 1) / n_buckets:
            buckets.append(current)
            current = []
        current.append(i)
        filled += sizes[i]
    if current or not buckets:
        buckets.append(current)
    return buckets


def ready_layer_of_params(net):
    """For each learnable param: the lowest layer index that uses it (its gradient is final after that
    layer's backward; shared params collect gradients from several layers)."""
    ready = [len(net.layers)] * len(net.learnable_params)
    for lid, pids in enumerate(net.param_ids):
        for pid in pids:
            lp = net.learnable_param_ids[pid]
            ready[lp] = min(ready[lp], lid)
    return ready


class Bucket:
    """A flat buffer holding some params' gradients (plus `extra` trailing slots); one allreduce."""

    def __init__(self, params, dtype, extra=0):
        self.params = params
        self.offsets = np.cumsum([0] + [p.count for p in params])
        self.params_size = int(self.offsets[-1])
        self.buffer = backend.xp().zeros(self.params_size + extra, dtype)
        self.request = None
        self.started_at = 0.0  # perf_counter() when its allreduce started (benchmarks/scaling.py)

    def pack(self):
        for p, lo, hi in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            self.buffer[lo:hi] = p.dev_diff.ravel()

    def unpack(self, scale):
        for p, lo, hi in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            src = self.buffer[lo:hi]
            p.mut_dev_diff[...] = (src * scale if scale != 1.0 else src).reshape(p.shape)


class GradientReducer:
    """Averages the train net's gradients over all ranks, overlapping communication with backward."""

    def __init__(self, net, comm, n_buckets, iter_size=1, flags_fn=None, n_flags=0):
        """`flags_fn()` (optional) gives `n_flags` floats summed over ranks in the last bucket; finish()
        returns the sums (the engine agrees on signal actions this way, at no extra message)."""
        self.net, self.comm, self.iter_size = net, comm, max(1, int(iter_size))
        self.flags_fn = flags_fn
        params = net.learnable_params
        ready = ready_layer_of_params(net)
        diff_types = {p.diff_dtype for p in params}
        if np.dtype(np.float64) in diff_types:
            dtype = np.float64
        elif diff_types == {np.dtype(np.float16)} and comm.reduces_fp16:
            dtype = np.float16            # fp16 gradients travel in fp16 where the communicator sums them so (NCCL)
        else:
            dtype = np.float32
        self.plan = plan_buckets([p.count for p in params], ready, n_buckets)
        self.buckets = [Bucket([params[i] for i in ids], dtype, n_flags if b == len(self.plan) - 1 else 0)
                        for b, ids in enumerate(self.plan)]
        self.trigger = {}
        for b, ids in enumerate(self.plan):
            self.trigger.setdefault(min((ready[i] for i in ids), default=-1), []).append(b)
        self.top_layer = len(net.layers) - 1
        self.passes = 0
        self.stats = {"iterations": 0, "overlapped": 0, "late": 0, "wait_s": 0.0, "bytes": 0}
        self.attach()

    def detach(self):
        """Stop starting buckets during backward (finish() then starts them all, after it)."""
        self.net.after_backward.remove(self._after_backward)

    def attach(self):
        self.net.after_backward.append(self._after_backward)

    def begin_iteration(self):
        self.passes = 0

    def _after_backward(self, layer_index):
        if layer_index == self.top_layer:
            self.passes += 1
        if self.passes == self.iter_size:
            for bucket in self.buckets:
                if bucket.request is not None:
                    bucket.request.test()  # MPI progresses only inside MPI calls: poke it between layers
            for b in self.trigger.get(layer_index, ()):
                self._start(self.buckets[b])
                self.stats["overlapped"] += 1

    def _start(self, bucket):
        bucket.started_at = time.perf_counter()
        bucket.pack()
        if self.flags_fn is not None and bucket is self.buckets[-1]:
            bucket.buffer[bucket.params_size:] = backend.xp().asarray(self.flags_fn(), bucket.buffer.dtype)
        bucket.request = self.comm.iallreduce(bucket.buffer)
        self.stats["bytes"] += bucket.buffer.nbytes

    def finish(self, scale):
        """Start any bucket not yet started, wait for all, write the summed gradients times `scale` back;
        returns the summed flags (host array) or None."""
        t0 = time.perf_counter()
        for bucket in self.buckets:
            if bucket.request is None:
                self._start(bucket)
                self.stats["late"] += 1
        # the first iteration also waits out the other ranks' cold start (cupy kernel compiles, cuDNN plans)
        timeout = None if self.stats["iterations"] else first_collective_timeout()
        for bucket in self.buckets:
            bucket.request.wait(timeout)
            bucket.request = None
        self.stats["wait_s"] += time.perf_counter() - t0
        self.stats["iterations"] += 1
        for bucket in self.buckets:
            bucket.unpack(scale)
        last = self.buckets[-1]
        return backend.to_host(last.buffer[last.params_size:]).copy() if self.flags_fn is not None else None
