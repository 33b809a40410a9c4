"""File helpers shared by the readers and writers: clear one-line errors, atomic replace-on-write."""
import errno
import os
import tempfile

from distcaffe.errors import ParseError, resolved


def read_bytes(path):
    """Whole file as bytes; a missing or unreadable file becomes a one-line ParseError naming it."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ParseError("%s: No such file%s" % (path, resolved(path))) from None
    except IsADirectoryError:
        raise ParseError("%s: is a directory, expected a file" % path) from None
    except OSError as e:
        raise ParseError("%s: %s" % (path, e.strerror or e)) from None


def _umask():
    """This process's umask, read without changing it (Linux), else by the set-and-restore idiom."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temporary_beside(path):
    """(fd, name) of a new hidden `.<name>.*.tmp` file beside `path`, with the mode a plain open() gives (0666
    less the umask, as Caffe's files) instead of mkstemp's 0600."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise ParseError("%s: directory %s does not exist" % (path, directory)) from None
        raise ParseError("%s: cannot write: %s" % (path, e.strerror or e)) from None
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


def write_atomic(path, data):
    """Write bytes to a temporary file beside `path`, fsync, then rename over it: never a half file."""
    path = os.fspath(path)
    fd, tmp = temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise ParseError("%s: cannot write: %s" % (path, e.strerror or e)) from None
        raise
