"""The Large Model Support manager: device memory as a cache of host memory, under a byte budget.

Every managed array keeps a persistent host buffer; its device copy lives in a chunk of the pool only while a
step needs it. `begin(step)` pins the step's arrays (fetching what is not resident, waiting on the copies'
events), holds back the step's workspace, then prefetches what the next steps read as far ahead as the budget
allows without evicting anything needed sooner. Space is made by evicting the unpinned array used furthest in
the future: written back if modified and read later, dropped otherwise. Arrays at or under the threshold stay
resident once fetched (IBM's `-lms N`). The first pass is recorded; its steps become the cycle the policy
plans with, and `predict()` replays the cycle with a DryMover to say what the next iterations will copy
(`copies()` says what they did).
"""
from ..errors import CaffeError
from .pool import DevicePool, aligned
from .schedule import INF, Cycle, Step
from .streams import DryMover


class Entry:
    """One managed array: its size and type, host buffer, and where its device copy is."""

    __slots__ = ("id", "name", "size", "dtype", "nbytes", "small", "keep", "host", "off", "dev", "dirty", "stale",
                 "ev", "pin", "last", "on_resident", "on_evict")

    def __init__(self, eid, name, size, dtype, small, keep):
        self.id, self.name, self.size, self.dtype = eid, name, int(size), dtype
        self.nbytes = self.size * dtype.itemsize
        self.small, self.keep = small, keep
        self.host = self.dev = self.off = self.ev = None
        self.dirty = self.stale = False
        self.pin = self.last = -1
        self.on_resident = self.on_evict = None

    def clone(self):
        e = Entry(self.id, self.name, self.size, self.dtype, self.small, self.keep)
        e.off, e.dirty, e.stale, e.last = self.off, self.dirty, self.stale, self.last
        return e


def _per_cycle(steps, n):
    """Sum per-step copy counts over consecutive runs of `n` steps."""
    return [{k: sum(c[k] for c in steps[i:i + n]) for k in steps[0]} for i in range(0, len(steps), n)]


class _Fragmented(Exception):
    """The budget holds a step's arrays, but no free run is long enough: re-place them."""


class Manager:
    """Residency, pinning, eviction and prefetch of managed arrays within one device pool."""

    def __init__(self, budget, threshold, mover, prefetch=True, lookahead=8):
        self.pool = DevicePool(budget)
        self.budget = self.pool.capacity
        self.threshold = threshold
        self.mover = mover
        self.prefetch = prefetch
        self.lookahead = lookahead
        self.entries = []
        self.serial = 0            # increments at every step boundary; a pin lasts while it is unchanged
        self.current = None        # the running Step
        self.recording = []        # steps of the first pass, until its first key comes round again
        self.cycle = None
        self.pos = None
        self.step_copies = []      # copy counts of each step run (from its begin to the next begin)
        self._mark = dict(mover.counts)

    # --- entries ---------------------------------------------------------------------------------
    def add(self, name, size, dtype, keep=False):
        e = Entry(len(self.entries), name, size, dtype, size * dtype.itemsize <= self.threshold, keep)
        e.host = self.mover.host_buffer(e.size, dtype)
        self.entries.append(e)
        return e

    def resident_bytes(self):
        return sum(aligned(e.nbytes) for e in self.entries if e.small)

    # --- steps -----------------------------------------------------------------------------------
    def begin(self, key, label, workspace=0, overwrites=(), expected=None):
        """Start a step: pin its arrays (`expected` {entry id: mode} until the first pass has been recorded),
        hold back its workspace, prefetch for the next steps."""
        self.serial += 1
        self._close_step()
        step = Step(key, label, workspace, overwrites)
        if self.cycle is None:
            if self.recording and key == self.recording[0].key:
                self._close_cycle()
            else:
                self.recording.append(step)
        if self.cycle is not None:
            pos = self.cycle.locate(key, self.pos)
            if pos is None:                  # a step the cycle never had: the pattern changed, record anew
                self.cycle, self.recording, self.pos = None, [step], None
            self.pos = pos
        self.current = step
        planned = self.cycle.steps[self.pos] if self.cycle is not None and self.pos is not None else None
        if planned is not None:
            uses = planned.uses
        else:                                # recording: a dropped array is left to its first access
            uses = {eid: m for eid, m in (expected or {}).items() if not self.entries[eid].stale}
        self._pin_step(uses, workspace, label)
        if planned is not None and self.prefetch:
            self._prefetch()

    def end(self):
        self.pool.reserved = 0
        self.current = None
        self.serial += 1

    def _close_cycle(self):
        self.cycle = Cycle(self.recording)
        self.recording = None

    def _since_mark(self):
        return {k: v - self._mark[k] for k, v in self.mover.counts.items()}

    def _close_step(self):
        if self.serial > 1:
            self.step_copies.append(self._since_mark())
        self._mark = dict(self.mover.counts)

    def copies(self, iterations=1):
        """Copy counts of the last `iterations` cycles of steps run, one dict per cycle (oldest first)."""
        steps = self.step_copies + [self._since_mark()]
        return _per_cycle(steps[len(steps) - iterations * self.cycle.n:], self.cycle.n)

    def _reserve(self, nbytes, label):
        while not self.pool.reserve(nbytes):
            if not self._evict_one(INF):
                raise CaffeError("Large Model Support: %s needs %d bytes of workspace, %d bytes of the %d-byte budget "
                                 "are pinned" % (label, nbytes, self.pool.used, self.budget))

    # --- access from SyncedArray -------------------------------------------------------------------
    def access(self, e, write):
        """The device copy of an entry for the running code (fetched on demand when not planned)."""
        if self.current is not None and self.recording is not None:
            self.current.record(e.id, write)
        if e.off is None:
            if e.stale and not write:
                raise CaffeError("Large Model Support: %s was dropped (its value was not needed later) but %s reads "
                                 "it" % (e.name, self.current.label if self.current else "code outside any layer"))
            overwrite = write and self.current is not None and e.id in self.current.overwrites
            self._make_resident(e, copy=not (e.stale or overwrite),
                                label=self.current.label if self.current else e.name)
        if e.ev is not None:
            self.mover.compute_wait(e.ev)
            e.ev = None
        e.pin = self.serial
        e.last = self.serial
        if write:
            e.dirty, e.stale = True, False
        return e.dev

    def host(self, e, write):
        """The host buffer, current (written back first when the device copy is newer). Writing it (pycaffe,
        data layers) makes the device copy obsolete: its chunk is freed, the next device use copies in."""
        if e.stale and write:
            e.stale = False
        if e.stale:
            raise CaffeError("Large Model Support dropped %s (its value was not needed later in the pass); run "
                             "without LMS, or read it before the pass moves on" % e.name)
        if e.dirty:
            self.mover.side_after_compute()
            e.ev = self.mover.d2h(e.host, e.dev, e.nbytes)
            e.dirty = False
        self.mover.synchronize(e.ev)
        e.ev = None
        if write and e.off is not None:
            self._release(e)
        return e.host

    # --- residency ---------------------------------------------------------------------------------
    def _pin_step(self, uses, workspace, label):
        """Pin a step's arrays, largest first; if the free space is too fragmented, move them (no view of
        them has been handed out yet) together with the small residents, and place them again."""
        order = sorted(uses, key=lambda eid: (-self.entries[eid].nbytes, eid))
        for eid in order:
            self.entries[eid].pin = self.serial          # none of them may make room for another
        try:
            for eid in order:
                self._pin(self.entries[eid], uses[eid], label)
            self._reserve(workspace, label)
        except _Fragmented:
            for e in self.entries:
                if e.off is not None and (e.pin == self.serial or e.small):
                    self._evict(e, needed=uses.get(e.id, "r") != "o")
            for eid in order:
                self._pin(self.entries[eid], uses[eid], label, fragmented_ok=False)
            self._reserve(workspace, label)

    def _pin(self, e, mode, label, fragmented_ok=True):
        if e.off is None:
            if e.stale and mode != "o":
                raise CaffeError("Large Model Support: %s was dropped, but %s reads it (the schedule expected an "
                                 "overwrite)" % (e.name, label))
            self._make_resident(e, copy=(mode != "o" and not e.stale), label=label, repack=fragmented_ok)
        if mode != "o" and e.ev is not None:
            self.mover.compute_wait(e.ev)
            e.ev = None
        e.pin = self.serial

    def _make_resident(self, e, copy, label, horizon=INF, repack=False):
        off = self.pool.alloc(e.nbytes)
        while off is None:
            if not self._evict_one(horizon):
                if horizon < INF:
                    return False
                if repack and self.pool.used + aligned(e.nbytes) + self.pool.reserved <= self.pool.capacity:
                    raise _Fragmented()
                raise CaffeError("Large Model Support: %s needs %d bytes for %s, but only %d of the %d-byte budget "
                                 "are free and everything else is pinned by this step"
                                 % (label, e.nbytes, e.name, self.budget - self.pool.accounted(), self.budget))
            off = self.pool.alloc(e.nbytes)
        e.off = off
        e.dev = self.mover.view(off, e.size, e.dtype)
        fences = self.pool.fences_over(off, e.nbytes, self.mover.done)
        if copy:
            self.mover.side_after_compute()
            e.ev = self.mover.h2d(e.dev, e.host, e.nbytes)
        else:
            for ev in fences:
                self.mover.compute_wait(ev)
        if e.on_resident is not None:
            e.on_resident(e)
        return True

    def _distance(self, e):
        if self.cycle is None or self.pos is None:
            return -e.last          # recording: least recently used first
        return self.cycle.next_use(e.id, self.pos)[0]

    def _evict_one(self, horizon):
        """Evict the unpinned resident array used furthest ahead (only beyond `horizon`); False if none."""
        best, best_d = None, None
        for e in self.entries:
            if e.off is None or e.small or e.pin == self.serial:
                continue
            d = self._distance(e)
            if d <= horizon and horizon < INF:
                continue
            if best is None or d > best_d:
                best, best_d = e, d
        if best is None:
            return False
        self._evict(best)
        return True

    def _needed_later(self, e):
        if e.keep or self.cycle is None or self.pos is None:
            return True
        return self.cycle.next_use(e.id, self.pos)[1] not in ("o", None)

    def _evict(self, e, needed=None):
        if e.dirty:
            if needed or (needed is None and self._needed_later(e)):
                self.mover.side_after_compute()
                e.ev = self.mover.d2h(e.host, e.dev, e.nbytes)
            else:
                e.stale = True
            e.dirty = False
        self._release(e)

    def _release(self, e):
        self.pool.free(e.off, e.nbytes, None if self.mover.done(e.ev) else e.ev)
        e.off = e.dev = None
        if e.on_evict is not None:
            e.on_evict(e)

    def _prefetch(self):
        """Copy in what the next steps read, nearest first, while the budget allows without evicting
        anything needed before that step."""
        cyc = self.cycle
        for d in range(1, min(self.lookahead, cyc.n - 1) + 1):
            step = cyc.steps[(self.pos + d) % cyc.n]
            for eid in sorted(step.uses):
                e = self.entries[eid]
                if e.off is not None or e.stale or step.uses[eid] == "o":
                    continue
                if not self._make_resident(e, copy=True, label=step.label, horizon=d):
                    return

    # --- prediction ----------------------------------------------------------------------------------
    def predict(self, iterations=1):
        """Copy counts of the next `iterations` cycles from the present state, by the same policy (DryMover)."""
        if self.cycle is None:
            raise CaffeError("Large Model Support: no schedule yet (run one pass first)")
        dry = Manager(self.budget, self.threshold, DryMover(), self.prefetch, self.lookahead)
        dry.entries = [e.clone() for e in self.entries]
        dry.pool.free_list = list(self.pool.free_list)
        dry.pool.used = self.pool.used
        dry.cycle, dry.recording, dry.pos = self.cycle, None, self.pos
        n = self.cycle.n
        start = 0 if self.pos is None else self.pos + 1
        for k in range(iterations * n):
            st = self.cycle.steps[(start + k) % n]
            dry.begin(st.key, st.label, st.workspace)
            for eid, mode in st.uses.items():
                if mode != "r":
                    e = dry.entries[eid]
                    e.dirty, e.stale = True, False
            dry.end()
        return _per_cycle(dry.step_copies + [dry._since_mark()], n)

    def stats(self):
        c = self.mover.counts
        return {"budget": self.budget, "peak": self.pool.peak, "resident_bytes": self.resident_bytes(),
                "managed": sum(1 for e in self.entries if not e.small),
                "resident": sum(1 for e in self.entries if e.small), **c}
