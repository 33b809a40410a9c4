"""The prefetching batch pipeline behind the data layers: reader/parser threads, transformer threads,
a bounded queue of ready batches, optional host cache (filled as read, or all at start: precache) and per-epoch
shuffling.

Batch b holds positions [b*B, (b+1)*B) of an endless stream over this rank's shard; epoch e of the stream is
the shard in order, or permuted by a Generator seeded with (seed, e) when shuffling. Transformer thread t
builds batches t, t+T, ... into its own bounded queue, and the consumer takes batch b from queue b % T, so
batches come out in order and identical for any thread count. Each batch's random transform uses a Generator
seeded with (seed, b). Threads are daemons watching a stop event: `close()` (also at interpreter exit)
ends them without a hang.
"""
import atexit
import os
import queue
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import CaffeError, DataError
from .cache import RecordCache
from .shard import shard_indices

_live = weakref.WeakSet()


def auto_threads():
    """Transformer threads when `threads: 0`: the cores this process may use, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


class Batch:
    """A ready batch: `plan` (transform to apply, possibly on the device) or `data`, plus `labels`."""

    __slots__ = ("index", "data", "plan", "labels")

    def __init__(self, index, data, plan, labels):
        self.index, self.data, self.plan, self.labels = index, data, plan, labels


class Pipeline:
    """Produces transformed batches of `source` records (source: name, len(), key(i), read(i) -> (array, label),
    close())."""

    def __init__(self, source, batch_size, transformer, seed, what, threads=0, parser_threads=0, prefetch=4,
                 cache=False, precache=False, shuffle=False, rand_skip=0, shard=(0, 1), device_transform=False,
                 batch_nbytes=0):
        if batch_size <= 0:
            raise DataError("%s: batch_size must be positive" % what)
        self.source, self.batch_size, self.transformer, self.what = source, int(batch_size), transformer, what
        self.seed = int(seed)
        self.indices = np.asarray(shard_indices(len(source), *shard), dtype=np.int64)
        if not len(self.indices):
            raise DataError("%s: shard %d of %d of %s holds no records (%d records in all)"
                            % (what, shard[0], shard[1], source.name, len(source)))
        self.shuffle = bool(shuffle)
        self.rand_skip = int(rand_skip)
        self.skip = self._skip()
        self.cache = RecordCache(len(source), what) if cache or precache else None
        self.device_transform = device_transform
        self.threads = int(threads) or auto_threads()
        self.depth = max(1, -(-int(prefetch or 4) // self.threads))
        self._check_memory(batch_nbytes)
        self.wait_seconds = 0.0
        self.parsers = ThreadPoolExecutor(int(parser_threads) or self.threads, thread_name_prefix="caffe-parser")
        try:
            if precache:
                self._precache()
            self._start(0)
        except BaseException:   # a record that fails to parse while precaching: no parser threads left behind
            self.parsers.shutdown(wait=False, cancel_futures=True)
            raise
        _live.add(self)

    def _check_memory(self, batch_nbytes):
        """Refuse, before any thread starts, a queue whose batches (`depth` queued plus one being built, per
        transformer thread) would not fit in this machine's memory: one line, not a thread dying in MemoryError."""
        import psutil
        held = self.threads * (self.depth + 1)
        machine = psutil.virtual_memory().total
        if held * batch_nbytes > machine:
            raise DataError("%s: %d threads x %d prefetched batches of %.3g GB need %.3g GB, more than the %.3g GB of "
                            "memory of this machine (lower batch_size, prefetch or threads)"
                            % (self.what, self.threads, self.depth + 1, batch_nbytes / 1e9,
                               held * batch_nbytes / 1e9, machine / 1e9))

    def _skip(self):
        return int(np.random.default_rng([self.seed, 1 << 30]).integers(self.rand_skip)) if self.rand_skip else 0

    def _start(self, first_batch):
        """Start the transformer threads so that the consumer's next batch is `first_batch`."""
        self.next_batch = int(first_batch)
        self.queues = [queue.Queue(self.depth) for _ in range(self.threads)]
        self.stop = threading.Event()
        self._orders = {}
        self._workers = [threading.Thread(target=self._work, daemon=True, name="caffe-data-%d" % t,
                                          args=(first_batch + (t - first_batch) % self.threads, self.queues[t],
                                                self.stop))
                         for t in range(self.threads)]
        for w in self._workers:
            w.start()

    def _join(self):
        self.stop.set()
        for w in self._workers:
            if w is not threading.current_thread():
                w.join(timeout=5)

    # --- resume state: the batches consumed (not the ones prefetched) and the seed they derive from ----------
    def state(self):
        """What a snapshot keeps to resume this stream exactly: seed, records and batches consumed so far."""
        return {"seed": self.seed, "records": len(self.source), "next_batch": self.next_batch}

    def restore(self, state):
        """Continue the stream after the batches a `state()` had consumed (drops what was prefetched)."""
        if int(state["records"]) != len(self.source):
            raise DataError("%s: the snapshot read %s with %d records; it now holds %d"
                            % (self.what, self.source.name, int(state["records"]), len(self.source)))
        self._join()
        self.seed = int(state["seed"])
        self.skip = self._skip()
        self._start(int(state["next_batch"]))

    # --- the record stream ------------------------------------------------------------------------------
    def epoch_order(self, epoch):
        """Shard indices of `epoch` in reading order (a fresh seeded permutation per epoch when shuffling)."""
        if not self.shuffle:
            return self.indices
        order = self._orders.get(epoch)
        if order is None:
            order = self.indices[np.random.default_rng([self.seed, epoch]).permutation(len(self.indices))]
            self._orders = {epoch: order}
        return order

    def batch_indices(self, b):
        """Source indices of batch `b`."""
        m = len(self.indices)
        pos = self.skip + b * self.batch_size + np.arange(self.batch_size)
        return np.array([self.epoch_order(p // m)[p % m] for p in pos]) if self.shuffle else \
            self.indices[pos % m]

    def _read(self, index):
        record = self.cache.get(index) if self.cache is not None else None
        if record is None:
            record = self.source.read(int(index))
            if self.cache is not None:
                self.cache.put(index, record)
        return record

    def _read_chunk(self, chunk):
        return [self._read(i) for i in chunk]

    def _precache(self):
        """NVCaffe's precache: every record of the shard into the cache before the first batch (unless the first
        record shows they would not fit; then the cache is off and records are read as needed)."""
        self._read(self.indices[0])
        if self.cache.enabled:
            chunks = np.array_split(self.indices[1:], max(1, min(len(self.indices) - 1, self.parsers._max_workers)))
            for _ in self.parsers.map(self._read_chunk, chunks):
                pass

    # --- threads ---------------------------------------------------------------------------------------
    def _work(self, b, q, stop):
        while not stop.is_set():
            try:
                item = self._make_batch(b)
            except Exception as e:                  # delivered to the consumer, raised there
                item = e
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, Exception):
                return
            b += self.threads

    def _records(self, idx):
        """The records at source indices `idx`, read by the parser threads."""
        chunks = np.array_split(idx, min(len(idx), self.parsers._max_workers))
        return [r for part in self.parsers.map(self._read_chunk, chunks) for r in part]

    def _make_batch(self, b):
        idx = self.batch_indices(b)
        records = self._records(idx)
        rng = np.random.default_rng([self.seed, b])
        keys = [self.source.key(int(i)) for i in idx]
        plan = self.transformer.plan([r[0] for r in records], rng, keys)
        labels = np.array([r[1] for r in records], dtype=np.float32)
        if self.device_transform:
            return Batch(b, None, plan, labels)
        return Batch(b, self.transformer.apply(plan), None, labels)

    def next(self):
        """The next batch in order (blocks until ready; raises the worker's error if reading failed)."""
        q = self.queues[self.next_batch % self.threads]
        start = time.perf_counter()
        while True:
            try:
                item = q.get(timeout=0.5)
                break
            except queue.Empty:
                if self.stop.is_set():
                    raise DataError("%s: data pipeline was closed" % self.what) from None
                if not any(w.is_alive() for w in self._workers):
                    raise DataError("%s: data threads died" % self.what) from None
        self.wait_seconds += time.perf_counter() - start
        if isinstance(item, Exception):
            self.close()
            if isinstance(item, CaffeError):
                raise item
            raise DataError("%s: reading %s failed: %s: %s" % (self.what, self.source.name, type(item).__name__, item))
        self.next_batch += 1
        return item

    def close(self):
        """Stop the threads and wait for them (bounded)."""
        self._join()
        self.parsers.shutdown(wait=False, cancel_futures=True)
        if not any(w.is_alive() for w in self._workers):
            self.source.close()

    def __del__(self):
        stop = getattr(self, "stop", None)   # absent when __init__ raised before the threads started
        if stop is not None:
            stop.set()


@atexit.register
def _close_all():
    for p in list(_live):
        p.stop.set()
