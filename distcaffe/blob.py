"""Blob: N-D data + diff with host/device copies synced lazily, like Caffe's Blob and SyncedMemory.

Each of data/diff is a SyncedArray: a flat buffer with a host (numpy) copy and, in GPU mode, a device
(cupy) copy, and a `head` saying which is fresh. Blobs that share data (Split, Flatten, shared params)
share the SyncedArray and keep their own shape. On CPU the device side *is* the host side: no copies.
"""
import numpy as np

from . import backend
from .errors import NetError

UNINIT, HOST, DEVICE, SYNCED = "uninit", "host", "device", "synced"
INT_MAX = 2 ** 31 - 1   # Caffe's bound on every dimension and on the element count of a blob


class SyncedArray:
    """A flat buffer of `size` elements kept on host and/or device (Caffe's SyncedMemory).

    Both copies are allocated once and reused by every transfer (`get(out=)` / `set`), the host one in
    page-locked memory in GPU mode, so copies need no allocation and may run asynchronously."""

    __slots__ = ("size", "dtype", "_host", "_dev", "head", "lms")

    def __init__(self, size, dtype=np.float32):
        self.size = int(size)
        self.dtype = np.dtype(dtype)
        self._host = None
        self._dev = None
        self.head = UNINIT
        self.lms = None          # (manager, entry) when Large Model Support manages this array

    def _host_buffer(self):
        if self._host is None:
            self._host = backend.host_empty(self.size, self.dtype)
            if self.head == UNINIT:
                self._host[...] = 0
                self.head = HOST
        return self._host

    def host(self):
        if self.lms is not None:
            return self.lms[0].host(self.lms[1], False)
        if self.head == DEVICE:
            self._dev.get(out=self._host_buffer())
            self.head = SYNCED
        return self._host_buffer()

    def mutable_host(self):
        if self.lms is not None:
            return self.lms[0].host(self.lms[1], True)
        h = self.host()
        self.head = HOST
        return h

    def dev(self):
        if self.lms is not None:
            return self.lms[0].access(self.lms[1], False)
        if not backend.is_gpu():
            return self.host()
        cp = backend.cupy()
        if self._dev is None:
            self._dev = cp.empty(self.size, self.dtype)
            if self.head in (UNINIT, DEVICE):
                self._dev.fill(0)
                self.head = DEVICE
            else:
                self._dev.set(self._host)
                self.head = SYNCED
        elif self.head == HOST:
            self._dev.set(self._host)
            self.head = SYNCED
        return self._dev

    def mutable_dev(self):
        if self.lms is not None:
            return self.lms[0].access(self.lms[1], True)
        d = self.dev()
        if backend.is_gpu():
            self.head = DEVICE
        else:
            self.head = HOST
        return d

    def drop_device(self):
        """Free the device copy, writing it back first if it is the fresh one (Large Model Support)."""
        if self._dev is None:
            return
        if self.head == DEVICE:
            self.host()
        self._dev = None
        self.head = HOST

    def nbytes(self):
        return self.size * self.dtype.itemsize


class Blob:
    """pycaffe-compatible blob: `.data`/`.diff` are host views; layers use `dev_data`/`mut_dev_data`.
    Data and diff have their own storage types (NVCaffe: the producer's forward_type / backward_type)."""

    def __init__(self, shape=None, dtype=np.float32, name="", diff_dtype=None):
        self.name = name
        self.dtype = np.dtype(dtype)
        self.diff_dtype = np.dtype(diff_dtype or dtype)
        self._shape = ()
        self._count = 0
        self._data = SyncedArray(0, self.dtype)
        self._diff = SyncedArray(0, self.diff_dtype)
        self.capacity = 0
        if shape is not None:  # None: not yet shaped (count 0); () is Caffe's 0-axis scalar (count 1)
            self.reshape(tuple(shape))

    # --- shape -----------------------------------------------------------------------------------
    @property
    def shape(self):
        return self._shape

    @property
    def count(self):
        return self._count

    @property
    def num_axes(self):
        return len(self._shape)

    def count_range(self, start, end=None):
        end = len(self._shape) if end is None else end
        return int(np.prod(self._shape[start:end], dtype=np.int64))

    def legacy_shape(self, index):
        """Caffe's LegacyShape: dimension `index` of the old 4-D view (1 past the last axis); 4 axes at most."""
        if len(self._shape) > 4:
            raise NetError("blob %s: num/channels/height/width need at most 4 axes, the shape is %s"
                           % (self.name, self.shape_string()))
        return self._shape[index] if index < len(self._shape) else 1

    num = property(lambda self: self.legacy_shape(0), doc="pycaffe's Blob.num (axis 0 of the 4-D view)")
    channels = property(lambda self: self.legacy_shape(1), doc="pycaffe's Blob.channels (axis 1)")
    height = property(lambda self: self.legacy_shape(2), doc="pycaffe's Blob.height (axis 2)")
    width = property(lambda self: self.legacy_shape(3), doc="pycaffe's Blob.width (axis 3)")

    def canonical_axis(self, axis):
        n = len(self._shape)
        if not -n <= axis < max(n, 1):
            raise NetError("axis %d out of range for blob %s of shape %s" % (axis, self.name, self.shape_string()))
        return axis + n if axis < 0 else axis

    def shape_string(self):
        return " ".join(str(d) for d in self._shape) + " (%d)" % self.count

    def reshape(self, *shape):
        """Reshape; the buffers grow (zeroed) only when the new count exceeds the capacity, as in Caffe."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise NetError("blob %s: negative dimension in shape %s" % (self.name, shape))
        count = 1
        for d in shape:  # Python ints: no silent int64 wrap-around on absurd shapes
            count *= d
        if count > INT_MAX or any(d > INT_MAX for d in shape):
            raise NetError("blob %s: shape %s has %d elements; a blob holds at most 2^31-1 (INT_MAX) elements and "
                           "dimensions, as in Caffe" % (self.name, "x".join(map(str, shape)), count))
        self._shape = shape
        self._count = count
        if count > self.capacity:
            self.capacity = count
            self._data = SyncedArray(count, self.dtype)
            self._diff = SyncedArray(count, self.diff_dtype)

    def reshape_like(self, other):
        self.reshape(other.shape)

    def _view(self, flat):
        return flat[: self.count].reshape(self._shape)

    # --- host side (pycaffe) ----------------------------------------------------------------------
    @property
    def data(self):
        return self._view(self._data.mutable_host())

    @data.setter
    def data(self, value):
        self.data[...] = value

    @property
    def diff(self):
        return self._view(self._diff.mutable_host())

    @diff.setter
    def diff(self, value):
        self.diff[...] = value

    # --- device side (layers) ---------------------------------------------------------------------
    @property
    def dev_data(self):
        return self._view(self._data.dev())

    @property
    def mut_dev_data(self):
        return self._view(self._data.mutable_dev())

    @property
    def dev_diff(self):
        return self._view(self._diff.dev())

    @property
    def mut_dev_diff(self):
        return self._view(self._diff.mutable_dev())

    def _device_ptr(self, synced):
        if not backend.is_gpu():
            raise NetError("blob %s: device pointers exist in GPU mode only (caffe.set_mode_gpu())" % self.name)
        return synced.dev().data.ptr

    _gpu_data_ptr = property(lambda self: self._device_ptr(self._data), doc="pycaffe: address of the device data")
    _gpu_diff_ptr = property(lambda self: self._device_ptr(self._diff), doc="pycaffe: address of the device diff")

    # --- sharing (Caffe's ShareData/ShareDiff) --------------------------------------------------
    def share_data(self, other):
        if self.count != other.count:
            raise NetError("cannot share data of blob %s (%s) with %s (%s)"
                           % (other.name, other.shape_string(), self.name, self.shape_string()))
        self._data = other._data
        self.dtype = other.dtype

    def share_diff(self, other):
        if self.count != other.count:
            raise NetError("cannot share diff of blob %s with %s: counts differ" % (other.name, self.name))
        self._diff = other._diff
        self.diff_dtype = other.diff_dtype

    def shares_data_with(self, other):
        return self._data is other._data

    # --- proto I/O --------------------------------------------------------------------------------
    def to_proto(self, write_diff=False, old_format=False):
        """BlobProto with float data (and diff), `shape` form or the legacy 4-D fields."""
        from .proto import caffe_pb2
        bp = caffe_pb2.BlobProto()
        if old_format and len(self._shape) <= 4:
            dims = (1,) * (4 - len(self._shape)) + tuple(self._shape)
            bp.num, bp.channels, bp.height, bp.width = dims
        else:
            bp.shape.dim.extend(self._shape)
        # read the host side without marking it fresh: saving must not force a re-upload to the device
        data, diff = self._view(self._data.host()), self._view(self._diff.host())
        if self.dtype == np.float64:
            bp.double_data.extend(data.ravel().tolist())
            if write_diff:
                bp.double_diff.extend(diff.ravel().tolist())
        else:
            bp.data.extend(data.astype(np.float32).ravel().tolist())
            if write_diff:
                bp.diff.extend(diff.astype(np.float32).ravel().tolist())
        return bp

    def from_array(self, arr, reshape=True, what="blob"):
        arr = np.asarray(arr)
        if reshape:
            self.reshape(arr.shape)
        elif arr.size != self.count:
            raise NetError("%s: cannot copy %s values into blob of shape %s" % (what, arr.shape, self.shape_string()))
        self.data[...] = arr.reshape(self._shape)

    def __repr__(self):
        return "<Blob %s %s %s>" % (self.name, self.shape_string(), self.dtype.name)
