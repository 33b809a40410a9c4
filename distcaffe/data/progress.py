"""Progress of the data tools, mean computation and long test passes: a tqdm bar (count, rate, ETA) on a
terminal; into a file or pipe no `\\r` frames, only one summary line at the end."""
import sys
import time

from tqdm import tqdm


class ProgressBar:
    """`update(n)` as work is done, `finish()` at the end; `total` may be None when unknown. `summary=False`:
    nothing at all off a terminal (a test pass inside a training log); the bar then also vanishes when done."""

    def __init__(self, total, unit="records", stream=None, desc=None, summary=True):
        self.stream = stream or sys.stderr
        self.unit, self.desc, self.done, self.summary = unit, desc, 0, summary
        self._start = time.monotonic()
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._bar = tqdm(total=total, unit=" " + unit, desc=desc, file=self.stream, disable=not tty,
                         mininterval=0.2, dynamic_ncols=True, leave=summary)

    def update(self, n=1):
        self.done += n
        self._bar.update(n)

    def finish(self):
        """Close the bar; off a terminal, print `desc: N unit in Ts (R unit/s)` once."""
        disabled = self._bar.disable
        self._bar.close()
        if disabled and self.summary:
            seconds = time.monotonic() - self._start
            self.stream.write("%s%d %s in %.1fs (%.1f %s/s)\n" % ("%s: " % self.desc if self.desc else "", self.done,
                                                                 self.unit, seconds,
                                                                 self.done / seconds if seconds > 0 else 0.0,
                                                                 self.unit))
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        """Finish on success; after an error only close the bar, so the error starts on a line of its own."""
        if exc_type is None:
            self.finish()
        else:
            self._bar.close()
