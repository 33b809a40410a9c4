"""`caffe.layers`: NetSpec's layer builder (`from caffe import layers as L`), and a package of example Python
layers (`caffe.layers.detectnet`), as NVCaffe's python/caffe/layers holds them. Importing a submodule binds
this package to `caffe.layers`, so the package answers every other name from the builder."""
from caffe.net_spec import layers as _builder


def __getattr__(name):
    return getattr(_builder, name)
