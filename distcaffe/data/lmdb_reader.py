"""Read-only LMDB access in Caffe's cursor order (keys sorted bytewise), safe to share between threads."""
import os
import threading

import lmdb

from ..errors import DataError, resolved

_envs = {}                       # realpath -> [Environment, users]: lmdb allows one open per process
_envs_lock = threading.Lock()


def _open_env(path):
    """The process's shared read-only Environment of `path` (opened on first use)."""
    real = os.path.realpath(path)
    with _envs_lock:
        entry = _envs.get(real)
        if entry is None:
            env = lmdb.open(real, readonly=True, lock=False, readahead=False, max_readers=512, subdir=True)
            entry = _envs[real] = [env, 0]
        entry[1] += 1
        return entry[0]


def _release_env(path):
    real = os.path.realpath(path)
    with _envs_lock:
        entry = _envs.get(real)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                del _envs[real]
                entry[0].close()


class LMDBReader:
    """An LMDB opened read-only without locking (many processes may read it); one read txn per thread."""

    label = "LMDB"

    def __init__(self, path, what="LMDB"):
        self.path = str(path)
        self.what = what
        if not os.path.isdir(self.path) or not os.path.exists(os.path.join(self.path, "data.mdb")):
            raise DataError("%s %s does not exist (expected a directory holding data.mdb)%s" % (what, self.path,
                                                                                          resolved(self.path)))
        try:
            self.env = _open_env(self.path)
        except lmdb.Error as e:
            raise DataError("%s %s cannot be opened: %s" % (what, self.path, e)) from None
        self._check_size()
        self._local = threading.local()
        self._keys = None

    def _check_size(self):
        """A data.mdb shorter than the pages its meta page says are in use would be read through the memory map
        past its end (SIGBUS, no message): refuse it first, naming the file."""
        data = os.path.join(self.path, "data.mdb")
        need = (self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"]
        have = os.path.getsize(data)
        if have < need:
            self.close()
            raise DataError("%s %s is truncated: %s holds %d bytes, but its database uses %d (copy it again)"
                            % (self.what, self.path, data, have, need))

    def _error(self, e):
        return DataError("%s %s is damaged: %s" % (self.what, self.path, e))

    def __len__(self):
        return self.env.stat()["entries"]

    def keys(self):
        """All keys as bytes, in cursor order (read once, then cached)."""
        if self._keys is None:
            try:
                with self.env.begin(buffers=False) as txn:
                    self._keys = list(txn.cursor().iternext(keys=True, values=False))
            except lmdb.Error as e:
                raise self._error(e) from None
        return self._keys

    def items(self):
        """(key, value) pairs in cursor order, streamed (for tools that pass over the whole DB once)."""
        try:
            with self.env.begin(buffers=False) as txn:
                yield from txn.cursor()
        except lmdb.Error as e:
            raise self._error(e) from None

    def get(self, key):
        """The value stored under `key` (bytes), read in this thread's own transaction."""
        txn = getattr(self._local, "txn", None)
        if txn is None:
            txn = self._local.txn = self.env.begin(buffers=False)
        try:
            value = txn.get(key)
        except lmdb.Error as e:
            raise self._error(e) from None
        if value is None:
            raise DataError("%s %s: key %r is missing" % (self.what, self.path, key.decode(errors="replace")))
        return value

    def close(self):
        if self.env is not None:
            self.env = None
            _release_env(self.path)

