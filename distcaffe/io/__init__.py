"""Reading and writing Caffe's files: prototxt nets and solvers (upgraded to the current format),
.caffemodel / .binaryproto / .solverstate, HDF5 snapshots, and BlobProto <-> numpy conversion.

Every reader raises distcaffe.errors.ParseError with one line naming the file; every writer writes a
temporary file beside the target and renames it, so a crash never leaves a half-written file.
"""
from distcaffe.io.binary import (array_to_blobproto, blob_shape, blobproto_to_array, read_blobproto,
                                 read_net_binary, read_solverstate, solverstate_resume, write_blobproto,
                                 write_net_binary, write_solverstate)
from distcaffe.io.pycaffe_io import (Transformer, array_to_datum, datum_to_array, load_image, oversample,
                                     resize_image)
from distcaffe.io.hdf5 import read_net_hdf5, read_solverstate_hdf5, write_net_hdf5, write_solverstate_hdf5
from distcaffe.io.text import (format_text, parse_net_text, parse_solver_text, read_net_param,
                               read_solver_param, write_text)
from distcaffe.io.upgrade import upgrade_net_param, upgrade_solver_param

__all__ = [
    "read_net_param", "parse_net_text", "read_solver_param", "parse_solver_text", "format_text", "write_text",
    "read_net_binary", "write_net_binary", "read_blobproto", "write_blobproto", "read_solverstate",
    "write_solverstate", "solverstate_resume", "blobproto_to_array", "array_to_blobproto", "blob_shape",
    "read_net_hdf5", "write_net_hdf5", "read_solverstate_hdf5", "write_solverstate_hdf5",
    "upgrade_net_param", "upgrade_solver_param",
    "Transformer", "load_image", "resize_image", "oversample", "array_to_datum", "datum_to_array",
]
