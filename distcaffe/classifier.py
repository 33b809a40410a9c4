"""pycaffe's caffe.Classifier: a deploy Net that classifies HxWxK images (scaled to `image_dims`, then the
centre crop or the 10 oversampled crops averaged), with the Transformer's preprocessing."""
import numpy as np

from .io import pycaffe_io as cio
from .net import TEST, Net


def make_transformer(net, mean=None, input_scale=None, raw_scale=None, channel_swap=None):
    """The Transformer for a deploy net's first input: HxWxK -> KxHxW, then the given preprocessing."""
    in_ = net.inputs[0]
    transformer = cio.Transformer({in_: net.blobs[in_].data.shape})
    transformer.set_transpose(in_, (2, 0, 1))
    for setter, value in ((transformer.set_mean, mean), (transformer.set_input_scale, input_scale),
                          (transformer.set_raw_scale, raw_scale), (transformer.set_channel_swap, channel_swap)):
        if value is not None:
            setter(in_, value)
    return transformer


class Classifier(Net):
    """Net for image class prediction by scaling, centre cropping or oversampling (pycaffe's Classifier)."""

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None):
        super().__init__(model_file, TEST, weights=pretrained_file)
        self.transformer = make_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.crop_dims = np.array(self.blobs[self.inputs[0]].data.shape[2:])
        self.image_dims = self.crop_dims if image_dims is None or not len(image_dims) else image_dims

    def predict(self, inputs, oversample=True):
        """(N x C) class probabilities of N HxWxK images; averaged over the 10 crops when `oversample`."""
        in_ = self.inputs[0]
        batch = np.zeros((len(inputs), self.image_dims[0], self.image_dims[1], inputs[0].shape[2]), np.float32)
        for ix, im in enumerate(inputs):
            batch[ix] = cio.resize_image(im, self.image_dims)
        if oversample:
            batch = cio.oversample(batch, self.crop_dims)
        else:
            center = np.array(self.image_dims) / 2.0
            crop = (np.tile(center, (1, 2))[0] + np.concatenate([-self.crop_dims / 2.0,
                                                                  self.crop_dims / 2.0])).astype(int)
            batch = batch[:, crop[0]:crop[2], crop[1]:crop[3], :]
        caffe_in = np.zeros(np.array(batch.shape)[[0, 3, 1, 2]], dtype=np.float32)
        for ix, im in enumerate(batch):
            caffe_in[ix] = self.transformer.preprocess(in_, im)
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(1)
        return predictions

