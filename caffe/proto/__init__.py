"""pycaffe's caffe.proto: `from caffe.proto import caffe_pb2` is distcaffe's generated schema module."""
import sys

from distcaffe.proto import caffe_pb2

sys.modules[__name__ + ".caffe_pb2"] = caffe_pb2

__all__ = ["caffe_pb2"]
