"""The device pool of Large Model Support: one arena of `capacity` bytes that managed arrays share.

Chunks are carved first-fit at 256-byte alignment (cudaMalloc's); a free merges with its neighbours. Every
allocation is checked against the byte budget, which also holds back the current step's workspace reservation
(layer temporaries: im2col columns, BN's normalized input...). `used`/`peak` are the accounted device bytes.
A freed chunk whose last copy may still be in flight keeps a fence (the copy's event) that compute must wait
for before it writes there again.
"""
ALIGN = 256


def aligned(nbytes):
    return (int(nbytes) + ALIGN - 1) // ALIGN * ALIGN


class DevicePool:
    """Offsets into one arena; no data lives here (the mover owns the arena's memory)."""

    def __init__(self, capacity):
        self.capacity = int(capacity) // ALIGN * ALIGN
        self.free_list = [(0, self.capacity)] if self.capacity else []   # sorted (offset, size)
        self.used = 0
        self.reserved = 0          # workspace held back for the running step
        self.peak = 0
        self.fences = []           # (start, end, event) of freed chunks with a copy possibly in flight

    def accounted(self):
        return self.used + self.reserved

    def fits(self, nbytes):
        """True when `nbytes` fit the budget and a free run (no eviction needed)."""
        n = aligned(nbytes)
        if self.used + n + self.reserved > self.capacity:
            return False
        return any(size >= n for _, size in self.free_list)

    def alloc(self, nbytes):
        """Offset of a new chunk, or None when the budget or the free runs do not allow it."""
        n = aligned(nbytes)
        if self.used + n + self.reserved > self.capacity:
            return None
        for k, (off, size) in enumerate(self.free_list):
            if size >= n:
                if size == n:
                    del self.free_list[k]
                else:
                    self.free_list[k] = (off + n, size - n)
                self.used += n
                self.peak = max(self.peak, self.accounted())
                return off
        return None

    def free(self, off, nbytes, event=None):
        n = aligned(nbytes)
        self.used -= n
        if event is not None:
            self.fences.append((off, off + n, event))
        fl = self.free_list
        lo, hi = 0, len(fl)
        while lo < hi:
            mid = (lo + hi) // 2
            if fl[mid][0] < off:
                lo = mid + 1
            else:
                hi = mid
        fl.insert(lo, (off, n))
        if lo + 1 < len(fl) and fl[lo][0] + fl[lo][1] == fl[lo + 1][0]:
            fl[lo] = (off, fl[lo][1] + fl[lo + 1][1])
            del fl[lo + 1]
        if lo > 0 and fl[lo - 1][0] + fl[lo - 1][1] == fl[lo][0]:
            fl[lo - 1] = (fl[lo - 1][0], fl[lo - 1][1] + fl[lo][1])
            del fl[lo]

    def reserve(self, nbytes):
        """Hold back `nbytes` for the running step's temporaries (False when they do not fit now)."""
        if self.used + nbytes > self.capacity:
            return False
        self.reserved = int(nbytes)
        self.peak = max(self.peak, self.accounted())
        return True

    def fences_over(self, off, nbytes, done):
        """Events of in-flight copies overlapping [off, off+nbytes); completed fences are dropped."""
        self.fences = [f for f in self.fences if not done(f[2])]
        end = off + aligned(nbytes)
        return [ev for s, e, ev in self.fences if s < end and off < e]
