"""A tiny classifier net and solver builder shared by the solver unit tests."""
import numpy as np

import distcaffe
from distcaffe import caffe_pb2, solvers
from distcaffe.io import parse_net_text

NET = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 6 dim: 5 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 6 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 7 weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" param { lr_mult: 1 } param { lr_mult: 0 }
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def make_solver(net_text=NET, seed=5, **fields):
    """A solver of `type` (default SGD) over the tiny net with fixed random inputs."""
    distcaffe.set_mode_cpu()
    p = caffe_pb2.SolverParameter(base_lr=0.1, lr_policy="fixed", max_iter=20, random_seed=seed,
                                  snapshot_after_train=False)
    p.net_param.CopyFrom(parse_net_text(net_text))
    for k, v in fields.items():
        if isinstance(v, list):
            getattr(p, k).extend(v)
        else:
            setattr(p, k, v)
    s = solvers.get_solver(p)
    rng = np.random.RandomState(seed)
    s.net.blobs["data"].data[...] = rng.randn(6, 5)
    s.net.blobs["label"].data[...] = rng.randint(0, 3, 6)
    return s


class Capture:
    """Callback recording the gradients (before the update) and weights of every iteration."""

    def __init__(self):
        self.events, self.grads, self.weights = [], [], []

    def on_start(self, solver):
        self.events.append(("start", solver.iter))

    def on_gradients_ready(self, solver):
        self.events.append(("grads", solver.iter))
        self.grads.append([p.diff.astype(np.float64) for p in solver.net.learnable_params])
        self.weights.append([p.data.astype(np.float64) for p in solver.net.learnable_params])


def weights(solver):
    return [p.data.astype(np.float64) for p in solver.net.learnable_params]
