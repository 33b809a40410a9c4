"""pycaffe's caffe.classifier: see distcaffe.classifier."""
from distcaffe.classifier import Classifier

__all__ = ["Classifier"]
