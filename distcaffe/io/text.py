"""Text prototxt reading (with file:line:col errors and format upgrades) and writing."""
import re

from google.protobuf import text_format

from distcaffe.errors import ParseError
from distcaffe.io import text_parser
from distcaffe.io.files import read_bytes, write_atomic
from distcaffe.io.upgrade import upgrade_net_param, upgrade_solver_param
from distcaffe.proto import caffe_pb2 as pb

_LOCATION = re.compile(r"^\s*(\d+):(\d+)\s*:\s*")
_MAX_MESSAGE = 300
_BLANK = re.compile(r"\s*+(?:#[^\n]*+\s*+)*+\Z")   # nothing but whitespace and comments


def parse_text(text, message_class, filename="<string>", what=None):
    """Parse prototxt `text` into a new `message_class`; errors are one line `file:line:col: message`."""
    what = what or message_class.__name__
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ParseError("%s: not a text prototxt (byte %d is not UTF-8; is it a binary file?)"
                             % (filename, e.start)) from None
    if _BLANK.match(text):
        raise ParseError("%s: is empty (expected a %s)" % (filename, what))
    message = message_class()
    if not text_parser.parse(text, message):  # declined: text_format parses (and words any error) itself
        message = message_class()
        _text_format_parse(text, message, filename)
    if not message.IsInitialized():                # `required` fields (ClipParameter.min/max, TRTParameter.*)
        raise ParseError("%s: %s is missing required fields: %s"
                         % (filename, what, ", ".join(message.FindInitializationErrors())))
    return message


def _text_format_parse(text, message, filename):
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        msg = " ".join(_LOCATION.sub("", str(e)).split())
        if len(msg) > _MAX_MESSAGE:  # a token of a damaged file can be megabytes long
            msg = msg[:_MAX_MESSAGE] + "... (%d more characters)" % (len(msg) - _MAX_MESSAGE)
        line, col = e.GetLine(), e.GetColumn()
        where = "%s:%s:%s" % (filename, line, col) if line is not None else filename
        raise ParseError("%s: %s" % (where, msg)) from None


def read_text(path, message_class, what=None):
    """Read a prototxt file into a new `message_class` (no upgrade)."""
    return parse_text(read_bytes(path), message_class, filename=str(path), what=what)


def parse_net_text(text, filename="<string>"):
    """NetParameter from prototxt text, upgraded to the current format."""
    return upgrade_net_param(parse_text(text, pb.NetParameter, filename, "NetParameter (net prototxt)"),
                             filename)


def read_net_param(path):
    """NetParameter from a prototxt file, upgraded to the current format (V0/V1/input fields)."""
    return parse_net_text(read_bytes(path), filename=str(path))


def parse_solver_text(text, filename="<string>"):
    """SolverParameter from prototxt text, upgraded (`solver_type` enum, embedded V1 nets)."""
    return upgrade_solver_param(parse_text(text, pb.SolverParameter, filename,
                                           "SolverParameter (solver prototxt)"), filename)


def read_solver_param(path):
    """SolverParameter from a prototxt file, upgraded."""
    return parse_solver_text(read_bytes(path), filename=str(path))


def format_text(message):
    """Prototxt text of `message` (for nets and solvers; never use it for weights, it is slow)."""
    return text_format.MessageToString(message)


def write_text(message, path):
    """Write `message` as prototxt, atomically."""
    write_atomic(path, format_text(message).encode("utf-8"))
