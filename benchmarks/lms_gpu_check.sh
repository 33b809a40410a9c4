#!/usr/bin/env bash
# Large Model Support's part of the GPU device check (issue 15), at most 6.5 minutes (150 s + 240 s) on an H200:
#   1. tests/test_lms_gpu.py: cupy arena + pinned buffers + side stream; bit-identical to the GPU without LMS,
#      peak within the budget, copies per iteration as predicted (cifar10_quick b8, ResNet-50 b4);
#   2. benchmarks/lms_speed.py: ResNet-50 img/s at b32 (fits) vs a batch 4x over that budget with -lms, prefetch
#      on and off; summary JSON at PREFIX.lms.json (goal: time ratio with prefetch <= 1.3).
# From gpu_check.sh:  source benchmarks/lms_gpu_check.sh; lms_gpu_check "$OUT" [--dry-run]
# Alone:              benchmarks/lms_gpu_check.sh [--dry-run] [PREFIX]     (--dry-run: CPU, toy sizes)
lms_gpu_check() {
  local out=${1:-benchmarks/results/gpu} dry=${2:-} py=${PYTHON:-python3} rc=0
  local zoo=${DISTCAFFE_SHARED:-$PWD/../shared}/zoo
  mkdir -p "$(dirname "$out")"
  if [ "$dry" = --dry-run ]; then             # the CPU suite runs tests/test_lms*.py; here only the script itself
    echo "== LMS speed (dry run on the CPU)"
    timeout "${LMS_SPEED_SECS:-300}" "$py" benchmarks/lms_speed.py --cpu --net \
      "$zoo/BVLC__caffe/examples/cifar10/cifar10_quick.prototxt" --batch 2 --iters 3 --factor 1 \
      --json "$out.lms.json" > "$out.lms.log" 2>&1 || { rc=1; tail -20 "$out.lms.log"; }
    grep -E "^SUMMARY" "$out.lms.log" | cut -c1-400
  else
    echo "== LMS GPU tests"
    timeout "${LMS_TEST_SECS:-150}" "$py" -m pytest -q -rs -p no:cacheprovider tests/test_lms_gpu.py 2>&1 | tail -8
    [ "${PIPESTATUS[0]}" = 0 ] || rc=1
    echo "== LMS speed: ResNet-50 b32 fitting vs 4x over the budget (prefetch on / off)"
    timeout "${LMS_SPEED_SECS:-240}" "$py" benchmarks/lms_speed.py --batch 32 --factor 4 --iters 6 \
      --json "$out.lms.json" > "$out.lms.log" 2>&1 || { rc=1; tail -20 "$out.lms.log"; }
    grep -E "^(SUMMARY|\{)" "$out.lms.log" | cut -c1-600
  fi
  return $rc
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -uo pipefail
  cd "$(dirname "$0")/.."
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  dry=""
  [ "${1:-}" = --dry-run ] && { dry=--dry-run; shift; }
  lms_gpu_check "${1:-benchmarks/results/gpu}" $dry
fi
