"""Caffe's protobuf schema (BVLC + NVCaffe, wire-compatible) as the generated `caffe_pb2` module."""
from distcaffe.proto import caffe_pb2

__all__ = ["caffe_pb2"]
