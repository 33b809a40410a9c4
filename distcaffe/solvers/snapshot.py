"""Snapshot files: `<prefix>_iter_<N>.caffemodel` + `.solverstate` (binary protos) or `.caffemodel.h5` +
`.solverstate.h5` (HDF5). The weights are written first, then the solverstate, which names them and also holds
distcaffe's resume state: every rank's RNG and data readers' stream positions (JSON in a field Caffe skips, or
an extra HDF5 dataset). So the solverstate alone commits a snapshot, and a resume is the uninterrupted run.
Every file is written to a hidden temporary name and renamed.
"""
import glob
import json
import os

import numpy as np

from .. import backend
from ..blob import Blob
from ..errors import SolverError
from ..io import blobproto_to_array, read_solverstate, read_solverstate_hdf5, solverstate_resume, \
    write_solverstate, write_solverstate_hdf5
from ..log import get_logger
from ..proto import caffe_pb2

log = get_logger("solver")
RESUME_FORMAT = 1


def snapshot_base(prefix, it, scores=()):
    """`<prefix>_iter_<N>`, plus NVCaffe's `_score<i>_<value>` per test score when given."""
    return "%s_iter_%d" % (prefix, it) + "".join("_score%d_%g" % (i, v) for i, v in enumerate(scores))


def stale_temporaries(prefix):
    """Hidden temporary files of interrupted snapshot writes of `prefix` (io.files.write_atomic's names)."""
    d, stem = os.path.split(os.path.abspath(prefix + "_"))
    return glob.glob(os.path.join(glob.escape(d), ".%siter_*.tmp" % glob.escape(stem)))


def history_to_proto(arr, old_format=False):
    """BlobProto of one history array (float32 `data`, `double_data` for DOUBLE, legacy 4-D if asked)."""
    host = backend.to_host(arr)
    blob = Blob(host.shape, dtype=np.float64 if host.dtype == np.float64 else np.float32)
    blob.data[...] = host
    return blob.to_proto(old_format=old_format)


def _data_layers(net):
    return [layer for layer in net.layers if hasattr(layer, "data_state")]


def process_state(nets):
    """This process's resume state: the framework RNG and, per net (`{tag: Net}`), each data layer's position."""
    return {"rng": backend.rng().bit_generator.state,
            "data": {tag: {layer.name: layer.data_state() for layer in _data_layers(net)} for tag, net in nets.items()}}


def write_state(path, it, learned_net, current_step, history, ranks, hdf5=False, old_format=False):
    """Write the solver state (iteration, weights file name, lr step, history arrays) with the resume state of
    every rank (`ranks`: process_state() of each, by rank) inside the same file."""
    resume = json.dumps({"format": RESUME_FORMAT, "iter": it, "ranks": ranks}).encode()
    if hdf5:
        write_solverstate_hdf5(path, it, learned_net, current_step, [backend.to_host(h) for h in history], resume)
        return
    state = caffe_pb2.SolverState(iter=it, learned_net=learned_net, current_step=current_step)
    for h in history:
        state.history.add().CopyFrom(history_to_proto(h, old_format))
    write_solverstate(state, path, resume)


def read_state(path):
    """dict(iter, learned_net, current_step, history=[numpy arrays], resume=dict or None) of a .solverstate or
    .solverstate.h5."""
    path = str(path)
    if path.endswith(".caffemodel") or path.endswith(".caffemodel.h5"):
        raise SolverError("%s: is a weights file (.caffemodel); -snapshot / restore needs the matching "
                          ".solverstate (use -weights to start from weights)" % path)
    if path.endswith(".h5"):
        out = read_solverstate_hdf5(path)
    else:
        state = read_solverstate(path)
        out = {"iter": state.iter, "learned_net": state.learned_net if state.HasField("learned_net") else "",
               "current_step": state.current_step,
               "history": [blobproto_to_array(h, where="%s: history %d" % (path, i)) for i, h in enumerate(state.history)],
               "resume": solverstate_resume(state)}
    if out["iter"] < 0 or out["current_step"] < 0:
        raise SolverError("%s: iteration %d, lr step %d: a solver state never has negative counts (damaged file?)"
                          % (path, out["iter"], out["current_step"]))
    out["resume"] = _parse_resume(path, out["resume"], out["iter"])
    return out


def _parse_resume(path, raw, it):
    if raw is None:
        return None
    try:
        resume = json.loads(bytes(raw).decode())
        ok = resume.get("format") == RESUME_FORMAT and resume.get("iter") == it and isinstance(resume["ranks"], list)
    except (ValueError, AttributeError, KeyError, TypeError):
        ok = False
    if not ok:
        raise SolverError("%s: its distcaffe resume state is damaged (not format %d JSON for iteration %d)"
                          % (path, RESUME_FORMAT, it))
    return resume


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


def restore_process_state(path, resume, nets, rank, world):
    """Put back this rank's RNG and data positions from a read_state()'s `resume`; returns whether it could.
    When it cannot, warns loudly: training goes on, but not on the uninterrupted trajectory."""
    if resume is None:
        log.warning("WARNING: %s holds no distcaffe resume state (a Caffe snapshot, or a damaged copy): the RNG "
                    "and data readers start afresh, so this run will NOT follow the trajectory of an uninterrupted "
                    "one", path)
        return False
    ranks = resume["ranks"]
    if len(ranks) != world:
        log.warning("WARNING: %s was written by a job of %d ranks, this one has %d: data shards differ, so the RNG "
                    "and data positions are not restored and training will NOT follow the uninterrupted trajectory",
                    path, len(ranks), world)
        return False
    mine = ranks[rank]
    try:
        backend.rng().bit_generator.state = mine["rng"]
    except (ValueError, TypeError, KeyError) as e:
        raise SolverError("%s: rank %d's RNG state is damaged (%s)" % (path, rank, e)) from None
    for tag, net in nets.items():
        saved = mine["data"].get(tag, {})
        for layer in _data_layers(net):
            if layer.name in saved:
                try:
                    layer.restore_data_state(saved[layer.name])
                except (KeyError, TypeError, ValueError) as e:
                    raise SolverError("%s: the position of data layer '%s' is damaged (%s)"
                                      % (path, layer.name, e)) from None
            else:
                log.warning("WARNING: %s has no position for data layer '%s' of the %s net: it reads from its "
                            "start", path, layer.name, tag)
    return True
