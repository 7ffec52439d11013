#!/usr/bin/env bash
# The GPU path in one run, one table: bf16 training throughput + peak memory (moco RN50/RN101
# at batch 128, ViT-B/16 at 64), fp32 GPU evaluation == CPU evaluation, a one-process NCCL DDP
# step, `textreid index` throughput. Under 8 minutes on one CUDA GPU; exits 1 if a check fails.
#
#   benchmarks/device_check.sh             # on a machine with a CUDA GPU
#   benchmarks/device_check.sh --dry-run   # CPU, tiny sizes, same assertions (tests run this)
#
# PYTHON selects the interpreter (default: python); the repository's src/ comes first on the path.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 480 "${PYTHON:-python}" "$root/benchmarks/device_check.py" "$@"
