"""LevelDB access (Caffe's `backend: LEVELDB`) through plyvel, the `leveldb` extra.

Same interface as the LMDB reader and writer. LevelDB lets one process open a database at a time (its LOCK
file), so a process shares one handle between its threads and a second process gets a clear error; writing
goes to a temporary directory renamed into place at the end, as for LMDB.
"""
import os
import shutil
import threading

from ..errors import DataError
from .lmdb_writer import output_paths

_dbs = {}                       # realpath -> [plyvel.DB, users]
_dbs_lock = threading.Lock()


def _plyvel(what):
    try:
        import plyvel
    except ImportError:
        raise DataError("%s: LevelDB needs plyvel: pip install 'distcaffe[leveldb]' (or convert the data to LMDB)"
                        % what) from None
    return plyvel


def is_leveldb(path):
    """True for a directory holding a LevelDB (its CURRENT file)."""
    return os.path.isfile(os.path.join(str(path), "CURRENT"))


class LevelDBReader:
    """A LevelDB opened for reading; keys in LevelDB's (bytewise) order, as Caffe's cursor gives them."""

    label = "LevelDB"

    def __init__(self, path, what="LevelDB"):
        self.path, self.what = str(path), what
        plyvel = _plyvel(what)
        if not is_leveldb(self.path):
            raise DataError("%s %s does not exist (expected a LevelDB directory holding CURRENT)" % (what, self.path))
        real = os.path.realpath(self.path)
        with _dbs_lock:
            entry = _dbs.get(real)
            if entry is None:
                try:
                    entry = _dbs[real] = [plyvel.DB(real, create_if_missing=False), 0]
                except plyvel.IOError as e:
                    raise DataError("%s %s cannot be opened: %s (LevelDB allows one process at a time; for several "
                                    "ranks convert it to LMDB)" % (what, self.path, e.args[0].decode(errors="replace"))
                                    ) from None
                except plyvel.Error as e:
                    raise DataError("%s %s cannot be opened: %s" % (what, self.path,
                                                                   e.args[0].decode(errors="replace"))) from None
            entry[1] += 1
        self.db = entry[0]
        self._keys = None

    def keys(self):
        if self._keys is None:
            self._keys = list(self.db.iterator(include_value=False))
        return self._keys

    def __len__(self):
        return len(self.keys())

    def items(self):
        yield from self.db.iterator()

    def get(self, key):
        value = self.db.get(key)
        if value is None:
            raise DataError("%s %s: key %r is missing" % (self.what, self.path, key.decode(errors="replace")))
        return value

    def close(self):
        if self.db is None:
            return
        self.db = None
        real = os.path.realpath(self.path)
        with _dbs_lock:
            entry = _dbs.get(real)
            if entry is not None:
                entry[1] -= 1
                if entry[1] == 0:
                    del _dbs[real]
                    entry[0].close()


class LevelDBWriter:
    """Context manager: `with LevelDBWriter(path) as w: w.put(key, value)`; the DB appears only on success."""

    def __init__(self, path, force=False):
        plyvel = _plyvel("writing %s" % os.path.abspath(str(path)))
        self.path, self.tmp = output_paths(path, force)
        self.db = plyvel.DB(self.tmp, create_if_missing=True, error_if_exists=True)
        self.batch = self.db.write_batch()
        self.count = 0

    def put(self, key, value):
        self.batch.put(key.encode() if isinstance(key, str) else key, value)
        self.count += 1
        if self.count % 1000 == 0:                # Caffe's tools commit every 1000 records
            self.batch.write()
            self.batch = self.db.write_batch()

    def close(self, ok=True):
        if ok:
            self.batch.write()
        self.db.close()
        if not ok:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if os.path.exists(self.path):
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(ok=exc_type is None)
        return False
