"""Layers that hold values rather than compute them: Input (net inputs), Parameter, and Split."""
from . import cpu_split
from .base import Layer, register


@register("Input")
class InputLayer(Layer):
    """Net input blobs with shapes from `input_param.shape` (one shape, or one per top)."""

    min_top = 1

    def layer_setup(self, bottom, top):
        shapes = self.layer_param.input_param.shape
        self.check(len(shapes) in (0, 1, len(top)),
                   "input_param must give 0, 1, or %d shapes (one per top), got %d" % (len(top), len(shapes)))
        for i, t in enumerate(top):
            if shapes:
                t.reshape(tuple(shapes[0 if len(shapes) == 1 else i].dim))

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass


@register("Parameter")
class ParameterLayer(Layer):
    """Exposes a learnable blob of `parameter_param.shape` as its top (shares data and diff)."""

    exact_num_bottom = 0
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        if not self.blobs:
            self.blobs = [self.new_param(tuple(self.layer_param.parameter_param.shape.dim))]
        top[0].reshape(self.blobs[0].shape)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        top[0].share_data(self.blobs[0])
        top[0].share_diff(self.blobs[0])

    def backward(self, top, propagate_down, bottom):
        pass


@register("Split")
class SplitLayer(Layer):
    """Copies one blob to several consumers: tops share the bottom's data; backward sums their diffs."""

    exact_num_bottom = 1
    min_top = 1
    tops_share_data = True

    def reshape(self, bottom, top):
        for t in top:
            self.check(t is not bottom[0], "does not allow in-place computation")
            t.reshape_like(bottom[0])

    def forward(self, bottom, top):
        for t in top:
            t.share_data(bottom[0])

    def backward_reads_data(self, bottom, top):
        return (), ()

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        d = bottom[0].mut_dev_diff
        if len(top) == 1:
            cpu_split.copy(d, top[0].dev_diff)
            return
        cpu_split.sum_into(self.xp, d, *[t.dev_diff for t in top])     # summed without a copy first
