"""pycaffe's caffe.draw (needs pydot and Graphviz): see distcaffe.draw."""
from distcaffe.draw import *  # noqa: F401,F403  (the module's __all__)
from distcaffe.draw import __all__  # noqa: F401
