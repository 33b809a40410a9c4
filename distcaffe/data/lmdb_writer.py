"""LMDB writing for the data tools: records go to a temporary directory renamed into place at the end,
so a failed or interrupted conversion never leaves a half-written (or clobbered) database."""
import os
import shutil

import lmdb

from ..errors import DataError

_COMMIT_EVERY = 1000      # Caffe's tools commit a transaction every 1000 records


def output_paths(path, force):
    """(absolute path, fresh temporary sibling) of a database about to be written; refuses to overwrite an
    existing one unless `force`, and names a missing parent directory."""
    path = os.path.abspath(str(path))
    if os.path.exists(path) and not force:
        raise DataError("%s already exists; not overwriting it (use --force)" % path)
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise DataError("cannot write %s: directory %s does not exist" % (path, parent))
    tmp = "%s.tmp-%d" % (path, os.getpid())
    shutil.rmtree(tmp, ignore_errors=True)
    return path, tmp


class LMDBWriter:
    """Context manager: `with LMDBWriter(path) as w: w.put(key, value)`; the DB appears only on success."""

    def __init__(self, path, force=False):
        self.path, self.tmp = output_paths(path, force)
        self.map_size = 1 << 30
        self.env = lmdb.open(self.tmp, map_size=self.map_size, subdir=True)
        self.txn = self.env.begin(write=True)
        self.count = 0
        self.pending = []                                  # puts of the open transaction, for replay

    def put(self, key, value):
        if isinstance(key, str):
            key = key.encode()
        self.pending.append((key, value))
        self._put(key, value)
        self.count += 1
        if self.count % _COMMIT_EVERY == 0:
            self._commit()

    def _put(self, key, value):
        try:
            self.txn.put(key, value)
        except lmdb.MapFullError:
            self._grow()

    def _commit(self):
        while True:
            try:
                self.txn.commit()
                break
            except lmdb.MapFullError:
                self._grow()
        self.pending = []
        self.txn = self.env.begin(write=True)

    def _grow(self):
        """Double the map (as Caffe's LMDB backend does on MDB_MAP_FULL) and replay the open transaction."""
        self.txn.abort()
        self.map_size *= 2
        self.env.set_mapsize(self.map_size)
        self.txn = self.env.begin(write=True)
        for key, value in self.pending:
            self._put(key, value)

    def close(self, ok=True):
        if ok:
            self._commit()
            self.txn.abort()
            self.env.close()
            if os.path.exists(self.path):
                shutil.rmtree(self.path)
            os.replace(self.tmp, self.path)
        else:
            self.txn.abort()
            self.env.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(ok=exc_type is None)
        return False
