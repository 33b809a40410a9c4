"""Datum codec: Caffe's Datum records <-> (C, H, W) arrays, and image decode/encode with Pillow.

Arrays are channel-first in BGR order, as Caffe stores them (CVMatToDatum). Raw records give uint8
(`data`) or float32 (`float_data`); `encoded` records hold JPEG/PNG bytes decoded here (Pillow is the
optional extra `image`). Every failure is a DataError naming the source and the record key.
"""
import io

import numpy as np
from google.protobuf.message import DecodeError

from ..errors import DataError
from ..proto import caffe_pb2
from .resize import bgr_to_gray, resize


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise DataError("encoded images need Pillow: pip install 'distcaffe[image]'") from None
    return Image


def parse_record(message, value, where):
    """Fill `message` from a record's bytes; a record that is no such message is a DataError naming `where`."""
    name = type(message).__name__
    try:
        message.ParseFromString(bytes(value))
    except (DecodeError, ValueError) as e:
        raise DataError("%s: record is not %s %s (%s)" % (where, "an" if name[0] in "AEIOU" else "a", name, e)) \
            from None
    return message


def parse_datum(value, where):
    """A Datum from a record's bytes; `where` names source and key in errors."""
    datum = parse_record(caffe_pb2.Datum(), value, where)
    if not (datum.data or datum.float_data):
        raise DataError("%s: record is not a Datum with image data (no data, float_data or encoded bytes)" % where)
    return datum


def datum_to_array(datum, where, color=None):
    """(C, H, W) array of a Datum: uint8 data, float32 float_data, or the decoded image (color: None native,
    True force 3 channels, False force gray; Caffe's force_color / force_gray apply to encoded data only)."""
    if datum.encoded:
        return decode_image(datum.data, where, color)
    shape = (datum.channels, datum.height, datum.width)
    count = shape[0] * shape[1] * shape[2]
    if datum.data:
        values = np.frombuffer(datum.data, dtype=np.uint8)
    else:
        values = np.asarray(datum.float_data, dtype=np.float32)
    if count <= 0 or values.size != count:
        raise DataError("%s: Datum holds %d values but its shape is %dx%dx%d" % ((where, values.size) + shape))
    return values.reshape(shape)


def array_to_datum(arr, label):
    """Caffe's CVMatToDatum + set_label: a raw uint8 Datum (field for field, so the bytes match Caffe's)."""
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(d) for d in arr.shape)
    datum.data = np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    datum.label = int(label)
    datum.encoded = False
    return datum


def encoded_datum(data, label):
    """Caffe's ReadFileToDatum / imencode path: encoded bytes + label, no shape fields."""
    datum = caffe_pb2.Datum()
    datum.data = bytes(data)
    datum.label = int(label)
    datum.encoded = True
    return datum


def decode_image(data, where, color=None):
    """Decode JPEG/PNG/... bytes to a (C, H, W) uint8 BGR(A) array the way OpenCV's imdecode does."""
    image_mod = _pil()
    try:
        img = image_mod.open(io.BytesIO(bytes(data)))
        if color is False and img.format == "JPEG":
            img.draft("L", img.size)                        # libjpeg's own Y channel, as OpenCV reads it
        img.load()
    except Exception as e:                                  # Pillow raises many types for bad bytes
        raise DataError("%s: cannot decode image (%s)" % (where, e)) from None
    if img.mode in ("L", "1", "I;16", "I", "F") and color is not True:
        return np.asarray(img.convert("L"))[None]
    if img.mode in ("L", "1"):
        return np.repeat(np.asarray(img.convert("L"))[None], 3, axis=0)
    keep_alpha = color is None and (img.mode in ("RGBA", "LA") or "transparency" in img.info)
    rgb = np.asarray(img.convert("RGBA" if keep_alpha else "RGB"))
    order = [2, 1, 0, 3] if keep_alpha else [2, 1, 0]
    bgr = np.ascontiguousarray(rgb.transpose(2, 0, 1)[order])
    return bgr_to_gray(bgr[:3]) if color is False else bgr


def encode_image(arr, ext, where):
    """Encode a (C, H, W) uint8 BGR or gray array as `ext` (png, jpg, ...) with Pillow (cv::imencode's role)."""
    image_mod = _pil()
    hwc = arr[0] if arr.shape[0] == 1 else arr[[2, 1, 0]].transpose(1, 2, 0)
    fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "tif": "TIFF", "tiff": "TIFF"}.get(ext.lower())
    if fmt is None:
        raise DataError("%s: unsupported encode_type '%s' (use png, jpg, bmp or tiff)" % (where, ext))
    buf = io.BytesIO()
    image_mod.fromarray(np.ascontiguousarray(hwc)).save(buf, format=fmt)
    return buf.getvalue()


def short_side_size(h, w, short_side):
    """NVCaffe's ReadImageToCVMat short_side rule: (height, width) with the shorter side short_side, the other
    scaled in integer arithmetic (rounded down)."""
    if h > w:
        return h * short_side // w, short_side
    return short_side, w * short_side // h


def read_image(path, where, color=True, height=0, width=0, short_side=0):
    """Caffe's ReadImageToCVMat: decode a file (colour or gray) and resize to height x width (INTER_LINEAR), or
    NVCaffe's short_side (which wins over height x width) keeping the aspect ratio."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError("%s: cannot read image %s (%s)" % (where, path, e.strerror or e)) from None
    img = decode_image(data, where, bool(color))
    if short_side > 0:
        height, width = short_side_size(img.shape[1], img.shape[2], short_side)
    if height > 0 and width > 0:
        img = resize(img, height, width)
    return img
