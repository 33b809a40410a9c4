"""Caffe's upgrade tools: rewrite an old (V0/V1, deprecated-field) net or solver in the current format."""
from distcaffe.errors import CaffeError
from distcaffe.io import read_net_binary, read_net_param, read_solver_param, write_net_binary, write_text


def _in_out(argv, name):
    if len(argv) != 2:
        raise CaffeError("usage: distcaffe %s INPUT OUTPUT" % name)
    return argv[0], argv[1]


def upgrade_net_proto_text(argv):
    """distcaffe upgrade_net_proto_text IN.prototxt OUT.prototxt"""
    src, dst = _in_out(argv, "upgrade_net_proto_text")
    write_text(read_net_param(src), dst)
    print("Wrote upgraded NetParameter text proto to %s" % dst)
    return 0


def upgrade_net_proto_binary(argv):
    """distcaffe upgrade_net_proto_binary IN.caffemodel OUT.caffemodel"""
    src, dst = _in_out(argv, "upgrade_net_proto_binary")
    write_net_binary(read_net_binary(src), dst)
    print("Wrote upgraded NetParameter binary proto to %s" % dst)
    return 0


def upgrade_solver_proto_text(argv):
    """distcaffe upgrade_solver_proto_text IN.prototxt OUT.prototxt"""
    src, dst = _in_out(argv, "upgrade_solver_proto_text")
    write_text(read_solver_param(src), dst)
    print("Wrote upgraded SolverParameter text proto to %s" % dst)
    return 0
