"""pycaffe's `caffe.io`, as BVLC's python/caffe/io.py behaves: BlobProto/Datum <-> arrays, load_image,
resize_image, oversample and the deploy-time Transformer. Images are float HxWxK in [0, 1], RGB.

resize_image gives scikit-image's `resize(..., mode='constant')` results (what BVLC calls), computed as two
sparse matrix products per image: each axis' operator (anti-aliasing Gaussian, then scipy.ndimage's spline
zoom) is built once from the identity with scipy.ndimage and cached, so no scikit-image is needed at run time.
"""
import functools

import numpy as np

from ..errors import CaffeError, DataError
from ..proto import caffe_pb2
from .binary import blob_shape
from .binary import blobproto_to_array as _decode_blobproto

# rgb2gray's ITU-R 709 luma weights (scikit-image, which BVLC's load_image reads grayscale images with)
_GRAY = np.array([0.2125, 0.7154, 0.0721])


class PycaffeValueError(DataError, ValueError):
    """An array or blob that does not fit (BVLC raises ValueError here, so scripts catching it keep working)."""


# --- proto / datum / ndarray conversion -----------------------------------------------------------------
def blobproto_to_array(blob, return_diff=False):
    """Array of a BlobProto's data (or diff), float64 as BVLC returns it, shaped by the legacy 4-D fields or
    `shape` (none: a scalar); values that do not fill the shape raise ValueError."""
    shape = blob_shape(blob)
    try:
        arr = _decode_blobproto(blob, return_diff)
    except CaffeError as e:
        raise PycaffeValueError(str(e)) from None
    if shape is None:
        if arr.size != 1:
            raise PycaffeValueError("blob has %d values but no shape (neither shape { dim } nor "
                                    "num/channels/height/width)" % arr.size)
        arr = arr.reshape(())
    return arr.astype(np.float64)


def array_to_blobproto(arr, diff=None):
    """BlobProto with `arr` (and `diff`) as float data and an N-D `shape`."""
    from .binary import array_to_blobproto as encode
    return encode(arr, diff)


def arraylist_to_blobprotovector_str(arraylist):
    """Serialized BlobProtoVector of the arrays (e.g. to hand a net several blobs at once)."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend(array_to_blobproto(a) for a in arraylist)
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(data):
    """The arrays of a serialized BlobProtoVector."""
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(data)
    return [blobproto_to_array(b) for b in vec.blobs]


def array_to_datum(arr, label=None):
    """A Datum from a CxHxW array: uint8 arrays go to `data` bytes, others to `float_data`."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise PycaffeValueError("array_to_datum: incorrect array shape %s (need a 3-D CxHxW array)" % (arr.shape,))
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = arr.shape
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(float).flat)
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum):
    """CxHxW array of a Datum (the data pipeline's decoder, so encoded images work too): uint8 from `data`,
    float64 from `float_data` as pycaffe returns it."""
    from ..data.datum import datum_to_array as decode
    arr = decode(datum, "Datum")
    return arr if arr.dtype == np.uint8 else arr.astype(float)


# --- image IO ------------------------------------------------------------------------------------------
def _as_float(arr):
    """scikit-image's img_as_float: integers scaled by their type's maximum, floats kept."""
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float64) / np.iinfo(arr.dtype).max
    return arr.astype(np.float64)


def load_image(filename, color=True):
    """An image as float32 in [0, 1]: HxWx3 RGB (grey images tiled, alpha dropped) or, with color=False, HxWx1
    intensity by rgb2gray's weights, as BVLC's load_image (scikit-image) returns it. Decoded with Pillow."""
    try:
        from PIL import Image
    except ImportError:
        raise CaffeError("load_image needs Pillow: pip install 'distcaffe[image]'") from None
    try:
        with Image.open(filename) as img:
            if img.mode not in ("L", "RGB", "RGBA", "I;16", "I", "F"):
                img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
            arr = np.asarray(img)
    except (OSError, ValueError) as e:
        raise DataError("%s: cannot read image (%s)" % (filename, e)) from None
    img = _as_float(arr)
    if img.ndim == 3:
        img = img[:, :, :3]
        if not color:
            img = img @ _GRAY
    img = img.astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    return img


# --- resizing ------------------------------------------------------------------------------------------
def _ndimage():
    try:
        from scipy import ndimage
    except ImportError:
        raise CaffeError("caffe.io.resize_image needs scipy: pip install 'distcaffe[pycaffe]'") from None
    return ndimage


@functools.lru_cache(maxsize=64)
def _axis_operator(n, m, order, grid_mode, sigma):
    """(m, n) matrix taking one axis of length n to m: Gaussian anti-aliasing with `sigma` (none when 0), then
    scipy.ndimage.zoom's spline interpolation of `order`, zero outside the image, applied to the identity.
    The operators are banded (a few taps per output pixel), so they are kept sparse."""
    ndi = _ndimage()
    ident = np.eye(n)
    if sigma > 0:
        ident = ndi.gaussian_filter1d(ident, sigma, axis=0, mode="constant", cval=0.0, truncate=4.0)
    mode = "grid-constant" if grid_mode else "constant"
    op = ndi.zoom(ident, (m / n, 1.0), order=order, mode=mode, cval=0.0, grid_mode=grid_mode)
    op[np.abs(op) < 1e-12] = 0.0  # the spline prefilter's taps decay geometrically: far ones are below float32
    if np.count_nonzero(op) < 0.2 * op.size:
        from scipy import sparse
        return sparse.csr_matrix(op)
    return op


def _separable(im, rows, cols):
    """rows @ im @ cols.T on each channel of an HxWxK image (rows, cols dense or sparse)."""
    h, w, k = im.shape
    tmp = np.asarray(rows @ im.reshape(h, w * k).astype(np.float64))
    nh = tmp.shape[0]
    tmp = tmp.reshape(nh, w, k).transpose(1, 0, 2).reshape(w, nh * k)
    out = np.asarray(cols @ tmp)
    return np.ascontiguousarray(out.reshape(-1, nh, k).transpose(1, 0, 2))


def _skimage_resize(im, new_dims, order):
    """scikit-image's resize(im, new_dims, order=order, mode='constant') of a HxWxK float image in [0, 1]."""
    (h, w), (nh, nw) = im.shape[:2], new_dims
    antialias = nh < h or nw < w
    sigma = [max(0.0, (n / m - 1) / 2) if antialias else 0.0 for n, m in ((h, nh), (w, nw))]
    out = _separable(im, _axis_operator(h, nh, order, True, sigma[0]), _axis_operator(w, nw, order, True, sigma[1]))
    return np.clip(out, min(0.0, im.min()), max(0.0, im.max()))


def resize_image(im, new_dims, interp_order=1):
    """Resize an HxWxK image to new_dims (height, width) with spline interpolation of `interp_order`, as
    BVLC's resize_image: K in (1, 3) goes through scikit-image's resize on the [0, 1]-normalized image (a
    constant image stays constant), other K through scipy's zoom. float32 out."""
    im = np.asarray(im)
    if im.ndim != 3:
        raise PycaffeValueError("resize_image: need an HxWxK image, got shape %s" % (im.shape,))
    nh, nw = int(new_dims[0]), int(new_dims[1])
    if nh <= 0 or nw <= 0:
        raise PycaffeValueError("resize_image: new dimensions must be positive, got %s" % (tuple(new_dims),))
    order = int(interp_order)
    if im.shape[-1] in (1, 3):
        lo, hi = im.min(), im.max()
        if not hi > lo:
            return np.full((nh, nw, im.shape[-1]), lo, dtype=np.float32)
        out = _skimage_resize((im - lo) / (hi - lo), (nh, nw), order)
        return (out * (hi - lo) + lo).astype(np.float32)
    h, w = im.shape[:2]
    return _separable(im, _axis_operator(h, nh, order, False, 0.0),
                      _axis_operator(w, nw, order, False, 0.0)).astype(np.float32)


def oversample(images, crop_dims):
    """The 10 crops of each image (4 corners + centre, then their mirrors), as pycaffe's oversample."""
    im_shape = np.array(images[0].shape)
    crop_dims = np.array(crop_dims)
    center = im_shape[:2] / 2.0
    corners = [(i, j, i + crop_dims[0], j + crop_dims[1])
               for i in (0, im_shape[0] - crop_dims[0]) for j in (0, im_shape[1] - crop_dims[1])]
    middle = np.tile(center, (1, 2)) + np.concatenate([-crop_dims / 2.0, crop_dims / 2.0])
    crops_ix = np.tile(np.array(corners + [tuple(middle.ravel())], dtype=int), (2, 1))
    crops = np.empty((10 * len(images), crop_dims[0], crop_dims[1], im_shape[-1]), dtype=np.float32)
    ix = 0
    for im in images:
        for a, b, c, d in crops_ix:
            crops[ix] = im[a:c, b:d, :]
            ix += 1
        crops[ix - 5:ix] = crops[ix - 5:ix, :, ::-1, :]
    return crops


# --- deploy-time preprocessing -------------------------------------------------------------------------
class Transformer:
    """Deploy-time input preprocessing per input blob: transpose, channel swap, raw scale, mean, input scale.

    `preprocess(name, HxWxK image in [0,1])` -> CxHxW array for `net.blobs[name]`, as pycaffe's Transformer.
    """

    def __init__(self, inputs):
        self.inputs = dict(inputs)
        self.transpose, self.channel_swap, self.raw_scale = {}, {}, {}
        self.mean, self.input_scale = {}, {}

    def _check_input(self, name):
        if name not in self.inputs:
            raise CaffeError("%s is not one of the net inputs: %s" % (name, list(self.inputs)))

    def preprocess(self, in_, data):
        self._check_input(in_)
        caffe_in = np.asarray(data, dtype=np.float32)
        in_dims = tuple(self.inputs[in_][2:])
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if in_ in self.transpose:
            caffe_in = caffe_in.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            caffe_in = caffe_in[self.channel_swap[in_], :, :]
        if in_ in self.raw_scale:
            caffe_in = caffe_in * self.raw_scale[in_]
        if in_ in self.mean:
            caffe_in = caffe_in - self.mean[in_]
        if in_ in self.input_scale:
            caffe_in = caffe_in * self.input_scale[in_]
        return caffe_in

    def deprocess(self, in_, data):
        self._check_input(in_)
        decaf_in = np.array(data, dtype=np.float32).squeeze()
        if in_ in self.input_scale:
            decaf_in = decaf_in / self.input_scale[in_]
        if in_ in self.mean:
            decaf_in = decaf_in + self.mean[in_]
        if in_ in self.raw_scale:
            decaf_in = decaf_in / self.raw_scale[in_]
        if in_ in self.channel_swap:
            decaf_in = decaf_in[np.argsort(self.channel_swap[in_]), :, :]
        if in_ in self.transpose:
            decaf_in = decaf_in.transpose(np.argsort(self.transpose[in_]))
        return decaf_in

    def set_transpose(self, in_, order):
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise CaffeError("transpose order needs to have the same number of dimensions as the input")
        self.transpose[in_] = order

    def set_channel_swap(self, in_, order):
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise CaffeError("channel swap needs to have the same number of dimensions as the input channels")
        self.channel_swap[in_] = order

    def set_raw_scale(self, in_, scale):
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """Mean per channel (K,) or a KxHxW mean image, resized to the input's HxW when it differs (BVLC)."""
        self._check_input(in_)
        mean = np.asarray(mean)
        ms = mean.shape
        if mean.ndim == 1:
            if ms[0] != self.inputs[in_][1]:
                raise PycaffeValueError("mean channels incompatible with input: %d channels, input %s has %d"
                                        % (ms[0], in_, self.inputs[in_][1]))
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if len(ms) == 2:
                ms = (1,) + ms
            if len(ms) != 3:
                raise PycaffeValueError("mean shape invalid: %s (need K, HxW or KxHxW)" % (mean.shape,))
            in_shape = tuple(self.inputs[in_][1:])
            if ms != in_shape:
                mean = resize_image(mean.reshape(ms).transpose(1, 2, 0), in_shape[1:]).transpose(2, 0, 1)
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        self._check_input(in_)
        self.input_scale[in_] = scale
