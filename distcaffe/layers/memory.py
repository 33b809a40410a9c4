"""Layers fed from memory or from Python: DummyData (filler-generated tops), MemoryData (arrays handed in with
`set_input_arrays`, as pycaffe does) and Python (a user's layer class, loaded from `python_param`)."""
import functools
import importlib
import inspect
import traceback

import numpy as np

from ..blob import Blob
from ..errors import CaffeError, NetError
from ..fillers import fill
from ..log import get_logger
from ..proto import caffe_pb2
from .base import Layer, register

log = get_logger("layers")


@register("DummyData")
class DummyDataLayer(Layer):
    """Tops filled by `dummy_data_param` fillers (one for all tops, or one per top); shapes from `shape` or the
    legacy num/channels/height/width. Constant fillers fill once at setup, the others on every forward."""

    exact_num_bottom = 0
    min_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.dummy_data_param
        num_top, num_fillers = len(top), len(p.data_filler)
        self.check(num_fillers in (0, 1, num_top),
                   "Number of data fillers must be 0, 1 or equal to the number of tops: %d; you specified %d data "
                   "fillers." % (num_top, num_fillers))
        legacy = [(name, getattr(p, name)) for name in ("num", "channels", "height", "width")]
        if any(len(values) for _, values in legacy):
            self.check(len(p.shape) == 0, "Both shape and legacy fields were specified")
            for name, values in legacy:
                self.check(len(values) in (1, num_top), "Must specify '%s' once, or once per top blob (%d); "
                                                        "specified %d." % (name, num_top, len(values)))
            shapes = [tuple(values[0 if len(values) == 1 else i] for _, values in legacy) for i in range(num_top)]
        else:
            self.check(len(p.shape) in (1, num_top), "Must specify 'shape' once, or once per top blob (%d); "
                                                     "specified %d." % (num_top, len(p.shape)))
            shapes = [tuple(p.shape[0 if len(p.shape) == 1 else i].dim) for i in range(num_top)]
        if num_fillers == 0:
            self.fillers = [caffe_pb2.FillerParameter(type="constant", value=0)]
        else:
            self.fillers = list(p.data_filler)
        self.refill = [f.type != "constant" for f in self.fillers]
        for i, t in enumerate(top):
            t.reshape(shapes[i])
            fid = self.filler_index(i)
            if not self.refill[fid]:
                fill(t, self.fillers[fid], what="layer '%s' top %d" % (self.name, i))

    def filler_index(self, top_index):
        return top_index if len(self.fillers) > 1 else 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        for i, t in enumerate(top):
            fid = self.filler_index(i)
            if self.refill[fid]:
                fill(t, self.fillers[fid], what="layer '%s' top %d" % (self.name, i))

    def backward(self, top, propagate_down, bottom):
        pass


@register("MemoryData")
class MemoryDataLayer(Layer):
    """Serves (data, label) batches of `memory_data_param.batch_size` from arrays given by `set_input_arrays`,
    one batch per forward, wrapping around at the end (Caffe's MemoryDataLayer::Reset + Forward)."""

    exact_num_bottom = 0
    exact_num_top = 2

    def layer_setup(self, bottom, top):
        p = self.layer_param.memory_data_param
        self.batch_size, self.channels, self.height, self.width = p.batch_size, p.channels, p.height, p.width
        self.check(self.batch_size * self.channels * self.height * self.width > 0,
                   "batch_size, channels, height, and width must be specified and positive in memory_data_param "
                   "(got %d, %d, %d, %d)" % (self.batch_size, self.channels, self.height, self.width))
        self.data_arr = self.label_arr = None
        self.pos = 0

    def reshape(self, bottom, top):
        top[0].reshape((self.batch_size, self.channels, self.height, self.width))
        top[1].reshape((self.batch_size,))

    def set_input_arrays(self, data, labels):
        """pycaffe's Net.set_input_arrays: data N x C x H x W, labels N (or N x 1 x 1 x 1), N a multiple of
        batch_size. The arrays are kept by reference (no copy when already contiguous)."""
        data, labels = np.asarray(data), np.asarray(labels)
        if labels.ndim == 1:
            labels = labels[:, None, None, None]
        for arr, what, dims in ((data, "data array", (self.channels, self.height, self.width)),
                                (labels, "labels array", (1, 1, 1))):
            self.check(arr.ndim == 4, "%s must be 4-d, got shape %s" % (what, arr.shape))
            self.check(arr.dtype.kind in "fiu", "%s must be numeric, got %s" % (what, arr.dtype))
            for axis, name, want in zip((1, 2, 3), ("channels", "height", "width"), dims):
                self.check(arr.shape[axis] == want, "%s has wrong number of %s (%d, want %d)"
                           % (what, name, arr.shape[axis], want))
        self.check(data.shape[0] == labels.shape[0], "data and labels must have the same first dimension (%d vs %d)"
                   % (data.shape[0], labels.shape[0]))
        self.check(data.shape[0] > 0 and data.shape[0] % self.batch_size == 0,
                   "first dimensions of input arrays must be a multiple of batch size %d, got %d"
                   % (self.batch_size, data.shape[0]))
        if self.layer_param.HasField("transform_param"):
            log.warning("%s does not transform array data on Reset()", self.type)
        self.data_arr = np.ascontiguousarray(data)
        self.label_arr = np.ascontiguousarray(labels).reshape(-1)
        self.pos = 0

    def forward(self, bottom, top):
        if self.data_arr is None:
            raise self.error("MemoryDataLayer needs to be initialized by calling Reset: hand it arrays with "
                             "set_input_arrays(data, labels) first")
        xp, b = self.xp, self.batch_size
        top[0].mut_dev_data[...] = xp.asarray(self.data_arr[self.pos:self.pos + b])
        top[1].mut_dev_data[...] = xp.asarray(self.label_arr[self.pos:self.pos + b])
        self.pos = (self.pos + b) % self.data_arr.shape[0]

    def backward(self, top, propagate_down, bottom):
        pass


class BlobVec(list):
    """pycaffe's `layer.blobs` of a Python layer: a list of Blobs that `add_blob(*shape)` extends."""

    def __init__(self, dtype, owner):
        super().__init__()
        self.dtype = dtype
        self.owner = owner

    def add_blob(self, *shape):
        self.append(Blob(shape, self.dtype, name="%s[%d]" % (self.owner, len(self))))


@functools.lru_cache(maxsize=None)
def _user_error_class(kind):
    """A NetError that is also a `kind` (the user's exception class): the CLI prints it as one line, while pycaffe
    code catching, say, RuntimeError from a Python layer's setup (BVLC's test_python_layer does) still catches it."""
    return type(kind.__name__, (NetError, kind), {"__module__": kind.__module__})


@register("Python")
class PythonLayer(Layer):
    """A layer written in Python, as in pycaffe: `python_param.module` is imported, its class `layer` is built with
    the LayerParameter, given `param_str`, `phase` and `blobs`, and its setup/reshape/forward/backward are called
    with the bottom/top Blob lists (host `.data`/`.diff`)."""

    holds_bottom_diff = True     # user code may do anything with its blobs' diffs: diff sharing leaves them alone

    def __init__(self, layer_param, dtype=np.float32, bwd_dtype=None):
        super().__init__(layer_param, dtype=dtype, bwd_dtype=bwd_dtype)
        p = layer_param.python_param
        self.check(p.module and p.layer, "python_param must name the module and the layer class (module: '%s', "
                                         "layer: '%s')" % (p.module, p.layer))
        try:
            module = importlib.import_module(p.module)
        except Exception as e:
            raise self.error("cannot import module '%s' (python_param.module) for class '%s': %s: %s"
                             % (p.module, p.layer, type(e).__name__, e)) from None
        cls = getattr(module, p.layer, None)
        if cls is None:
            raise self.error("module '%s' (%s) has no class '%s' (python_param.layer)"
                             % (p.module, getattr(module, "__file__", "?"), p.layer))
        try:
            try:
                inspect.signature(cls).bind(layer_param)
                args = (layer_param,)
            except TypeError:
                args = ()
            except ValueError:
                args = (layer_param,)
            self.impl = cls(*args)
        except Exception as e:
            raise self.error("creating %s.%s failed: %s: %s" % (p.module, p.layer, type(e).__name__, e)) from None
        self.blobs = BlobVec(self.dtype, self.name)
        self.impl.blobs = self.blobs
        self.impl.param_str = p.param_str
        self.impl.phase = int(self.phase)

    def layer_setup(self, bottom, top):
        self._checked("setup", bottom, top)

    def reshape(self, bottom, top):
        self._checked("reshape", bottom, top)

    def _checked(self, method, bottom, top):
        """The user's setup/reshape, whose exceptions (the net does not fit what the layer expects) become one
        line naming the layer, its class and the raising line; forward/backward keep the user's traceback."""
        try:
            getattr(self.impl, method)(bottom, top)
        except CaffeError:
            raise
        except Exception as e:
            frame = traceback.extract_tb(e.__traceback__)[-1]
            p = self.layer_param.python_param
            message = str(self.error("%s.%s.%s raised %s: %s (%s:%d)" % (p.module, p.layer, method, type(e).__name__,
                                                                        e, frame.filename, frame.lineno)))
            try:
                error = _user_error_class(type(e))(message)
            except TypeError:   # an exception class that takes other arguments or cannot be combined
                error = NetError(message)
            raise error from e

    def forward(self, bottom, top):
        self.impl.forward(bottom, top)

    def backward(self, top, propagate_down, bottom):
        self.impl.backward(top, list(propagate_down), bottom)
