"""The layer catalogue: every module in this package registers its layers by Caffe type string on import."""
import importlib
import pkgutil

from .base import Layer, LossLayer, NeuronLayer, create_layer, layer_class, layer_types, register
from .fastpath import NAMES as _COMPILED

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base" and _m.name not in _COMPILED:     # these import numba: fastpath loads them on first use
        importlib.import_module("%s.%s" % (__name__, _m.name))

__all__ = ["Layer", "LossLayer", "NeuronLayer", "create_layer", "layer_class", "layer_types", "register"]
