#!/usr/bin/env bash
# One GPU check: the CUDA tests and the GPU speed figures, written as JSON and a log.
#
#   benchmarks/gpu_check.sh OUTDIR --cifar PATH/cifar10-jpg.tar.gz          # a GPU machine
#   benchmarks/gpu_check.sh OUTDIR --cifar PATH/cifar10-jpg.tar.gz --device cpu   # a dry run
#
# Installs nothing: this checkout's src/ goes first on PYTHONPATH (see benchmarks/gpu_check.py
# for the steps, the time limits and what OUTDIR receives). PYTHON picks the interpreter.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" "$root/benchmarks/gpu_check.py" "$@"
