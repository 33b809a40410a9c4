"""Caffe's SignalHandler: SIGINT/SIGHUP become solver actions (`stop`, `snapshot`, `none`); SIGTERM (what batch
schedulers send at walltime) always means snapshot, then stop cleanly.

Handlers only set a flag; the solver polls `requested_action()` between iterations, as Caffe's
GetRequestedAction does, so a snapshot is never taken in the middle of an update.
"""
import signal
import threading

from ..errors import CaffeError

NONE, STOP, SNAPSHOT, SNAPSHOT_STOP = "none", "stop", "snapshot", "snapshot_stop"
EFFECTS = (STOP, SNAPSHOT, NONE)


def check_effect(name, value):
    if value not in EFFECTS:
        raise CaffeError("-%s must be one of stop, snapshot, none (got '%s')" % (name, value))
    return value


class SignalHandler:
    """Installs handlers on enter, restores the previous ones on exit (main thread only; elsewhere a no-op)."""

    def __init__(self, sigint_effect=STOP, sighup_effect=SNAPSHOT):
        self.effects = {signal.SIGINT: check_effect("sigint_effect", sigint_effect),
                        signal.SIGTERM: SNAPSHOT_STOP}
        if hasattr(signal, "SIGHUP"):
            self.effects[signal.SIGHUP] = check_effect("sighup_effect", sighup_effect)
        self._pending = []
        self._old = {}

    def _handle(self, signum, frame):
        self._pending.append(self.effects[signum])

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.effects:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def requested_action(self):
        """The strongest pending action since the last call: snapshot_stop > stop/snapshot > none."""
        pending, self._pending = self._pending, []
        if SNAPSHOT_STOP in pending or (STOP in pending and SNAPSHOT in pending):
            return SNAPSHOT_STOP
        if STOP in pending:
            return STOP
        if SNAPSHOT in pending:
            return SNAPSHOT
        return NONE
