"""Gradient buckets: the plan (reverse layer order, about equal sizes), readiness of shared params, and the
reducer's timing (allreduce started during the last backward pass) on a real Net."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distcaffe import Net, backend
from distcaffe.proto import caffe_pb2
from distcaffe.engine.buckets import GradientReducer, plan_buckets, ready_layer_of_params
from distcaffe.engine.comm_single import SingleCommunicator
from google.protobuf import text_format

NET = """
name: "b"
layer { name: "x" type: "Input" top: "x" top: "y" input_param { shape { dim: 4 dim: 5 } shape { dim: 4 dim: 2 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h1" param { name: "shared_w" }
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "h1" top: "h2" param { name: "shared_w" }
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "ip3" type: "InnerProduct" bottom: "h2" top: "out"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "y" top: "loss" }
"""


def build_net(header=""):
    backend.set_mode_cpu()
    backend.set_random_seed(3)
    param = text_format.Parse(header + NET, caffe_pb2.NetParameter())
    param.state.phase = caffe_pb2.TRAIN
    net = Net(param, phase=caffe_pb2.TRAIN)
    rng = np.random.default_rng(0)
    net.blobs["x"].data[...] = rng.normal(size=(4, 5))
    net.blobs["y"].data[...] = rng.normal(size=(4, 2))
    return net


def test_plan_hand_cases():
    # sizes of (ip1.w, ip1.b, ip2.w, ip2.b), ready after layers 1, 1, 3, 3: top layer's params first
    assert plan_buckets([96, 6, 18, 3], [1, 1, 3, 3], 6) == [[2, 3], [0], [1]]
    assert plan_buckets([10] * 6, [0, 1, 2, 3, 4, 5], 3) == [[5, 4], [3, 2], [1, 0]]
    assert plan_buckets([10] * 6, [0, 1, 2, 3, 4, 5], 1) == [[5, 4, 3, 2, 1, 0]]
    assert plan_buckets([5, 5], [0, 0], 6) == [[0], [1]]      # never more buckets than params
    assert plan_buckets([], [], 3) == [[]]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 1000), st.integers(0, 20)), min_size=1, max_size=30), st.integers(1, 8))
def test_plan_properties(params, n):
    sizes, ready = [p[0] for p in params], [p[1] for p in params]
    plan = plan_buckets(sizes, ready, n)
    flat = [i for b in plan for i in b]
    assert sorted(flat) == list(range(len(sizes)))
    assert [ready[i] for i in flat] == sorted(ready, reverse=True)   # reverse layer order, contiguous
    assert 1 <= len(plan) <= min(n, len(sizes)) and all(plan)


def test_shared_param_ready_after_lowest_user():
    net = build_net()
    ready = ready_layer_of_params(net)
    # learnable: shared_w (ip1 and ip2 -> ready after layer 1), ip1.b (1), ip2.b (2), ip3.w, ip3.b (3)
    assert ready == [1, 1, 2, 3, 3]


@pytest.mark.parametrize("iter_size", [1, 2])
def test_reducer_starts_buckets_in_last_backward_pass(iter_size):
    net = build_net()

    class Recording(SingleCommunicator):
        def __init__(self):
            super().__init__()
            self.started = []

        def iallreduce(self, buf):
            self.started.append((passes_seen[0], buf.size))
            return super().iallreduce(buf)

    passes_seen = [0]
    net.before_backward.append(lambda i: passes_seen.__setitem__(0, passes_seen[0] + (i == len(net.layers) - 1)))
    comm = Recording()
    reducer = GradientReducer(net, comm, 3, iter_size=iter_size)
    assert [len(b.params) for b in reducer.buckets] == [2, 1, 2]
    net.clear_param_diffs()
    reducer.begin_iteration()
    for _ in range(iter_size):
        net.forward_backward()
    expected = [p.diff.copy() * 0.5 for p in net.learnable_params]
    assert [s for s in comm.started] == [(iter_size, 2 + 10), (iter_size, 5), (iter_size, 25 + 5)]
    reducer.finish(0.5)
    assert reducer.stats["overlapped"] == 3 and reducer.stats["late"] == 0
    for p, e in zip(net.learnable_params, expected):
        np.testing.assert_allclose(p.diff, e, rtol=1e-6)


def test_reducer_flags_travel_with_last_bucket():
    net = build_net()
    reducer = GradientReducer(net, SingleCommunicator(), 2, flags_fn=lambda: np.array([1.0, 0.0]), n_flags=2)
    net.clear_param_diffs()
    reducer.begin_iteration()
    net.forward_backward()
    np.testing.assert_array_equal(reducer.finish(1.0), [1.0, 0.0])


def test_first_iteration_waits_out_cold_starts(monkeypatch):
    """The first iteration's buckets wait DISTCAFFE_FIRST_COLLECTIVE_TIMEOUT (kernel compiles on other ranks),
    later ones the ordinary collective timeout."""
    from distcaffe.engine.communicator import DoneRequest
    waits = []

    class Timed(DoneRequest):
        def wait(self, timeout=None, what="allreduce"):
            waits.append(timeout)

    class Comm(SingleCommunicator):
        def iallreduce(self, buf):
            return Timed()

    monkeypatch.setenv("DISTCAFFE_FIRST_COLLECTIVE_TIMEOUT", "900")
    net = build_net()
    reducer = GradientReducer(net, Comm(), 2)
    for _ in range(2):
        net.clear_param_diffs()
        reducer.begin_iteration()
        net.forward_backward()
        reducer.finish(1.0)
    assert waits == [900.0, 900.0, None, None]


@pytest.mark.parametrize("header, fp16_comm, want", [
    ("", True, np.float32),
    ("default_forward_type: FLOAT16 default_backward_type: FLOAT16 ", False, np.float32),   # MPI: sums fp32
    ("default_forward_type: FLOAT16 default_backward_type: FLOAT16 ", True, np.float16),    # NCCL: stays fp16
    ("default_forward_type: FLOAT16 ", True, np.float32),                                   # fp32 diffs
])
def test_bucket_type_follows_the_stored_gradients(header, fp16_comm, want):
    class Comm(SingleCommunicator):
        reduces_fp16 = fp16_comm

    net = build_net(header)
    reducer = GradientReducer(net, Comm(), 2)
    assert {b.buffer.dtype for b in reducer.buckets} == {np.dtype(want)}
    net.clear_param_diffs()
    reducer.begin_iteration()
    net.forward_backward()
    expected = [p.diff.astype(np.float64) * 0.5 for p in net.learnable_params]
    reducer.finish(0.5)
    for p, e in zip(net.learnable_params, expected):
        np.testing.assert_allclose(p.diff, e, rtol=2e-3)
