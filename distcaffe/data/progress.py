"""A plain text progress bar on stderr for the data tools (no dependency): `[#####.....] 512/1000 files`."""
import sys
import time


class ProgressBar:
    """Redraws at most 10 times a second; `finish()` prints the final state and a newline. As a context manager
    it finishes on exit, and after an error ends the half-drawn line, so the error line starts on its own."""

    def __init__(self, total, unit="records", stream=None, width=30):
        self.total, self.unit, self.width = int(total), unit, width
        self.stream = stream or sys.stderr
        self.done = 0
        self._last = 0.0

    def update(self, n=1):
        self.done += n
        now = time.monotonic()
        if now - self._last >= 0.1:
            self._last = now
            self._draw()

    def _draw(self):
        frac = self.done / self.total if self.total else 1.0
        fill = int(round(frac * self.width))
        bar = "#" * fill + "." * (self.width - fill)
        self.stream.write("\r[%s] %d/%d %s" % (bar, self.done, self.total, self.unit))
        self.stream.flush()

    def finish(self):
        self._draw()
        self.stream.write("\n")
        self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.finish()
        elif self._last:
            self.stream.write("\n")
            self.stream.flush()
