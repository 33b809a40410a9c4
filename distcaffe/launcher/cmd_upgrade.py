"""Caffe's upgrade tools: rewrite an old (V0/V1, deprecated-field) net or solver in the current format."""
from distcaffe.io import read_net_binary, read_net_param, read_solver_param, write_net_binary, write_text

from distcaffe.launcher import flags as F

# command -> (help, reader, writer, what the message says was written)
_TOOLS = {
    "upgrade_net_proto_text": ("Upgrade a V0/V1 net prototxt to the current format.",
                               read_net_param, write_text, "NetParameter text"),
    "upgrade_net_proto_binary": ("Upgrade a V0/V1 binary net (.caffemodel) to the current format.",
                                 read_net_binary, write_net_binary, "NetParameter binary"),
    "upgrade_solver_proto_text": ("Upgrade a solver prototxt (deprecated solver_type) to the current format.",
                                  read_solver_param, write_text, "SolverParameter text"),
}


def _upgrade(name, argv):
    """Read IN with the command's reader (which upgrades it) and write it to OUT, with Caffe's message."""
    about, read, write, what = _TOOLS[name]
    a = F.parse(name, argv, [], positional=("input", "output"), about=about)
    if a is None:
        return 0
    write(read(a["input"]), a["output"])
    print("Wrote upgraded %s proto to %s" % (what, a["output"]))
    return 0


def upgrade_net_proto_text(argv):
    """distcaffe upgrade_net_proto_text IN.prototxt OUT.prototxt"""
    return _upgrade("upgrade_net_proto_text", argv)


def upgrade_net_proto_binary(argv):
    """distcaffe upgrade_net_proto_binary IN.caffemodel OUT.caffemodel"""
    return _upgrade("upgrade_net_proto_binary", argv)


def upgrade_solver_proto_text(argv):
    """distcaffe upgrade_solver_proto_text IN.prototxt OUT.prototxt"""
    return _upgrade("upgrade_solver_proto_text", argv)
