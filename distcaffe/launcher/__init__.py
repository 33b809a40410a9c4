"""The `distcaffe` command: parses Caffe-style flags and starts workers (local, MPI, Ray)."""
