"""Host-memory cache of decoded records (NVCaffe's `cache: true`), given up when they would not fit."""
import threading

import psutil

from ..log import get_logger

log = get_logger("data")
_FRACTION = 0.5            # use at most half of the memory available when the cache is sized


class RecordCache:
    """Maps record index -> (array, label); decides from the first record whether all of them fit."""

    def __init__(self, count, what):
        self.count = count
        self.what = what
        self.enabled = True
        self.items = {}
        self._lock = threading.Lock()

    def get(self, index):
        return self.items.get(index)

    def put(self, index, record):
        if not self.enabled:
            return
        with self._lock:
            if not self.items:
                need = record[0].nbytes * self.count
                avail = psutil.virtual_memory().available
                if need > _FRACTION * avail:
                    self.enabled = False
                    log.warning("%s: cache disabled: %d records need ~%.1f MB, only %.1f MB of memory available; "
                                "reading from the source every epoch", self.what, self.count, need / 1e6, avail / 1e6)
                    return
            self.items[index] = record

    def full(self):
        return self.enabled and len(self.items) == self.count
