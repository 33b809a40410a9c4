"""Caffe's HDF5 snapshot layout (`snapshot_format: HDF5`): nets as data/<layer>/<i>, solver state as
iter / learned_net / current_step / history/<i>. h5py is optional; without it, a clear error."""
import os

import numpy as np

from distcaffe.errors import CaffeError, ParseError, resolved
from distcaffe.io.files import temporary_beside

RESUME_DATASET = "distcaffe_resume"  # distcaffe's resume state (RNG, data positions), JSON as uint8


def _h5py():
    try:
        import h5py
    except ImportError:
        raise CaffeError("HDF5 snapshots need h5py: pip install h5py") from None
    return h5py


def _open_read(path):
    h5py = _h5py()
    if not os.path.exists(path):
        raise ParseError("%s: No such file%s" % (path, resolved(path)))
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise ParseError("%s: not a readable HDF5 file (%s)" % (path, e)) from None


def _write_atomic_h5(path, fill):
    """Create an HDF5 file at a temporary name beside `path`, let `fill(f)` write it, then rename."""
    h5py = _h5py()
    fd, tmp = temporary_beside(path)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            fill(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_group(group):
    return {name: [np.asarray(group[name][str(i)]) for i in range(len(group[name]))] for name in group}


def read_net_hdf5(path):
    """Parameters of a Caffe HDF5 net snapshot: dict layer name -> list of arrays (group `data`)."""
    with _open_read(path) as f:
        if "data" not in f:
            raise ParseError("%s: not a Caffe HDF5 net (no 'data' group)" % path)
        return _read_group(f["data"])


def write_net_hdf5(path, layers, diffs=None):
    """Write [(layer name, [arrays])] as data/<layer>/<i> (and `diffs` as diff/<layer>/<i>), atomically."""
    def fill(f):
        for group_name, entries in (("data", layers), ("diff", diffs)):
            if entries is None:
                continue
            group = f.create_group(group_name)
            for name, arrays in entries:
                sub = group.create_group(name)
                for i, arr in enumerate(arrays):
                    sub.create_dataset(str(i), data=np.asarray(arr))
    _write_atomic_h5(path, fill)


def read_solverstate_hdf5(path):
    """Caffe HDF5 solver state: dict with iter, learned_net, current_step and history (list of arrays)."""
    with _open_read(path) as f:
        missing = [k for k in ("iter", "current_step", "history") if k not in f]
        if missing:
            raise ParseError("%s: not a Caffe HDF5 solver state (missing %s)" % (path, ", ".join(missing)))
        learned = f["learned_net"][()] if "learned_net" in f else b""
        history = f["history"]
        return {
            "iter": int(np.asarray(f["iter"]).ravel()[0]),
            "learned_net": learned.decode() if isinstance(learned, bytes) else str(learned),
            "current_step": int(np.asarray(f["current_step"]).ravel()[0]),
            "history": [np.asarray(history[str(i)]) for i in range(len(history))],
            "resume": bytes(np.asarray(f[RESUME_DATASET]).tobytes()) if RESUME_DATASET in f else None,
        }


def write_solverstate_hdf5(path, iter, learned_net, current_step, history_arrays, resume=None):
    """Write a Caffe HDF5 solver state, atomically; `resume` bytes in dataset RESUME_DATASET (Caffe ignores it)."""
    h5py = _h5py()

    def fill(f):
        if resume is not None:
            f.create_dataset(RESUME_DATASET, data=np.frombuffer(bytes(resume), dtype=np.uint8))
        f.create_dataset("iter", data=np.array([iter], dtype=np.int32))
        f.create_dataset("learned_net", data=learned_net, dtype=h5py.string_dtype())
        f.create_dataset("current_step", data=np.array([current_step], dtype=np.int32))
        group = f.create_group("history")
        for i, arr in enumerate(history_arrays):
            group.create_dataset(str(i), data=np.asarray(arr))
    _write_atomic_h5(path, fill)
