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

step "synthesise CAM5-like fields (labelled by the heuristic TC/AR labeller)"
exaclimate data synth --out "$DEMO_DIR/raw" --samples 48 --grid 96x144 --seed 1 --workers 2

step "convert to DeepCAM HDF5, split by time, per-channel statistics"
exaclimate data convert "$DEMO_DIR"/raw/*.nc --out "$DEMO_DIR/data/all" --workers 2
exaclimate data split "$DEMO_DIR/data/all" --out "$DEMO_DIR/data"
exaclimate data stats "$DEMO_DIR/data/train" --out "$DEMO_DIR/data/stats.h5"
exaclimate data inspect "$(ls "$DEMO_DIR"/data/test/*.h5 | head -1)"
