"""Binary protobuf files: .caffemodel (NetParameter), .binaryproto (BlobProto), .solverstate, blob arrays.

Readers check that the bytes really are the expected message: protobuf decodes almost anything, so
unknown fields or a missing essential part are reported with what the file looks like instead.
"""
import numpy as np
from google.protobuf import message as _message
from google.protobuf import unknown_fields

from distcaffe.errors import ParseError
from distcaffe.io.files import read_bytes, write_atomic
from distcaffe.io.upgrade import upgrade_net_param
from distcaffe.proto import caffe_pb2 as pb

RESUME_FIELD = 1000  # SolverState field number of distcaffe's resume state (RNG, data positions), JSON bytes
_RAW_DTYPES = {pb.FLOAT16: np.float16, pb.FLOAT: np.float32, pb.DOUBLE: np.float64}


def _decode(data, message_class, path, kind):
    message = message_class()
    try:
        message.ParseFromString(data)
    except (_message.DecodeError, RuntimeError, ValueError) as e:
        looks = _looks_like(data)
        hint = "; it looks like %s" % looks if looks != "something else" else ""
        raise ParseError("%s: not a valid %s: truncated or corrupt (%s)%s" % (path, kind, e, hint)) from None
    return message


def _looks_like(data):
    """A short description of what protobuf bytes most plausibly hold, for error messages."""
    for cls, label in ((pb.NetParameter, "a .caffemodel (NetParameter)"),
                       (pb.SolverState, "a .solverstate (SolverState)"),
                       (pb.BlobProto, "a .binaryproto (BlobProto)")):
        msg = cls()
        try:
            msg.ParseFromString(data)
        except Exception:
            continue
        if len(unknown_fields.UnknownFieldSet(msg)):
            continue
        if cls is pb.NetParameter and (len(msg.layer) or len(msg.layers)):
            return "%s with %d layers" % (label, len(msg.layer) + len(msg.layers))
        if cls is pb.SolverState and msg.HasField("iter"):
            return "%s at iteration %d" % (label, msg.iter)
        if cls is pb.BlobProto and (len(msg.data) or len(msg.double_data) or msg.HasField("raw_data")):
            return label
    return "something else"


def _check_known(message, data, path, kind, allowed=()):
    if any(f.field_number not in allowed for f in unknown_fields.UnknownFieldSet(message)):
        raise ParseError("%s: not a %s; it looks like %s" % (path, kind, _looks_like(data)))


def _read_message(path, message_class, kind, allow_empty=False, allowed=()):
    """(message, raw bytes) of a binary file holding `message_class`; empty, undecodable or foreign files
    (fields the message does not have, other than `allowed` numbers) are one-line ParseErrors saying what the
    file looks like."""
    data = read_bytes(path)
    if not data and not allow_empty:
        raise ParseError("%s: is empty (expected a %s)" % (path, kind))
    message = _decode(data, message_class, path, kind)
    _check_known(message, data, path, kind, allowed)
    return message, data


def read_net_binary(path):
    """NetParameter from a binary .caffemodel, upgraded; blobs keep `shape` or num/channels/height/width as read."""
    kind = "binary NetParameter (.caffemodel)"
    net, data = _read_message(path, pb.NetParameter, kind, allow_empty=True)
    if not len(net.layer) and not len(net.layers):
        if not data:
            raise ParseError("%s: is empty (expected a %s)" % (path, kind))
        raise ParseError("%s: not a %s: it holds no layers; it looks like %s" % (path, kind, _looks_like(data)))
    return upgrade_net_param(net, str(path))


def write_net_binary(net_param, path):
    """Write a NetParameter as a binary .caffemodel, atomically."""
    write_atomic(path, net_param.SerializeToString())


def read_blobproto(path):
    """BlobProto from a .binaryproto file (e.g. a mean image)."""
    return _read_message(path, pb.BlobProto, "BlobProto (.binaryproto)")[0]


def write_blobproto(blobproto, path):
    """Write a BlobProto as .binaryproto, atomically."""
    write_atomic(path, blobproto.SerializeToString())


def read_solverstate(path):
    """SolverState from a binary .solverstate file (distcaffe's resume field allowed: `solverstate_resume`)."""
    kind = "SolverState (.solverstate)"
    state, data = _read_message(path, pb.SolverState, kind, allowed=(RESUME_FIELD,))
    if not state.HasField("iter"):
        raise ParseError("%s: not a %s: it has no iteration; it looks like %s" % (path, kind, _looks_like(data)))
    return state


def solverstate_resume(state):
    """The bytes distcaffe stored in a SolverState's resume field, or None (Caffe's own files)."""
    found = [f.data for f in unknown_fields.UnknownFieldSet(state) if f.field_number == RESUME_FIELD]
    return found[-1] if found and isinstance(found[-1], bytes) else None


def _varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def write_solverstate(state, path, resume=None):
    """Write a SolverState as .solverstate, atomically; `resume` bytes go in field RESUME_FIELD of the same file
    (a length-delimited field Caffe's SolverState does not define, so Caffe reads the file and skips it)."""
    data = state.SerializeToString()
    if resume is not None:
        data += _varint(RESUME_FIELD << 3 | 2) + _varint(len(resume)) + bytes(resume)
    write_atomic(path, data)


def blob_shape(bp):
    """Shape of a BlobProto: `shape` when set, else the legacy 4-D num/channels/height/width."""
    if bp.HasField("shape"):
        return tuple(int(d) for d in bp.shape.dim)
    if any(bp.HasField(f) for f in ("num", "channels", "height", "width")):
        return (bp.num, bp.channels, bp.height, bp.width)
    return None


def blobproto_to_array(bp, return_diff=False, where=None):
    """Numpy array of a BlobProto's data (or diff): float32 `data`, float64 `double_data`, or NVCaffe raw storage.
    `where` (a file, a layer) starts the message of a damaged blob."""
    kind = ("%s: blob %s" % (where, "diff" if return_diff else "data")) if where else \
        ("blob diff" if return_diff else "blob data")
    values, raw, raw_type = ((bp.diff, bp.double_diff), bp.raw_diff, bp.raw_diff_type) if return_diff \
        else ((bp.data, bp.double_data), bp.raw_data, bp.raw_data_type)
    if len(values[0]):
        arr = np.asarray(values[0], dtype=np.float32)
    elif len(values[1]):
        arr = np.asarray(values[1], dtype=np.float64)
    elif raw:
        if raw_type not in _RAW_DTYPES:
            raise ParseError("%s: unsupported raw storage type %s" % (kind, pb.Type.Name(raw_type)))
        arr = np.frombuffer(raw, dtype=np.dtype(_RAW_DTYPES[raw_type]).newbyteorder("<")).copy()
    else:
        arr = np.zeros(0, dtype=np.float32)
    shape = blob_shape(bp)
    if shape is None:
        return arr
    need = 1
    for d in shape:  # Python ints: absurd shapes must not wrap around to a matching count
        need *= d
    if need != arr.size or any(d < 0 for d in shape):
        raise ParseError("%s has %d values but its shape %s needs %d"
                         % (kind, arr.size, "x".join(map(str, shape)), need))
    return arr.reshape(shape)


def array_to_blobproto(arr, diff=None):
    """BlobProto holding `arr` (and optionally `diff`) as float32 `data` with an N-D `shape`."""
    arr = np.asarray(arr)
    bp = pb.BlobProto()
    bp.shape.dim.extend(int(d) for d in arr.shape)
    bp.data.extend(arr.astype(np.float32).ravel().tolist())
    if diff is not None:
        diff = np.asarray(diff)
        if diff.shape != arr.shape:
            raise ValueError("diff shape %s differs from data shape %s" % (diff.shape, arr.shape))
        bp.diff.extend(diff.astype(np.float32).ravel().tolist())
    return bp
