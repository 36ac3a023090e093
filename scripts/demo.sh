#!/usr/bin/env bash
# The main job, end to end on the embedded synthetic dataset (set-up included, idempotent):
# synthesise CAM5-like fields -> label -> convert/split/stats -> 2-rank staging -> 2-rank Horovod training
# -> evaluate -> predict -> plots. Outputs land in $DEMO_DIR (default: ./demo).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export PATH="$ROOT/.venv/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
DEMO_DIR="${DEMO_DIR:-demo}"
step() { printf '\n=== %s\n' "$*"; }

step "environment"
exaclimate info

step "2-rank Horovod check (Gloo)"
TF_NUM_INTRAOP_THREADS=1 OMP_NUM_THREADS=1 horovodrun -np 2 -H localhost:2 --gloo \
  python -m exascale_climate.utils.hvd_selfcheck "$DEMO_DIR/selfcheck" | grep -o '"rank": [0-9].*"ok": [a-z]*'
