"""pycaffe's caffe.coord_map: how positions in one NetSpec top map to another through spatial layers, and
`crop()` to align two tops with a Crop layer (as fully convolutional nets do).

A map is (axis, scale a, shift b): output coordinate = a * input coordinate + b on the spatial axes from
`axis` on; pointwise layers are (None, 1, 0). Maps compose along the graph; the backward map is the inverse.
"""
import numpy as np

from .errors import CaffeError
from .net_spec import layers as L

PASS_THROUGH_LAYERS = ("AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU", "Log", "LRN", "Exp",
                       "MVN", "Power", "ReLU", "PReLU", "Scale", "Sigmoid", "Split", "TanH", "Threshold")
_LEGACY_SPATIAL = {"pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w"}


class UndefinedMapException(CaffeError):
    """The layer has no coordinate mapping (e.g. InnerProduct); the walk stops there."""


class AxisMismatchException(CaffeError):
    """Two maps act on different first spatial axes and cannot compose."""


class UnconnectedTopsError(CaffeError, RuntimeError):
    """The two tops share no ancestor through mappable layers (RuntimeError, as pycaffe raises)."""


class CropError(CaffeError, AssertionError):
    """crop() cannot align the tops: scales differ, or the offset is negative or fractional (AssertionError,
    as pycaffe raises)."""


def conv_params(fn):
    """(axis, stride, effective kernel extent, pad) of a Convolution/Deconvolution/Im2col/Pooling Function."""
    params = fn.params.get("convolution_param", fn.params)
    legacy = _LEGACY_SPATIAL & set(params)
    if legacy:
        raise CropError("layer %s: coordinate maps do not support the legacy _h/_w parameters (%s)"
                        % (fn.type_name, ", ".join(sorted(legacy))))
    if "kernel_size" not in params:
        raise UndefinedMapException("layer %s has no kernel_size to map coordinates through" % fn.type_name)
    kernel = np.array(params["kernel_size"], ndmin=1)
    dilation = np.array(params.get("dilation", 1), ndmin=1)
    return (params.get("axis", 1), np.array(params.get("stride", 1), ndmin=1), (kernel - 1) * dilation + 1,
            np.array(params.get("pad", 0), ndmin=1))


def crop_params(fn):
    """(axis, offset) of a Crop Function, with Caffe's defaults (axis 2, offset 0)."""
    params = fn.params.get("crop_param", fn.params)
    return params.get("axis", 2), np.array(params.get("offset", 0), ndmin=1)


def coord_map(fn):
    """The (axis, scale, shift) map from a Function's bottom to its top."""
    kind = fn.type_name
    if kind in ("Convolution", "Pooling", "Im2col"):
        axis, stride, extent, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (extent - 1) / 2) / stride
    if kind == "Deconvolution":
        axis, stride, extent, pad = conv_params(fn)
        return axis, stride, (extent - 1) / 2 - pad
    if kind in PASS_THROUGH_LAYERS:
        return None, 1, 0
    if kind == "Crop":
        axis, offset = crop_params(fn)
        return axis - 1, 1, -offset
    raise UndefinedMapException("layer type %s has no coordinate mapping" % kind)


def compose(base_map, next_map):
    """The map `base_map` after `next_map`: scales multiply, the further shift is scaled by the base scale."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is not None and ax2 is not None and ax1 != ax2:
        raise AxisMismatchException("cannot compose coordinate maps on axes %s and %s" % (ax1, ax2))
    return (ax2 if ax1 is None else ax1), a1 * a2, a1 * b2 + b1


def inverse(cmap):
    """The backward map: de-scale and un-shift."""
    ax, a, b = cmap
    return ax, 1 / a, -b / a


def _mappable_bottoms(top):
    """The bottoms whose coordinates the layer maps: all of them, except Crop's reference (second) bottom."""
    return top.fn.inputs[:1] if top.fn.type_name == "Crop" else top.fn.inputs


def _ancestor_maps(start, stop_at=None):
    """Walk up from `start`, composing maps; returns {top: map to `start`}, or (top, map) on reaching a top
    in `stop_at`."""
    maps = {start: (None, 1, 0)}
    frontier = [start]
    while frontier:
        top = frontier.pop()
        if stop_at is not None and top in stop_at:
            return top, maps[top]
        try:
            step = coord_map(top.fn)
        except UndefinedMapException:
            continue
        for bottom in _mappable_bottoms(top):
            maps[bottom] = compose(maps[top], step)
            frontier.append(bottom)
    return maps if stop_at is None else None


def coord_map_from_to(top_from, top_to):
    """The (axis, scale, shift) map from `top_from`'s coordinates to `top_to`'s, through a common ancestor."""
    from_maps = _ancestor_maps(top_from)
    met = _ancestor_maps(top_to, stop_at=from_maps)
    if met is None:
        raise UnconnectedTopsError("could not compute a map between the tops: are they connected by spatial "
                                   "layers?")
    common, to_map = met
    return compose(to_map, inverse(from_maps[common]))


def crop(top_from, top_to):
    """A Crop layer that cuts `top_from` to `top_to`'s spatial extent at the offset their map implies."""
    ax, a, b = coord_map_from_to(top_from, top_to)
    if not np.all(a == 1):
        raise CropError("scale mismatch on crop (a = %s)" % (a,))
    if not np.all(b <= 0):
        raise CropError("cannot crop negative offset (b = %s)" % (b,))
    if not np.all(np.round(b) == b):
        raise CropError("cannot crop noninteger offset (b = %s)" % (b,))
    return L.Crop(top_from, top_to, crop_param=dict(axis=ax + 1, offset=list(-np.round(b).astype(int))))
