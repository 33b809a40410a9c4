"""pycaffe's caffe.Timer (Caffe's Timer): `start()`, `stop()`, and `ms`, the milliseconds between them.

As in Caffe, each start() begins a new measurement, reading `ms` while running stops the timer first, and in
GPU mode the device is synchronized at both ends so queued kernels are counted.
"""
import time

from . import backend
from .log import get_logger


class Timer:
    """Wall-clock timer with Caffe's semantics."""

    def __init__(self):
        self._start = self._stop = None

    @staticmethod
    def _now():
        if backend.is_gpu():
            backend.cupy().cuda.Device().synchronize()
        return time.perf_counter()

    @property
    def running(self):
        return self._start is not None and self._stop is None

    def start(self):
        if not self.running:
            self._start, self._stop = self._now(), None

    def stop(self):
        if self.running:
            self._stop = self._now()

    @property
    def ms(self):
        if self._start is None:
            get_logger().warning("Timer has never been run before reading time.")
            return 0.0
        self.stop()
        return (self._stop - self._start) * 1e3

    @property
    def seconds(self):
        return self.ms / 1e3
