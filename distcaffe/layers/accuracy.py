"""Forward-only classification read-outs: Accuracy (top-k, optional per-class second top) and ArgMax."""
from .base import Layer, register
from .loss import read_labels
from .softmax import split_axis


def _top_k(xp, x, k):
    """Indices (outer, k, inner) of the k largest entries of x along axis 1, in decreasing order, equal values
    in decreasing index order (Caffe's partial_sort with std::greater on (value, index) pairs); needs no sort."""
    dim = x.shape[1]
    positions = xp.arange(dim)[None, :, None]
    taken = xp.zeros(x.shape, dtype=bool)
    picks = []
    for _ in range(k):
        best = xp.where(taken, -xp.inf, x).max(axis=1, keepdims=True)
        candidates = ~taken & (x == best)
        pick = dim - 1 - candidates[:, ::-1, :].argmax(axis=1)
        picks.append(pick)
        taken |= positions == pick[:, None, :]
    return xp.stack(picks, axis=1)


@register("Accuracy")
class AccuracyLayer(Layer):
    """Fraction of items whose label scores among the top_k (ties count against it, as in Caffe); a second top
    gets the accuracy of each class."""

    exact_num_bottom = 2
    min_top = 1
    max_top = 2

    def layer_setup(self, bottom, top):
        p = self.layer_param.accuracy_param
        self.top_k = p.top_k
        self.ignore_label = p.ignore_label if p.HasField("ignore_label") else None

    def reshape(self, bottom, top):
        self.check(bottom[1].count > 0 and self.top_k <= bottom[0].count // bottom[1].count,
                   "top_k must be less than or equal to the number of classes (top_k %d; predictions %s, labels %s)"
                   % (self.top_k, bottom[0].shape_string(), bottom[1].shape_string()))
        axis = bottom[0].canonical_axis(self.layer_param.accuracy_param.axis)
        self.outer, self.classes, self.inner = split_axis(bottom[0].shape, axis)
        self.check(self.outer * self.inner == bottom[1].count,
                   "Number of labels must match number of predictions; e.g., if label axis == 1 and prediction shape "
                   "is (N, C, H, W), label count (number of labels) must be N*H*W, with integer values in "
                   "{0, 1, ..., C-1} (predictions %s, labels %s)" % (bottom[0].shape_string(), bottom[1].shape_string()))
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((self.classes,))

    def forward(self, bottom, top):
        xp = self.xp
        x = self.m(bottom[0].dev_data).reshape(self.outer, self.classes, self.inner)
        lab, valid = read_labels(self, bottom[1], self.outer * self.inner, self.classes, self.ignore_label)
        lab = lab.reshape(self.outer, self.inner)
        true_score = xp.take_along_axis(x, lab[:, None, :], axis=1)
        correct = (x >= true_score).sum(axis=1) <= self.top_k     # the true class itself is counted once
        if valid is None:
            count = self.outer * self.inner
        else:
            valid = valid.reshape(self.outer, self.inner)
            correct &= valid
            count = valid.sum()
        top[0].mut_dev_data[...] = xp.where(count == 0, 0.0, correct.sum() / xp.maximum(count, 1))
        if len(top) > 1:
            onehot = xp.arange(self.classes)[None, :, None] == lab[:, None, :]
            seen = (onehot if valid is None else onehot & valid[:, None, :]).sum(axis=(0, 2))
            hits = (onehot & correct[:, None, :]).sum(axis=(0, 2))
            top[1].mut_dev_data[...] = xp.where(seen == 0, 0.0, hits / xp.maximum(seen, 1))


@register("ArgMax")
class ArgMaxLayer(Layer):
    """Indices (and with out_max_val the values) of the top_k entries per item, or along `axis` when given;
    ties go to the larger index (Caffe's std::greater on (value, index) pairs)."""

    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.argmax_param
        self.out_max_val = p.out_max_val
        self.top_k = p.top_k
        self.has_axis = p.HasField("axis")
        self.check(self.top_k >= 1, "top k must not be less than 1.")
        if self.has_axis:
            self.axis = bottom[0].canonical_axis(p.axis)
            self.check(self.top_k <= bottom[0].shape[self.axis],
                       "top_k must be less than or equal to the dimension of the axis (top_k %d, axis %d of %s)"
                       % (self.top_k, self.axis, bottom[0].shape_string()))
        else:
            self.check(self.top_k <= bottom[0].count_range(1),
                       "top_k must be less than or equal to the dimension of the flattened bottom blob per instance "
                       "(top_k %d, bottom %s)" % (self.top_k, bottom[0].shape_string()))

    def reshape(self, bottom, top):
        if self.has_axis:
            shape = list(bottom[0].shape)
            shape[self.axis] = self.top_k
        else:
            shape = [1] * max(3, bottom[0].num_axes)
            shape[0] = bottom[0].shape[0]
            shape[2] = self.top_k
            if self.out_max_val:
                shape[1] = 2
        top[0].reshape(shape)

    def forward(self, bottom, top):
        xp = self.xp
        if self.has_axis:
            outer, dim, inner = split_axis(bottom[0].shape, self.axis)
        else:
            outer, dim, inner = bottom[0].shape[0], bottom[0].count_range(1), 1
        x = self.m(bottom[0].dev_data).reshape(outer, dim, inner)
        idx = _top_k(xp, x, self.top_k)
        if not self.out_max_val:
            out = idx
        elif self.has_axis:
            out = xp.take_along_axis(x, idx, axis=1)
        else:
            out = xp.concatenate([idx, xp.take_along_axis(x, idx, axis=1)], axis=1)
        top[0].mut_dev_data[...] = out.astype(self.mdtype).reshape(top[0].shape)

