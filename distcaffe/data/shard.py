"""Which part of a data set this process reads: rank r of N takes every N-th record starting at r.

The engine calls `set_shard(rank, world_size)` before it builds the net; data layers read it when they are
constructed. Default: rank 0 of 1 (the whole data set).
"""
from ..errors import DataError

_shard = (0, 1)


def set_shard(rank, world_size):
    """Make data layers built after this call read shard `rank` of `world_size` (disjoint, deterministic)."""
    global _shard
    rank, world_size = int(rank), int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise DataError("invalid data shard: rank %d of world size %d" % (rank, world_size))
    _shard = (rank, world_size)


def get_shard():
    """(rank, world_size) that data layers use."""
    return _shard


def shard_indices(n, rank, world_size):
    """Indices of the records of shard `rank`: r, r+N, r+2N, ... (< n)."""
    return range(rank, n, world_size)
