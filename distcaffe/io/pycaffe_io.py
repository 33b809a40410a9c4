"""pycaffe's `caffe.io` image helpers: Transformer (deploy-time preprocessing), load_image, resize_image,
oversample, and Datum <-> array. Images are float RGB in [0, 1], HxWxK, as pycaffe returns them."""
import numpy as np

from ..errors import CaffeError, DataError
from ..proto import caffe_pb2


def load_image(filename, color=True):
    """Load an image as float32 HxWx3 (or HxWx1 when color=False) in [0, 1] (Pillow)."""
    try:
        from PIL import Image
    except ImportError:
        raise CaffeError("load_image needs Pillow: pip install 'distcaffe[image]'") from None
    try:
        img = Image.open(filename)
        img = img.convert("RGB" if color else "L")
    except (OSError, ValueError) as e:
        raise DataError("%s: cannot read image (%s)" % (filename, e)) from None
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr[:, :, np.newaxis] if arr.ndim == 2 else arr


def resize_image(im, new_dims, interp_order=1):
    """Resize HxWxK to new_dims (H, W): bilinear (order 1, the data pipeline's cv::resize INTER_LINEAR on
    floats) or nearest pixel centre (order 0, as pycaffe's skimage), any value range, float32 out."""
    from ..data.resize import resize
    h, w = im.shape[:2]
    nh, nw = int(new_dims[0]), int(new_dims[1])
    im = np.asarray(im, dtype=np.float32)
    if (h, w) == (nh, nw):
        return im
    if interp_order != 0:
        return np.ascontiguousarray(resize(im.transpose(2, 0, 1), nh, nw).transpose(1, 2, 0))
    yi = np.clip(np.round((np.arange(nh) + 0.5) * h / nh - 0.5).astype(int), 0, h - 1)
    xi = np.clip(np.round((np.arange(nw) + 0.5) * w / nw - 0.5).astype(int), 0, w - 1)
    return im[yi][:, xi]


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


def array_to_datum(arr, label=None):
    """A Datum from a CxHxW array: uint8 arrays go to `data` bytes, others to `float_data`."""
    if arr.ndim != 3:
        raise DataError("array_to_datum: need a 3-D CxHxW array, got shape %s" % (arr.shape,))
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
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != tuple(in_dims):
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
        """Mean per channel (K,) or a full KxHxW mean image."""
        self._check_input(in_)
        mean = np.asarray(mean, dtype=np.float32)
        ms = mean.shape
        if mean.ndim == 1:
            if ms[0] != self.inputs[in_][1]:
                raise CaffeError("mean channels incompatible with input")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if len(ms) == 2:
                ms = (1,) + ms
            if len(ms) != 3 or ms[1:] != tuple(self.inputs[in_][2:]):
                raise CaffeError("mean shape %s incompatible with input shape %s" % (ms, self.inputs[in_]))
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        self._check_input(in_)
        self.input_scale[in_] = scale
