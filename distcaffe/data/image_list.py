"""Caffe's image list files: one `<path> <label>` per line, split at the LAST space (paths may hold spaces)."""
from ..errors import DataError, resolved


def read_image_list(path, what="image list"):
    """[(filename, label), ...] of a list file; a bad line is a DataError naming file and line number."""
    try:
        with open(path, "r") as f:
            text = f.read()
    except OSError as e:
        raise DataError("%s %s cannot be read: %s%s" % (what, path, e.strerror or e, resolved(path))) from None
    lines = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        name, sep, label = line.rpartition(" ")
        try:
            if not sep:
                raise ValueError
            lines.append((name, int(label)))
        except ValueError:
            raise DataError("%s:%d: expected '<file> <integer label>', got %r" % (path, n, line)) from None
    if not lines:
        raise DataError("%s %s lists no images" % (what, path))
    return lines
