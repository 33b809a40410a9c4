"""Caffe's db::GetDB: the reader or writer of a database by backend (LMDB, or LevelDB with the extra).

A reader follows what is on disk (an LMDB's data.mdb, a LevelDB's CURRENT), so a net naming the other backend,
or none (Caffe's default is LEVELDB), still reads its data; the declared backend only words the error when
there is no database at all."""
import os

from ..errors import DataError
from .leveldb import LevelDBReader, LevelDBWriter, is_leveldb
from .lmdb_reader import LMDBReader
from .lmdb_writer import LMDBWriter

BACKENDS = ("lmdb", "leveldb")


def _name(backend):
    name = (backend or "lmdb").lower()
    if name not in BACKENDS:
        raise DataError("unknown database backend '%s' (known: lmdb, leveldb)" % backend)
    return name


def open_reader(path, what, backend=None):
    """LMDBReader or LevelDBReader for `path` (errors read `<what>: LMDB source <path> ...`), or a DataError
    when it is missing or holds no records."""
    if os.path.exists(os.path.join(str(path), "data.mdb")):
        kind = "lmdb"
    elif is_leveldb(path):
        kind = "leveldb"
    else:
        kind = _name(backend)
    cls = LMDBReader if kind == "lmdb" else LevelDBReader
    reader = cls(path, "%s: %s source" % (what, cls.label))
    if len(reader) == 0:
        reader.close()
        raise DataError("%s: %s %s is empty (no records)" % (what, cls.label, path))
    return reader


def open_writer(path, backend="lmdb", force=False):
    """A writer context manager (`put(key, value)`) of `backend`; the database appears only on success."""
    return (LMDBWriter if _name(backend) == "lmdb" else LevelDBWriter)(path, force)
