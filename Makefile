# distcaffe: `make demo` trains LeNet on real MNIST digits with two MPI ranks; `make test` runs the suite.
# Both set themselves up on a fresh machine (virtualenv + extras) and need only Python 3.11 and pip.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= dev,mpi,image,hdf5,examples,plot
PYTEST_ARGS ?=

.PHONY: venv test demo proto clean

$(VENV)/.installed-$(subst ,,$(EXTRAS)): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

venv: $(VENV)/.installed-$(subst ,,$(EXTRAS))

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

# Regenerate distcaffe/proto/caffe_pb2.py from caffe.proto (tests fail if it is stale).
proto: venv
	$(PY) -m grpc_tools.protoc -Idistcaffe/proto --python_out=distcaffe/proto distcaffe/proto/caffe.proto

clean:
	rm -rf $(VENV) .demo build *.egg-info
