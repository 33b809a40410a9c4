"""World size 1: every collective is the identity, so one code path serves one device and many."""
import sys

from .communicator import Communicator, DoneRequest


class SingleCommunicator(Communicator):
    """Rank 0 of 1; allreduce/broadcast leave the buffer as it is."""

    name = "single"

    def __init__(self):
        super().__init__(0, 1, 0, 1)

    def iallreduce(self, buf):
        return DoneRequest()

    def broadcast(self, buf, root=0):
        return buf

    def barrier(self, timeout=float("inf")):
        return None

    def share(self, obj, root=0):
        return obj

    def allgather(self, obj):
        return [obj]

    def abort(self, message, code=1):
        print("distcaffe: error: %s" % message, file=sys.stderr, flush=True)
        sys.exit(code)
