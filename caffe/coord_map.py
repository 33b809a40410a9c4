"""pycaffe's caffe.coord_map: see distcaffe.coord_map."""
from distcaffe.coord_map import (PASS_THROUGH_LAYERS, AxisMismatchException, UndefinedMapException, compose,
                                 conv_params, coord_map, coord_map_from_to, crop, crop_params, inverse)

__all__ = ["PASS_THROUGH_LAYERS", "AxisMismatchException", "UndefinedMapException", "compose", "conv_params",
           "coord_map", "coord_map_from_to", "crop", "crop_params", "inverse"]
