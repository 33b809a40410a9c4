"""Forward+backward time of LeNet (batch 64) and CIFAR-10 quick (batch 100): distcaffe vs PyTorch, same script.

usage: python benchmarks/net_speed.py [--iters 30] [--threads 2]
Reports the median ms per pass of each and the ratio distcaffe / PyTorch (PyTorch is optional: without it,
only distcaffe's times are printed). Both use the same architecture and float32 on the CPU.
"""
import argparse
import time

import numpy as np

NETS = {
    "lenet": dict(batch=64, shape=(1, 28, 28), text="""
layer { name: "data" type: "Input" top: "data" top: "label" input_param { shape { dim: %(b)d dim: 1 dim: 28 dim: 28 } shape { dim: %(b)d } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 20 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 50 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" inner_product_param { num_output: 500 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""),
    "cifar10_quick": dict(batch=100, shape=(3, 32, 32), text="""
layer { name: "data" type: "Input" top: "data" top: "label" input_param { shape { dim: %(b)d dim: 3 dim: 32 dim: 32 } shape { dim: %(b)d } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 32 pad: 2 kernel_size: 5 weight_filler { type: "gaussian" std: 0.0001 } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "pool1" top: "pool1" }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 32 pad: 2 kernel_size: 5 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "conv3" type: "Convolution" bottom: "pool2" top: "conv3" convolution_param { num_output: 64 pad: 2 kernel_size: 5 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
layer { name: "pool3" type: "Pooling" bottom: "conv3" top: "pool3" pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool3" top: "ip1" inner_product_param { num_output: 64 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 10 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""),
}


def median_ms(fn, iters):
    fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def distcaffe_pass(name, spec):
    import distcaffe as caffe
    from distcaffe.io import parse_net_text
    from distcaffe.log import set_quiet
    set_quiet()
    net = caffe.Net(parse_net_text(spec["text"] % {"b": spec["batch"]}), caffe.TRAIN)
    rng = np.random.default_rng(0)
    net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].shape)
    net.blobs["label"].data[...] = rng.integers(0, 10, spec["batch"])
    return net.forward_backward


def torch_pass(name, spec):
    import torch
    import torch.nn as nn
    if name == "lenet":
        model = nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10))
    else:
        model = nn.Sequential(nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU(),
                              nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
                              nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
                              nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.Linear(64, 10))
    x = torch.randn(spec["batch"], *spec["shape"])
    y = torch.randint(0, 10, (spec["batch"],))
    loss_fn = nn.CrossEntropyLoss()

    def step():
        model.zero_grad()
        loss_fn(model(x), y).backward()
    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    print("| net | batch | distcaffe ms | PyTorch ms | distcaffe / PyTorch |")
    print("|---|---|---|---|---|")
    for name, spec in NETS.items():
        ours = median_ms(distcaffe_pass(name, spec), args.iters)
        peer = median_ms(torch_pass(name, spec), args.iters) if torch else float("nan")
        print("| %s | %d | %.1f | %.1f | %.2f |" % (name, spec["batch"], ours, peer, ours / peer))


if __name__ == "__main__":
    main()
