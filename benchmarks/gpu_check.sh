#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): run from the repository root on a machine with a GPU.
# Needs only torch and transformers (plus pandas, matplotlib); nothing is downloaded. Prints to the terminal
# and to gpu_check.log; paste its output into docs/engine.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH=. python benchmarks/gpu_check.py --device cuda "$@" 2>&1 | tee gpu_check.log
