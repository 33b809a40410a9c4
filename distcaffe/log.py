"""Caffe/glog-shaped log lines (`I1121 19:34:33.123456 12345 solver.cpp:228] ...`), with glog's switches.

Users parse logs with Caffe's own tools (tools/extra/parse_log.py), which read the glog prefix for
time and match the message text, so every message keeps Caffe's wording. The environment variables Caffe
users set work as with glog: GLOG_minloglevel (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL) hides lower severities,
GLOG_log_dir=DIR also writes glog's `<program>.<host>.<user>.log.INFO.<date>-<time>.<pid>` file there (with
the `<program>.INFO` link to it), and GLOG_logtostderr=1 keeps everything on stderr only. Lines always go
to stderr too, as Caffe's tools run with --alsologtostderr.
"""
import datetime
import getpass
import logging
import os
import socket
import sys
import time

_LEVEL_CHAR = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E", logging.CRITICAL: "F"}
_GLOG_LEVELS = (logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)


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
_flags = {"minloglevel": 0, "quiet": False}


def _env_int(name, default):
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _min_level():
    """The logger level from GLOG_minloglevel (or init_log's level), raised to WARNING on quiet ranks."""
    level = _GLOG_LEVELS[max(0, min(3, _flags["minloglevel"]))]
    return max(level, logging.WARNING) if _flags["quiet"] else level


def _file_handler(log_dir):
    """glog's INFO log file in `log_dir` plus the `<program>.INFO` symlink to it; None when it cannot be made."""
    program = os.path.basename(sys.argv[0] or "python") or "python"
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = "%s.%s.%s.log.INFO.%s.%d" % (program, socket.gethostname(), getpass.getuser(), stamp, os.getpid())
    try:
        os.makedirs(log_dir, exist_ok=True)
        handler = logging.FileHandler(os.path.join(log_dir, name))
    except OSError as e:
        sys.stderr.write("distcaffe: warning: GLOG_log_dir=%s: cannot write log file (%s)\n" % (log_dir, e))
        return None
    link = os.path.join(log_dir, program + ".INFO")
    try:  # the newest process' file, as glog does; ranks sharing the folder race for it harmlessly
        if os.path.islink(link):
            os.remove(link)
        os.symlink(name, link)
    except OSError:
        pass
    return handler


def _configure(logger):
    _flags["minloglevel"] = _env_int("GLOG_minloglevel", 0)
    handlers = [logging.StreamHandler(sys.stderr)]
    log_dir = os.environ.get("GLOG_log_dir")
    if log_dir and _env_int("GLOG_logtostderr", 0) == 0:
        handlers.append(_file_handler(log_dir))
    for handler in filter(None, handlers):
        handler.setFormatter(GlogFormatter())
        logger.addHandler(handler)
    logger.setLevel(_min_level())
    logger.propagate = False


def get_logger(name="distcaffe"):
    """The framework logger; the first call installs the glog formatter on stderr (like glog)."""
    global _configured
    logger = logging.getLogger("distcaffe")
    if not _configured:
        _configured = True
        _configure(logger)
    return logger if name == "distcaffe" else logger.getChild(name)


def set_quiet(quiet=True):
    """Silence INFO lines (e.g. on non-root ranks, like Caffe's root_solver checks)."""
    _flags["quiet"] = quiet
    get_logger().setLevel(_min_level())


def init_log(level=None, stderr=None):
    """pycaffe's caffe.init_log([minloglevel[, logtostderr]]): set glog's minimum level (and, with
    `stderr` true, drop the GLOG_log_dir file so everything stays on stderr)."""
    logger = get_logger()
    if level is not None:
        _flags["minloglevel"] = int(level)
    if stderr:
        for handler in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
            logger.removeHandler(handler)
            handler.close()
    logger.setLevel(_min_level())


def log(message):
    """pycaffe's caffe.log: one INFO line (Caffe's LOG(INFO) << message)."""
    get_logger("pycaffe").info("%s", message)
