"""Caffe's weight fillers (constant, uniform, gaussian+sparse, positive_unitball, xavier, msra, bilinear).

Fan-in is count/shape[0] and fan-out count/shape[1], as in Caffe's filler.hpp. Values are drawn on the
host with the framework RNG (seeded by `random_seed`), so a run is reproducible on CPU and GPU alike.
"""
import numpy as np

from . import backend
from .errors import NetError


def _fans(shape, count):
    fan_in = count // shape[0] if shape and shape[0] else count
    fan_out = count // shape[1] if len(shape) > 1 and shape[1] else count
    return fan_in, fan_out


def _variance_n(filler, shape, count):
    fan_in, fan_out = _fans(shape, count)
    norm = filler.variance_norm  # FAN_IN=0, FAN_OUT=1, AVERAGE=2
    if norm == 2:
        return (fan_in + fan_out) / 2.0
    return float(fan_out if norm == 1 else fan_in)


def _check_finite(filler, kind, what):
    """Non-finite or negative-spread filler values would fail deep in numpy: one line naming the blob instead."""
    for field in ("value", "min", "max", "mean", "std"):
        if not np.isfinite(getattr(filler, field)):
            raise NetError("%s: %s filler: %s must be finite (got %s)" % (what, kind, field, getattr(filler, field)))
    if filler.std < 0:
        raise NetError("%s: %s filler: std must be >= 0 (got %g)" % (what, kind, filler.std))
    if kind == "uniform" and filler.min > filler.max:
        raise NetError("%s: uniform filler: min %g is above max %g" % (what, filler.min, filler.max))


def filled(filler, shape, what="blob"):
    """A float64 host array of `shape` filled as Caffe's filler `filler` (a FillerParameter) does."""
    shape = tuple(shape)
    count = int(np.prod(shape, dtype=np.int64))
    rng = backend.rng()
    kind = filler.type or "constant"
    _check_finite(filler, kind, what)
    if count == 0:  # nothing to fill; fan-in/fan-out of an empty blob would divide by zero
        return np.zeros(shape, np.float64)
    if kind == "constant":
        out = np.full(shape, filler.value, np.float64)
    elif kind == "uniform":
        out = rng.uniform(filler.min, filler.max, shape)
    elif kind == "gaussian":
        out = rng.normal(filler.mean, filler.std, shape)
        if filler.sparse >= 0:
            if not shape:
                raise NetError("%s: sparse gaussian filler needs at least one axis" % what)
            prob = filler.sparse / float(shape[0])
            out *= rng.random(shape) < prob
    elif kind == "positive_unitball":
        out = rng.uniform(0, 1, shape)
        num = shape[0] if shape else 1
        flat = out.reshape(num, -1)
        flat /= flat.sum(axis=1, keepdims=True)
    elif kind == "xavier":
        scale = np.sqrt(3.0 / _variance_n(filler, shape, count))
        out = rng.uniform(-scale, scale, shape)
    elif kind == "msra":
        std = np.sqrt(2.0 / _variance_n(filler, shape, count))
        out = rng.normal(0.0, std, shape)
    elif kind == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:
            raise NetError("%s: bilinear filler needs a 4-D blob with square kernels, got %s" % (what, shape))
        width = shape[3]
        f = np.ceil(width / 2.0)
        c = (2 * f - 1 - f % 2) / (2.0 * f)
        idx = np.arange(count)
        x = idx % width
        y = (idx // width) % shape[2]
        out = ((1 - np.abs(x / f - c)) * (1 - np.abs(y / f - c))).reshape(shape)
    else:
        raise NetError("%s: unknown filler type '%s' (known: constant, uniform, gaussian, positive_unitball, "
                       "xavier, msra, bilinear)" % (what, kind))
    return out


def fill(blob, filler, what="blob"):
    """Fill a Blob in place."""
    blob.data[...] = filled(filler, blob.shape, what)
