"""pycaffe's caffe.io (BVLC's python/caffe/io.py): see distcaffe.io.pycaffe_io."""
from distcaffe.io.pycaffe_io import (Transformer, array_to_blobproto, array_to_datum, arraylist_to_blobprotovector_str,
                                     blobproto_to_array, blobprotovector_str_to_arraylist, datum_to_array, load_image,
                                     oversample, resize_image)
from distcaffe.proto import caffe_pb2

__all__ = ["Transformer", "array_to_blobproto", "array_to_datum", "arraylist_to_blobprotovector_str",
           "blobproto_to_array", "blobprotovector_str_to_arraylist", "caffe_pb2", "datum_to_array", "load_image",
           "oversample", "resize_image"]
