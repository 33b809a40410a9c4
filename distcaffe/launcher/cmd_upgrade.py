"""Caffe's upgrade tools: rewrite an old (V0/V1, deprecated-field) net or solver in the current format."""
from distcaffe.io import read_net_binary, read_net_param, read_solver_param, write_net_binary, write_text

from distcaffe.launcher import flags as F


def _in_out(argv, name):
    a = F.parse(name, argv, [], positional=("input", "output"), about=_DOC[name])
    return (None, None) if a is None else (a["input"], a["output"])


_DOC = {"upgrade_net_proto_text": "Upgrade a V0/V1 net prototxt to the current format.",
        "upgrade_net_proto_binary": "Upgrade a V0/V1 binary net (.caffemodel) to the current format.",
        "upgrade_solver_proto_text": "Upgrade a solver prototxt (deprecated solver_type) to the current format."}


def upgrade_net_proto_text(argv):
    """distcaffe upgrade_net_proto_text IN.prototxt OUT.prototxt"""
    src, dst = _in_out(argv, "upgrade_net_proto_text")
    if src is None:
        return 0
    write_text(read_net_param(src), dst)
    print("Wrote upgraded NetParameter text proto to %s" % dst)
    return 0


def upgrade_net_proto_binary(argv):
    """distcaffe upgrade_net_proto_binary IN.caffemodel OUT.caffemodel"""
    src, dst = _in_out(argv, "upgrade_net_proto_binary")
    if src is None:
        return 0
    write_net_binary(read_net_binary(src), dst)
    print("Wrote upgraded NetParameter binary proto to %s" % dst)
    return 0


def upgrade_solver_proto_text(argv):
    """distcaffe upgrade_solver_proto_text IN.prototxt OUT.prototxt"""
    src, dst = _in_out(argv, "upgrade_solver_proto_text")
    if src is None:
        return 0
    write_text(read_solver_param(src), dst)
    print("Wrote upgraded SolverParameter text proto to %s" % dst)
    return 0
