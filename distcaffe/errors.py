"""User-facing errors: one clear line naming the file, layer or blob, never a deep traceback.

The CLI turns any CaffeError into `distcaffe: error: <message>` on stderr and exit code 2.
"""


class CaffeError(Exception):
    """Base of every error caused by bad user input (files, nets, solvers, data)."""


class ParseError(CaffeError):
    """A prototxt or binary file could not be read; message starts with `file[:line:col]:`."""


class NetError(CaffeError):
    """A net definition is invalid (unknown type, missing bottom, shape mismatch, ...)."""


class SolverError(CaffeError):
    """A solver definition or state is invalid, or training diverged."""


class DataError(CaffeError):
    """A data source (LMDB, image list, HDF5) is missing or holds a bad record."""



def resolved(path):
    """' (resolved: /abs/path)' for a relative `path`, '' for an absolute one: appended to a file error, so a
    user sees where a relative path was looked for (the working directory, as in Caffe)."""
    import os
    path = os.fspath(path)
    return "" if os.path.isabs(path) else " (resolved: %s)" % os.path.abspath(path)
