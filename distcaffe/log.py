"""Caffe/glog-shaped log lines (`I1121 19:34:33.123456 12345 solver.cpp:228] ...`).

Users parse logs with Caffe's own tools (tools/extra/parse_log.py), which read the glog prefix for
time and match the message text, so every message keeps Caffe's wording.
"""
import logging
import os
import sys
import time

_LEVEL_CHAR = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E", logging.CRITICAL: "F"}


class GlogFormatter(logging.Formatter):
    """Formats records as glog does: severity, MMDD, time with microseconds, pid, file:line]."""

    def format(self, record):
        t = time.localtime(record.created)
        usec = int((record.created - int(record.created)) * 1e6)
        where = "%s:%d" % (os.path.basename(record.pathname).replace(".py", ".cpp"), record.lineno)
        prefix = "%s%02d%02d %02d:%02d:%02d.%06d %5d %s] " % (
            _LEVEL_CHAR.get(record.levelno, "I"), t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
            usec, record.process, where)
        return prefix + record.getMessage()


_configured = False
# glog's GLOG_minloglevel: 0 INFO, 1 WARNING, 2 ERROR, 3 FATAL (`GLOG_minloglevel=2 distcaffe ...` as with Caffe)
_GLOG_LEVELS = {"0": logging.INFO, "1": logging.WARNING, "2": logging.ERROR, "3": logging.CRITICAL}


def get_logger(name="distcaffe"):
    """The framework logger; the first call installs the glog formatter on stderr (like glog)."""
    global _configured
    logger = logging.getLogger("distcaffe")
    if not _configured:
        _configured = True
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(GlogFormatter())
        logger.addHandler(handler)
        logger.setLevel(_GLOG_LEVELS.get(os.environ.get("GLOG_minloglevel", "0").strip(), logging.INFO))
        logger.propagate = False
    return logger if name == "distcaffe" else logger.getChild(name)


def set_quiet(quiet=True):
    """Silence INFO lines (e.g. on non-root ranks, like Caffe's root_solver checks)."""
    get_logger().setLevel(logging.WARNING if quiet else logging.INFO)
