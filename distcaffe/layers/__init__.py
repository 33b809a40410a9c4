"""The layer catalogue: every module in this package registers its layers by Caffe type string on import."""
import importlib
import pkgutil

from .base import Layer, LossLayer, NeuronLayer, create_layer, layer_class, layer_types, register

for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("base", "window_loops"):      # window_loops imports numba: fastpath loads it on first use
        importlib.import_module("%s.%s" % (__name__, _m.name))

__all__ = ["Layer", "LossLayer", "NeuronLayer", "create_layer", "layer_class", "layer_types", "register"]
