"""numpy standing in for cupy -- an *instrument*, not a test double for the project's tests.

Vendored from the review tool ../shared/tools/hostcupy (adapted: `get(out=)`, a `cupyx.empty_pinned`, the
few extra functions distcaffe now calls, and `uninstall()`), so CI can count host syncs without a GPU.

It lets distcaffe's GPU code path (backend mode GPU, `xp` = this module, SyncedArray device copies) run on a
machine without a GPU, and records:
  * VIOLATIONS: places where a host (numpy) array meets a device array in a way cupy refuses
    (cupy raises TypeError for numpy operands in ufuncs / cupy functions, and ValueError for
    `dev[...] = numpy_array`, see cupy/_core/_kernel.pyx _preprocess_arg and core.pyx fill);
  * COUNTS: would-be kernel launches (ufunc calls, copies, fills, GEMMs, reductions), H2D / D2H copies and
    host synchronisations (float()/bool()/int()/item()/tolist()/.get() of device arrays, boolean-mask getitem).
Numerics are numpy's (no fp16 tensor cores, no cuBLAS), so only the *structure* is meaningful.
"""
import collections
import traceback

import numpy as np

COUNTS = collections.Counter()          # (scope, kind) -> n
VIOLATIONS = collections.Counter()      # (kind, site) -> n
SCOPE = ["other"]
ROOTS = ("/distcaffe/", "/engine/", "/launcher/")
SITES = False                           # also count kinds per source line (slow)
SITE_COUNTS = collections.Counter()


def site(depth_skip=2):
    for fr in reversed(traceback.extract_stack()[:-depth_skip]):
        f = fr.filename
        for r in ROOTS:
            i = f.find(r)
            if i >= 0:
                return "%s:%d" % (f[i + 1:], fr.lineno)
    return "?"


def count(kind, n=1):
    COUNTS[(SCOPE[-1], kind)] += n
    if SITES:
        SITE_COUNTS[(kind, site(3))] += n


def _nb(x):
    return x.nbytes if isinstance(x, np.ndarray) else 0


def _strided(x):
    """True for a non-contiguous operand whose innermost stride is not the item size (uncoalesced on a GPU)."""
    return (isinstance(x, np.ndarray) and x.ndim > 0 and not x.flags.c_contiguous and x.size > 1
            and x.strides[-1] != x.itemsize)


def traffic(ins, outs, flops=0):
    COUNTS[(SCOPE[-1], "bytes")] += sum(_nb(x) for x in ins) + sum(_nb(x) for x in outs)
    COUNTS[(SCOPE[-1], "strided_bytes")] += sum(_nb(x) for x in ins if _strided(x)) + sum(
        _nb(x) for x in outs if _strided(x))
    COUNTS[(SCOPE[-1], "flops")] += flops


STRICT = False                          # raise where cupy raises (for running test suites)


class CupyWouldRaise(TypeError):
    pass


def violate(kind):
    VIOLATIONS[(kind, site(3))] += 1
    if STRICT:
        raise CupyWouldRaise("[hostcupy] cupy would raise here: " + kind)


def _is_host(x):
    return type(x) is np.ndarray


def _check_host_args(args, what):
    for a in args:
        if _is_host(a):
            violate("%s: numpy.ndarray operand (shape %s) where cupy needs a device array" % (what, a.shape))
        elif isinstance(a, (list, tuple)):
            for b in a:
                if _is_host(b):
                    violate("%s: numpy.ndarray in a sequence operand" % what)


def _unwrap(x):
    if isinstance(x, DevArray):
        return x.view(np.ndarray)
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    return x


def _wrap(x):
    if isinstance(x, np.ndarray) and not isinstance(x, DevArray):
        return x.view(DevArray)
    if isinstance(x, np.generic):            # cupy reductions return 0-d device arrays, not numpy scalars
        return np.asarray(x).view(DevArray)
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


class DevArray(np.ndarray):
    """A 'device' array: numpy memory, cupy's rules for mixing with host arrays, counted operations."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kw):
        _check_host_args(inputs, "ufunc %s.%s" % (ufunc.__name__, method))
        name = ufunc.__name__
        count("gemm" if name == "matmul" else "reduce" if method == "reduce" else
              "scatter_add" if method == "at" else "elementwise")
        args = _unwrap(inputs)
        if out is not None:
            kw["out"] = tuple(_unwrap(o) for o in out)
        if name == "matmul" and method == "__call__" and any(
                getattr(a, "dtype", None) == np.float16 for a in args) and "out" not in kw:
            # numpy has no fp16 BLAS; the emulator only needs the shape/dtype (cuBLAS: fp16 in/out, fp32 accumulate)
            res = np.matmul(*[a.astype(np.float32) for a in args]).astype(np.float16)
        else:
            res = getattr(ufunc, method)(*args, **kw)
        outs = kw.get("out") or ((res,) if isinstance(res, np.ndarray) else ())
        flops = 0
        if name == "matmul":
            a, b = args[0], args[1]
            flops = 2 * int(np.prod(res.shape)) * a.shape[-1]
        traffic([x for x in args if isinstance(x, np.ndarray)], outs if method != "at" else (), flops)
        if method == "at":
            return None
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(res)

    def __array_function__(self, func, types, args, kwargs):
        _check_host_args(args, "np.%s" % func.__name__)
        view_only = func.__name__ in ("moveaxis", "transpose", "broadcast_to", "broadcast_arrays", "reshape",
                                      "shape", "ndim", "may_share_memory", "shares_memory", "result_type")
        if not view_only:
            count("function")
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    # --- copies / conversions ---------------------------------------------------------------------------
    def astype(self, dtype, order="K", casting="unsafe", subok=True, copy=True):
        res = self.view(np.ndarray).astype(dtype, order=order, casting=casting, copy=copy)
        if copy or np.dtype(dtype) != self.dtype:
            count("elementwise")
            traffic([self.view(np.ndarray)], [res])
        return _wrap(res)

    def copy(self, order="C"):
        count("elementwise")
        res = self.view(np.ndarray).copy(order)
        traffic([self.view(np.ndarray)], [res])
        return _wrap(res)

    def reshape(self, *shape, **kw):
        res = self.view(np.ndarray).reshape(*shape, **kw)
        if not np.may_share_memory(res, self.view(np.ndarray)):
            count("elementwise")                     # reshape of a non-contiguous view: a copy kernel
            traffic([self.view(np.ndarray)], [res])
        return _wrap(res)

    def ravel(self, order="C"):
        res = self.view(np.ndarray).ravel(order)
        if not np.may_share_memory(res, self.view(np.ndarray)):
            count("elementwise")
        return _wrap(res)

    def fill(self, value):
        count("elementwise")
        self.view(np.ndarray).fill(value)

    def argmax(self, axis=None, out=None, **kw):
        count("reduce")
        return _wrap(self.view(np.ndarray).argmax(axis=axis, **kw))

    def get(self, stream=None, order="C", out=None):
        count("d2h")
        count("sync")
        if out is not None:
            out[...] = self.view(np.ndarray)
            return out
        return np.array(self.view(np.ndarray))

    def set(self, arr, stream=None):
        count("h2d")
        self.view(np.ndarray)[...] = arr

    def __float__(self):
        count("sync")
        return float(self.view(np.ndarray))

    def __int__(self):
        count("sync")
        return int(self.view(np.ndarray))

    def __index__(self):
        count("sync")
        return int(self.view(np.ndarray))

    def __bool__(self):
        count("sync")
        return bool(self.view(np.ndarray))

    def item(self, *args):
        count("sync")
        return self.view(np.ndarray).item(*args)

    def tolist(self):
        count("sync")
        return self.view(np.ndarray).tolist()

    # --- indexing -----------------------------------------------------------------------------------------
    @staticmethod
    def _key_kind(key):
        keys = key if isinstance(key, tuple) else (key,)
        kind = "basic"
        for k in keys:
            if isinstance(k, np.ndarray) or isinstance(k, list):
                if _is_host(k):
                    count("h2d")                     # cupy uploads numpy index arrays
                if np.asarray(k).dtype == bool:
                    return "mask"
                kind = "advanced"
        return kind

    def __getitem__(self, key):
        kind = self._key_kind(key)
        if kind == "mask":
            count("elementwise", 2)
            count("sync")                            # boolean getitem needs the count of True values
        elif kind == "advanced":
            count("elementwise")
        return _wrap(self.view(np.ndarray)[_unwrap(key)])

    def __setitem__(self, key, value):
        if _is_host(value) and value.ndim > 0:
            violate("device[...] = numpy.ndarray of shape %s (cupy: ValueError non-scalar numpy.ndarray "
                    "cannot be used for fill)" % (value.shape,))
        kind = self._key_kind(key)
        target = self.view(np.ndarray)[_unwrap(key)] if kind == "basic" else None
        same = (kind == "basic" and isinstance(value, DevArray) and target.shape == value.shape
                and target.strides == value.strides
                and target.__array_interface__["data"][0] == value.__array_interface__["data"][0])
        if not same:                                  # cupy skips x[...] = x (same pointer/shape/strides)
            count("elementwise")
            if target is not None:
                traffic([value] if isinstance(value, np.ndarray) else [], [target])
        self.view(np.ndarray)[_unwrap(key)] = _unwrap(value)


# --- module-level API (the subset distcaffe uses) --------------------------------------------------------
ndarray = DevArray
inf = np.inf
float16, float32, float64, int32, int64, bool_ = np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_


def asarray(a, dtype=None, order=None):
    if isinstance(a, DevArray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
    count("h2d")
    return np.array(a, dtype=dtype).view(DevArray)


array = asarray


def _creator(fn, kernel=True):
    def make(*args, **kw):
        _check_host_args(args, fn.__name__)
        if kernel:
            count("elementwise")
        return _wrap(fn(*_unwrap(args), **_unwrap(kw)))
    make.__name__ = fn.__name__
    return make


zeros = _creator(np.zeros)
empty = _creator(np.empty, kernel=False)
full = _creator(np.full)
ones = _creator(np.ones)
arange = _creator(np.arange)
zeros_like = _creator(np.zeros_like)
ones_like = _creator(np.ones_like)
full_like = _creator(np.full_like)
empty_like = _creator(np.empty_like, kernel=False)


def _fn(name, view_only=False):
    f = getattr(np, name)

    def call(*args, **kw):
        _check_host_args(args, "cupy.%s" % name)
        if not view_only:
            count("function")
        return _wrap(f(*_unwrap(args), **_unwrap(kw)))
    call.__name__ = name
    return call


for _n in ("where", "stack", "concatenate", "pad", "take_along_axis", "tile", "nonzero", "lexsort", "argmax", "clip", "einsum"):
    globals()[_n] = _fn(_n)
for _n in ("moveaxis", "transpose", "broadcast_to", "broadcast_arrays"):
    globals()[_n] = _fn(_n, view_only=True)
# ufuncs: numpy's own; a DevArray operand routes them through DevArray.__array_ufunc__
for _n in ("maximum", "minimum", "sqrt", "exp", "log", "tanh", "abs", "sign", "log1p", "expm1", "fmax", "add",
           "multiply", "subtract", "divide", "isfinite", "logical_not", "matmul", "rint", "floor"):
    globals()[_n] = getattr(np, _n)


class _Lib:
    class stride_tricks:
        @staticmethod
        def as_strided(x, shape=None, strides=None):
            if _is_host(x):
                violate("as_strided of a numpy.ndarray")
            return _wrap(np.lib.stride_tricks.as_strided(_unwrap(x), shape=shape, strides=strides))


lib = _Lib


class random:
    _rng = np.random.default_rng(0)

    @classmethod
    def seed(cls, s=None):
        cls._rng = np.random.default_rng(s)

    @classmethod
    def random_sample(cls, size=None, dtype=float):
        count("elementwise")
        return _wrap(cls._rng.random(size, dtype=dtype))


class cuda:
    class Device:
        def __init__(self, i=0):
            self.id = i

        def use(self):
            pass

        def synchronize(self):
            count("sync")

    class runtime:
        @staticmethod
        def getDeviceCount():
            return 1


def is_available():
    return True


class cupyx:
    """The one cupyx function distcaffe uses: page-locked host buffers (plain numpy memory here)."""

    @staticmethod
    def empty_pinned(shape, dtype=float):
        return np.empty(shape, dtype)


_saved = {}


def install():
    """Make distcaffe's GPU mode use this module (call before building nets); `uninstall()` undoes it."""
    import sys
    from distcaffe import backend
    _saved.update(cupy=backend._cupy, to_host=backend.to_host, cupyx=sys.modules.get("cupyx"))
    backend._cupy = sys.modules[__name__]
    sys.modules["cupyx"] = cupyx
    orig_to_host = backend.to_host

    def to_host(arr):
        if isinstance(arr, DevArray):
            return arr.get()
        return orig_to_host(arr)
    backend.to_host = to_host
    backend.set_mode_gpu()
    return backend


def uninstall():
    import sys
    from distcaffe import backend
    backend.set_mode_cpu()
    backend._cupy, backend.to_host = _saved["cupy"], _saved["to_host"]
    if _saved["cupyx"] is None:
        sys.modules.pop("cupyx", None)
    else:
        sys.modules["cupyx"] = _saved["cupyx"]


def reset():
    COUNTS.clear()
    VIOLATIONS.clear()
    SITE_COUNTS.clear()


def summary(scopes=None):
    kinds = ("elementwise", "reduce", "gemm", "function", "scatter_add", "h2d", "d2h", "sync", "bytes",
             "strided_bytes", "flops")
    by = collections.defaultdict(collections.Counter)
    for (scope, kind), n in COUNTS.items():
        by[scope][kind] += n
    return by, kinds
