#!/usr/bin/env bash
# The 2017 supervised patch study end to end: synthetic CAM5-like steps -> labelled events -> patches -> the
# five methods per pattern (Optuna-tuned) -> the talk's table beside ours (docs/PATCH_STUDY.md).
#
#   scripts/patch_study.sh                    # the table's counts on the paper's 768x1152 grid (hours on 2 cores)
#   STEPS=240 GRID=384x576 SIZES="--size tc=16x16 --size ar=74x112 --size wf=14x30" \
#   COUNTS="--count tc=1000,1000 --count ar=650,680 --count wf=560,650" scripts/patch_study.sh   # what docs/MODELS.md ran
#
# Environment: OUT (work dir), STEPS (time steps; the table's 10,000 TC positives need ~3,000 at ~3 TCs a step),
# GRID, SIZES / COUNTS (extra `patches extract` options), WORKERS, SET (extra --set options for classify train),
# RANKS (>1: the ConvNets train under `horovodrun -np RANKS`).
set -euo pipefail
OUT=${OUT:-runs/patch_study}
STEPS=${STEPS:-3200}
GRID=${GRID:-768x1152}
WORKERS=${WORKERS:-2}
SIZES=${SIZES:-}
COUNTS=${COUNTS:-}
SET=${SET:-}
RANKS=${RANKS:-1}
EXA=${EXA:-exaclimate}

$EXA data synth --out "$OUT/nc" --samples "$STEPS" --grid "$GRID" --seed 7 --workers "$WORKERS"
# shellcheck disable=SC2086
$EXA patches extract "$OUT/nc" --out "$OUT/patches" $SIZES $COUNTS --seed 0
for pattern in tc ar wf; do
  for method in logreg knn svm rf convnet; do
    start=$(date +%s)
    if [[ $method == convnet && $RANKS -gt 1 ]]; then
      # shellcheck disable=SC2086
      horovodrun -np "$RANKS" $EXA classify train --pattern $pattern --method $method --patches "$OUT/patches" \
        --run-dir "$OUT/runs/$pattern-$method" $SET
    else
      # shellcheck disable=SC2086
      $EXA classify train --pattern $pattern --method $method --patches "$OUT/patches" \
        --run-dir "$OUT/runs/$pattern-$method" $SET
    fi
    echo "$pattern $method wall $(( $(date +%s) - start )) s"
  done
done
$EXA classify report --runs "$OUT/runs" --out docs/PATCH_STUDY.md
