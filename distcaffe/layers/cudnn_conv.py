"""cuDNN convolution (NVCaffe's CuDNNConvolutionLayer engine) through NVIDIA's cuDNN frontend graph API.

cupy 14 dropped its cuDNN bindings; the `nvidia-cudnn-frontend` package (the `gpu-cuda12`/`gpu-cuda13` extras)
is NVIDIA's own Python graph API over cuDNN 9: conv fprop/dgrad/wgrad graphs, heuristics, autotuning over
execution plans, raw device pointers from cupy. Without it (or in CPU mode) convolution stays im2col + GEMM.

Two halves: the plan *description* (ConvSpec, graph_description, ConvPolicy from the layer's NVCaffe fields)
is plain Python and tested on CPU; `CuDNNConvolution` turns a description into built cuDNN plans and runs
them, which only a GPU can do. NOT YET RUN ON A GPU: benchmarks/gpu_check.sh is the check that must pass
before this path is trusted (until then `DISTCAFFE_CUDNN=0` turns it off).
"""
import dataclasses
import os

import numpy as np

from .. import backend
from ..errors import NetError
from ..log import get_logger
from ..proto import caffe_pb2

log = get_logger("cudnn")
_CP = caffe_pb2.ConvolutionParameter
DIRECTIONS = ("fprop", "dgrad", "wgrad")


# --- NVCaffe's cuDNN fields ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ConvPolicy:
    """How a layer's convolutions pick cuDNN plans, from its NVCaffe fields.

    - `engine: CAFFE` -> im2col + GEMM always (`use_cudnn` False);
    - `cudnn_convolution_algo_seeker: FINDEX` (default) -> time every plan of the heuristics once and keep the
      fastest (cudnnFindConvolution*AlgorithmEx's job); `GET` -> the heuristics' first plan;
    - `conv_algos_override` "fwd,bwd_filter,bwd_data": a value >= 0 forced a legacy cudnnConvolution*Algo_t; the
      graph API has no such ordinals, so it selects cuDNN's fallback engines for that direction, unsearched;
    - `cudnn_math_override`: 0 (CUDNN_DEFAULT_MATH) -> no tensor-core plans (no TF32 for FLOAT); 1 or -1 -> any.
    """

    use_cudnn: bool = True
    autotune: bool = True
    fallback: tuple = (False, False, False)        # per direction, in DIRECTIONS order
    tensor_cores: bool = True


def parse_algos_override(text, where):
    """NVCaffe's "fwd,bwd_filter,bwd_data" string -> (fprop, dgrad, wgrad) forced flags (value >= 0)."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        fwd, bwd_filter, bwd_data = (int(p) for p in parts)
    except ValueError:
        raise NetError("%s: conv_algos_override must be three integers 'fwd,bwd_filter,bwd_data' (got '%s')"
                       % (where, text)) from None
    return fwd >= 0, bwd_data >= 0, bwd_filter >= 0


def conv_policy(layer_param):
    """The ConvPolicy of a Convolution/Deconvolution LayerParameter (net defaults already inherited)."""
    cp = layer_param.convolution_param
    where = "layer '%s'" % layer_param.name
    return ConvPolicy(use_cudnn=cp.engine != _CP.CAFFE,
                      autotune=cp.cudnn_convolution_algo_seeker == _CP.FINDEX,
                      fallback=parse_algos_override(cp.conv_algos_override, where),
                      tensor_cores=layer_param.cudnn_math_override != 0)


def inherit_net_defaults(lp, net_param):
    """NVCaffe's Net::Init: default_conv_algos_override / default_cudnn_math_override fill unset layer fields."""
    if (net_param.HasField("default_conv_algos_override") and lp.HasField("convolution_param")
            and not lp.convolution_param.HasField("conv_algos_override")):
        lp.convolution_param.conv_algos_override = net_param.default_conv_algos_override
    if net_param.HasField("default_cudnn_math_override") and not lp.HasField("cudnn_math_override"):
        lp.cudnn_math_override = net_param.default_cudnn_math_override


# --- the plan description (no GPU needed) ----------------------------------------------------------------
def _contiguous_strides(dims):
    strides, acc = [], 1
    for d in reversed(dims):
        strides.append(acc)
        acc *= d
    return list(reversed(strides))


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One convolution in cuDNN's terms: image x (N, C, *spatial), filter w (K, C/group, *kernel), y (N, K, *out),
    all dense NC(D)HW; `dtype` the io type, `compute` the accumulation type."""

    x: tuple
    w: tuple
    pad: tuple
    stride: tuple
    dilation: tuple
    dtype: str
    compute: str

    @property
    def y(self):
        out = tuple((s + 2 * p - (d * (k - 1) + 1)) // st + 1
                    for s, k, p, st, d in zip(self.x[2:], self.w[2:], self.pad, self.stride, self.dilation))
        return (self.x[0], self.w[0]) + out

    @property
    def group(self):
        return self.x[1] // self.w[1]


def conv_spec(layer, x_shape, dtype):
    """The ConvSpec of a (De)Convolution layer for a conv-input of `x_shape` (for Deconvolution the top) in
    math dtype `dtype`; None where cuDNN does not apply (channel axis not 1, not 2-D/3-D, integer types)."""
    dtype = np.dtype(dtype)
    if layer.channel_axis != 1 or layer.num_spatial not in (2, 3) or dtype.kind != "f":
        return None
    w = (layer.conv_out_channels, layer.conv_in_channels // layer.group) + tuple(layer.kernel)
    return ConvSpec(x=tuple(int(d) for d in x_shape), w=w, pad=tuple(layer.pad), stride=tuple(layer.stride),
                    dilation=tuple(layer.dilation), dtype=dtype.name,
                    compute="float64" if dtype == np.float64 else "float32")


def graph_description(spec, direction):
    """What the cuDNN graph of `direction` holds: {"op", "inputs": {port: tensor name}, "output": name,
    "tensors": {name: (dims, strides)}, "attrs"}; fprop: y = x * w, dgrad: dx from dy and w, wgrad: dw from
    x and dy (every tensor in spec.dtype, computing in spec.compute)."""
    if direction not in DIRECTIONS:
        raise ValueError("direction must be one of %s" % (DIRECTIONS,))
    dims = {"x": spec.x, "w": spec.w, "y": spec.y}
    ports = {"fprop": ("conv_fprop", {"image": "x", "weight": "w"}, "y"),
             "dgrad": ("conv_dgrad", {"loss": "y", "filter": "w"}, "x"),
             "wgrad": ("conv_wgrad", {"image": "x", "loss": "y"}, "w")}[direction]
    op, inputs, output = ports
    return {"op": op, "inputs": inputs, "output": output,
            "tensors": {n: (list(d), _contiguous_strides(d)) for n, d in dims.items()},
            "attrs": {"padding": list(spec.pad), "stride": list(spec.stride), "dilation": list(spec.dilation)}}


# --- the GPU half ---------------------------------------------------------------------------------------------
_frontend = None          # the imported `cudnn` module, False when unavailable


def frontend():
    """The cuDNN frontend module when the GPU path can use it, else None (one log line saying why)."""
    global _frontend
    if _frontend is None:
        _frontend = False
        if os.environ.get("DISTCAFFE_CUDNN", "1") == "0":
            log.info("cuDNN off (DISTCAFFE_CUDNN=0): convolution is im2col + cuBLAS")
        else:
            try:
                import cudnn
                _frontend = cudnn
                log.info("cuDNN %s through nvidia-cudnn-frontend", cudnn.backend_version_string())
            except (ImportError, OSError, RuntimeError) as e:
                log.info("cuDNN frontend not usable (%s): convolution is im2col + cuBLAS; pip install "
                         "'distcaffe[gpu-cuda13]' (or gpu-cuda12) for it", e)
    return _frontend or None


class CuDNNConvolution:
    """Built cuDNN plans of one layer, per (ConvSpec, direction), run on cupy arrays of the current stream."""

    def __init__(self, cudnn, policy, name):
        self.cudnn, self.policy, self.name = cudnn, policy, name
        self.handle = cudnn.create_handle()
        self.plans = {}
        self.workspace = None

    def _data_type(self, name):
        dt = self.cudnn.data_type
        return {"float16": dt.HALF, "float32": dt.FLOAT, "float64": dt.DOUBLE}[name]

    def _build(self, spec, direction):
        c, desc = self.cudnn, graph_description(spec, direction)
        io, compute = self._data_type(spec.dtype), self._data_type(spec.compute)
        g = c.pygraph(io_data_type=io, intermediate_data_type=compute, compute_data_type=compute, handle=self.handle)
        tensors = {n: g.tensor(name=n, dim=d, stride=s, data_type=io) for n, (d, s) in desc["tensors"].items()
                   if n != desc["output"]}
        out = getattr(g, desc["op"])(**{port: tensors[n] for port, n in desc["inputs"].items()},
                                     compute_data_type=compute, name=self.name + "_" + direction, **desc["attrs"])
        dims, strides = desc["tensors"][desc["output"]]
        out.set_output(True).set_data_type(io).set_dim(dims).set_stride(strides)
        tensors[desc["output"]] = out
        g.validate()
        g.build_operation_graph()
        forced = self.policy.fallback[DIRECTIONS.index(direction)]
        g.create_execution_plans([c.heur_mode.FALLBACK] if forced else [c.heur_mode.A, c.heur_mode.FALLBACK])
        if not self.policy.tensor_cores:
            g.deselect_numeric_notes([c.numerical_note.TENSOR_CORE])
        g.check_support()
        autotune = self.policy.autotune and not forced
        if autotune:
            g.build_plans(c.build_plan_policy.ALL)        # every plan, timed on first use (_pick)
        else:
            g.build_plans()                               # the heuristics' first plan that builds
        return {"graph": g, "tensors": tensors, "index": None, "autotune": autotune}

    def _workspace(self, nbytes):
        cp = backend.cupy()
        if self.workspace is None or self.workspace.size < nbytes:
            self.workspace = cp.empty(max(int(nbytes), 1), dtype=cp.uint8)
        return self.workspace

    def _pick(self, plan, pack):
        """FINDEX: time each built plan once on these buffers and keep the fastest (cuDNN's Find)."""
        cp, g = backend.cupy(), plan["graph"]
        best = None
        for i in range(g.get_execution_plan_count()):
            ws = self._workspace(g.get_workspace_size_plan_at_index(i))
            start, stop = cp.cuda.Event(), cp.cuda.Event()
            try:
                g.execute_plan_at_index(pack, ws, i, handle=self.handle)     # warm
                start.record()
                g.execute_plan_at_index(pack, ws, i, handle=self.handle)
                stop.record()
                stop.synchronize()
            except Exception:              # a plan that cannot run on these buffers is skipped
                continue
            ms = cp.cuda.get_elapsed_time(start, stop)
            if best is None or ms < best[0]:
                best = (ms, i)
        if best is None:
            raise NetError("layer '%s': no cuDNN plan runs this convolution" % self.name)
        plan["index"] = best[1]

    def run(self, spec, direction, arrays):
        """Run `direction` of `spec` on cupy arrays {"x", "w", "y"} (its output one is overwritten)."""
        key = (spec, direction)
        plan = self.plans.get(key)
        if plan is None:
            plan = self.plans[key] = self._build(spec, direction)
        self.cudnn.set_stream(self.handle, backend.cupy().cuda.get_current_stream().ptr)
        pack = {plan["tensors"][n]: a.data.ptr for n, a in arrays.items()}
        g = plan["graph"]
        if plan["autotune"] and plan["index"] is None:
            self._pick(plan, pack)
        if plan["index"] is None:
            g.execute(pack, self._workspace(g.get_workspace_size()), handle=self.handle)
        else:
            g.execute_plan_at_index(pack, self._workspace(g.get_workspace_size_plan_at_index(plan["index"])),
                                    plan["index"], handle=self.handle)
