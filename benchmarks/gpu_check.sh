#!/usr/bin/env bash
# The GPU device check (issue 14): one script, <= 8 minutes on an H200 with no network. Runs the GPU tests, then
# forward+backward img/s of distcaffe vs PyTorch + cuDNN on the same GPU (LeNet b64, AlexNet b256, ResNet-50 b64
# FLOAT and FLOAT16) and the share of allreduce hidden behind backward (2 MPI ranks on one GPU); writes
# benchmarks/results/gpu.{json,md} and prints a one-line verdict. Then Large Model Support (issue 15,
# benchmarks/lms_gpu_check.sh: up to 6.5 more minutes; PREFIX.lms.json).
#   usage: benchmarks/gpu_check.sh [--dry-run] [--out PREFIX]      (or: make gpu-check)
#   --dry-run: the same steps on the CPU at toy sizes (tests/test_gpu_check.py), so a typo never costs a GPU run.
# Needs cupy (with a CUDA device), PyTorch, mpi4py and mpiexec; nvidia-cudnn-frontend for the cuDNN path. On an
# offline node, put wheels of what it lacks in a folder and set GPU_CHECK_WHEELS to it, e.g. made elsewhere with
#   pip download --only-binary=:all: --python-version 3.X -d wheels protobuf lmdb psutil pytest hypothesis \
#       nvidia-cudnn-frontend
# (the check says what is missing and exits 2 at once when it has no wheels for it).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
OUT=benchmarks/results/gpu
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT=${2:?--out needs a path prefix}; shift ;;
    -h|--help) sed -n 2,8p "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
PY=${PYTHON:-python3}
MPIEXEC=${MPIEXEC:-mpiexec}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export CUPY_CACHE_DIR=${CUPY_CACHE_DIR:-${TMPDIR:-/tmp}/distcaffe-cupy-cache}   # node-local kernel cache
BUDGET=${GPU_CHECK_BUDGET:-470}              # seconds for everything; each step gets at most what is left
START=$SECONDS
PARTS=$(mktemp -d)
trap 'rm -rf "$PARTS"' EXIT
mkdir -p "$(dirname "$OUT")"
cap() {                                      # cap WANT: WANT seconds, or what is left of the budget (>= 5)
  local want=$1 left=$(( BUDGET - (SECONDS - START) ))
  [ "$left" -lt "$want" ] && want=$left
  [ "$want" -lt 5 ] && want=5
  echo "$want"
}

# what the suite and distcaffe import beyond the machine's cupy/PyTorch/mpi4py: from GPU_CHECK_WHEELS (a folder of
# wheels carried to an offline machine) into a scratch site-packages when missing
NEED=$("$PY" -c "
import importlib.util as u
mods = {'numpy': 'numpy', 'google.protobuf': 'protobuf', 'lmdb': 'lmdb', 'psutil': 'psutil', 'pytest': 'pytest',
        'hypothesis': 'hypothesis', 'mpi4py': 'mpi4py', 'torch': 'torch'}
def have(m):
    try:
        return u.find_spec(m) is not None
    except ImportError:
        return False
print(' '.join(p for m, p in mods.items() if not have(m)))")
if [ -n "$NEED" ]; then
  if [ -z "${GPU_CHECK_WHEELS:-}" ]; then
    echo "gpu_check: missing Python packages: $NEED (pip install them, or set GPU_CHECK_WHEELS to a folder of their wheels)" >&2
    exit 2
  fi
  "$PY" -m pip install -q --no-index --find-links "$GPU_CHECK_WHEELS" --target "$PARTS/site" $NEED || exit 2
  export PYTHONPATH=$PYTHONPATH:$PARTS/site
fi

if ! "$PY" -c "import cudnn" 2>/dev/null; then       # optional: without it convolution is im2col + cuBLAS
  if [ -n "${GPU_CHECK_WHEELS:-}" ] && "$PY" -m pip install -q --no-index --find-links "$GPU_CHECK_WHEELS" \
       --target "$PARTS/site" nvidia-cudnn-frontend 2>/dev/null; then
    export PYTHONPATH=$PYTHONPATH:$PARTS/site
  else
    echo "gpu_check: WARNING: no nvidia-cudnn-frontend: convolution is measured on im2col + cuBLAS, not cuDNN" >&2
  fi
fi

GPU_TESTS=(tests/test_precision.py tests/test_gpu_sync.py tests/test_layers_cudnn.py tests/test_layers_neuron.py
           tests/test_layers_elementwise.py tests/test_layers_shape.py tests/test_solvers_golden.py
           tests/test_engine_comm.py tests/test_data_transformer.py)
if [ $DRY = 1 ]; then
  CPU=(--cpu); SECS=0.1; TESTS=(tests/test_layers_cudnn.py)
  export GPU_CHECK_DEVICE="CPU (dry run)"
else
  CPU=(); SECS=${GPU_CHECK_SECONDS:-8}; TESTS=("${GPU_TESTS[@]}")
  if ! "$PY" -c "import sys; from distcaffe import backend; sys.exit(not backend.gpu_available())"; then
    echo "gpu_check: cupy sees no CUDA device here; use --dry-run to check the script on a CPU" >&2
    exit 2
  fi
  GPU_CHECK_DEVICE=$("$PY" -c "import cupy; print(cupy.cuda.runtime.getDeviceProperties(0)['name'].decode())")
  export GPU_CHECK_DEVICE
fi
echo "== gpu_check on $GPU_CHECK_DEVICE (budget ${BUDGET}s, cupy cache $CUPY_CACHE_DIR)"

echo "== GPU tests"
timeout "$(cap 210)" "$PY" -m pytest -q -rs -p no:cacheprovider -m "not slow" -k "(gpu or cudnn) and not gpu_check" \
  "${TESTS[@]}" 2>&1 | tail -40
TESTS_RC=${PIPESTATUS[0]}

for net in lenet_b64 alexnet_b256 resnet50_b64_float resnet50_b64_float16; do
  for fw in distcaffe pytorch; do
    echo "== $fw $net"
    timeout "$(cap 70)" "$PY" benchmarks/gpu_bench.py speed --framework $fw --net $net --seconds "$SECS" "${CPU[@]}" \
      --json "$PARTS/${fw}_$net.json" 2>&1 | tail -3
  done
done

echo "== allreduce hidden behind backward (2 MPI ranks on one GPU, host-staged)"
timeout "$(cap 60)" "$MPIEXEC" -n 2 "$PY" benchmarks/gpu_bench.py overlap --seconds "$SECS" "${CPU[@]}" \
  --json "$PARTS/overlap.json" 2>&1 | tail -3

echo "== Large Model Support (issue 15; its own time limits, LMS_TEST_SECS + LMS_SPEED_SECS)"
source benchmarks/lms_gpu_check.sh
if [ $DRY = 1 ]; then lms_gpu_check "$OUT" --dry-run; else lms_gpu_check "$OUT"; fi
LMS_RC=$?

echo "== report ($(( SECONDS - START ))s)"
"$PY" benchmarks/gpu_bench.py report --dir "$PARTS" --out "$OUT" --tests-rc "$TESTS_RC" "${CPU[@]}" || exit 1
[ "$TESTS_RC" = 0 ] && [ "$LMS_RC" = 0 ]
