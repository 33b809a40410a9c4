"""pycaffe's caffe.detector: see distcaffe.detector."""
from distcaffe.detector import Detector

__all__ = ["Detector"]
