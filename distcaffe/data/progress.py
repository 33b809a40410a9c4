"""Progress of the data tools, mean computation and long test passes: a tqdm bar (count, rate, ETA) on a
terminal; into a file or pipe no `\\r` frames, only one summary line at the end."""
import sys
import time

from tqdm import tqdm


class ProgressBar:
    """`update(n)` as work is done, `finish()` at the end; `total` may be None when unknown."""

    def __init__(self, total, unit="records", stream=None, desc=None):
        self.stream = stream or sys.stderr
        self.unit, self.desc, self.done = unit, desc, 0
        self._start = time.monotonic()
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._bar = tqdm(total=total, unit=" " + unit, desc=desc, file=self.stream, disable=not tty,
                         mininterval=0.2, dynamic_ncols=True, leave=True)

    def update(self, n=1):
        self.done += n
        self._bar.update(n)

    def finish(self):
        """Close the bar; off a terminal, print `desc: N unit in Ts (R unit/s)` once."""
        disabled = self._bar.disable
        self._bar.close()
        if disabled:
            seconds = time.monotonic() - self._start
            self.stream.write("%s%d %s in %.1fs (%.1f %s/s)\n" % ("%s: " % self.desc if self.desc else "", self.done,
                                                                 self.unit, seconds,
                                                                 self.done / seconds if seconds > 0 else 0.0,
                                                                 self.unit))
            self.stream.flush()
