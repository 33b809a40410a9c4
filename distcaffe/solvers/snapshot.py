"""Snapshot files: `<prefix>_iter_<N>.caffemodel` + `.solverstate` (binary protos) or `.caffemodel.h5` +
`.solverstate.h5` (HDF5), and `<solverstate>.rng`, a JSON sidecar holding the framework RNG state (Caffe
ignores it; distcaffe restores it so a resumed run follows the same trajectory). Every file is written to a
temporary name and renamed; the solverstate is written after the weights it names.
"""
import json
import os

import numpy as np

from .. import backend
from ..blob import Blob
from ..errors import SolverError
from ..io import blobproto_to_array, read_solverstate, read_solverstate_hdf5, write_solverstate, \
    write_solverstate_hdf5
from ..io.files import read_bytes, write_atomic
from ..proto import caffe_pb2

RNG_SUFFIX = ".rng"


def snapshot_base(prefix, it, scores=()):
    """`<prefix>_iter_<N>`, plus NVCaffe's `_score<i>_<value>` per test score when given."""
    return "%s_iter_%d" % (prefix, it) + "".join("_score%d_%g" % (i, v) for i, v in enumerate(scores))


def history_to_proto(arr, old_format=False):
    """BlobProto of one history array (float32 `data`, `double_data` for DOUBLE, legacy 4-D if asked)."""
    host = backend.to_host(arr)
    blob = Blob(host.shape, dtype=np.float64 if host.dtype == np.float64 else np.float32)
    blob.data[...] = host
    return blob.to_proto(old_format=old_format)


def write_state(path, it, learned_net, current_step, history, hdf5=False, old_format=False):
    """Write the solver state (iteration, weights file name, lr step, history arrays) and the RNG sidecar."""
    if hdf5:
        write_solverstate_hdf5(path, it, learned_net, current_step, [backend.to_host(h) for h in history])
    else:
        state = caffe_pb2.SolverState(iter=it, learned_net=learned_net, current_step=current_step)
        for h in history:
            state.history.add().CopyFrom(history_to_proto(h, old_format))
        write_solverstate(state, path)
    write_atomic(path + RNG_SUFFIX, json.dumps(backend.rng().bit_generator.state).encode())


def read_state(path):
    """dict(iter, learned_net, current_step, history=[numpy arrays]) from a .solverstate or .solverstate.h5."""
    path = str(path)
    if path.endswith(".caffemodel") or path.endswith(".caffemodel.h5"):
        raise SolverError("%s: is a weights file (.caffemodel); -snapshot / restore needs the matching "
                          ".solverstate (use -weights to start from weights)" % path)
    if path.endswith(".h5"):
        return read_solverstate_hdf5(path)
    state = read_solverstate(path)
    return {"iter": state.iter, "learned_net": state.learned_net if state.HasField("learned_net") else "",
            "current_step": state.current_step, "history": [blobproto_to_array(h) for h in state.history]}


def resolve_learned_net(state_path, learned_net):
    """The weights file a solverstate names: as written (relative to the working directory, like Caffe), else
    beside the solverstate (snapshots moved together still restore)."""
    if os.path.exists(learned_net):
        return learned_net
    beside = os.path.join(os.path.dirname(os.path.abspath(state_path)), os.path.basename(learned_net))
    if os.path.exists(beside):
        return beside
    raise SolverError("%s: the weights file it names, '%s', does not exist (looked in the working directory and "
                      "beside the solverstate)" % (state_path, learned_net))


def restore_rng(state_path):
    """Load the RNG sidecar if present; returns whether it was found."""
    rng_path = str(state_path) + RNG_SUFFIX
    if not os.path.exists(rng_path):
        return False
    try:
        backend.rng().bit_generator.state = json.loads(read_bytes(rng_path).decode())
    except (ValueError, TypeError, KeyError) as e:
        raise SolverError("%s: not a distcaffe RNG state (%s)" % (rng_path, e)) from None
    return True
