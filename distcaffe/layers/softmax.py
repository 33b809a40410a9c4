"""Softmax over one axis (Caffe's SoftmaxLayer); its math is shared with the softmax-based losses."""
from .base import Layer, register


def split_axis(shape, axis):
    """(outer, channels, inner) counts of `shape` around `axis`, as Caffe's count(0, axis) / count(axis + 1)."""
    outer = 1
    for d in shape[:axis]:
        outer *= d
    inner = 1
    for d in shape[axis + 1:]:
        inner *= d
    return outer, shape[axis], inner


def softmax(xp, x, axis):
    """Caffe's numerically stable softmax: subtract the max over `axis`, exponentiate, normalise."""
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def softmax_backward(y, dy, axis):
    """Gradient through softmax output `y` for top diff `dy`: (dy - sum(dy * y)) * y."""
    return (dy - (dy * y).sum(axis=axis, keepdims=True)) * y


@register("Softmax")
class SoftmaxLayer(Layer):
    """y = softmax(x) along `softmax_param.axis` (default 1); may run in place."""

    precise = True

    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        self.axis = bottom[0].canonical_axis(self.layer_param.softmax_param.axis)
        top[0].reshape_like(bottom[0])

    def forward(self, bottom, top):
        top[0].mut_dev_data[...] = softmax(self.xp, self.m(bottom[0].dev_data), self.axis)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].mut_dev_diff[...] = softmax_backward(self.m(top[0].dev_data), self.m(top[0].dev_diff),
                                                           self.axis)
