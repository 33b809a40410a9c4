"""Data pipeline: Datum codec, LMDB reader/writer, transformer, prefetching threads, converters.

Distributed runs: the engine calls `set_shard(rank, world_size)` before building a net; every data layer
built afterwards reads only records rank, rank+N, rank+2N, ... (default: rank 0 of 1, everything).
"""
from .datum import array_to_datum, datum_to_array, decode_image, encode_image, encoded_datum, parse_datum
from .lmdb_reader import LMDBReader
from .lmdb_writer import LMDBWriter
from .shard import get_shard, set_shard
from .transformer import DataTransformer

__all__ = ["DataTransformer", "LMDBReader", "LMDBWriter", "array_to_datum", "datum_to_array", "decode_image",
           "encode_image", "encoded_datum", "get_shard", "parse_datum", "set_shard"]
