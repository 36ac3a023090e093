#!/usr/bin/env bash
# The 2017 supervised patch study end to end at the table's counts: steps generated in memory -> labelled
# events -> patches (streamed: `patches extract --synthetic`, no field written) -> the five methods per pattern
# under a fixed tuning budget -> the talk's table beside ours (docs/PATCH_STUDY.md).
#
#   scripts/patch_study.sh                                   # the paper's 768x1152 grid and patch sizes
#   GRID=384x576 SIZES="--size tc=16x16 --size ar=74x112 --size wf=14x30" SET="--set classify.tune_timeout=150" \
#     OUT=runs/patch_full scripts/patch_study.sh      # what docs/MODELS.md ran (all three patterns, ~42 CPU min)
#
# A pattern's methods start as soon as its patch file is written (seed 7 at 384x576: WF after 521 steps, AR
# 1,236, TC 3,036), while the extraction goes on for the others.
# Environment: OUT (work dir), STEPS (most steps to generate), GRID, SIZES / COUNTS (extra `patches extract`
# options), WORKERS, PATTERNS, METHODS, SET (extra --set options for every classify train), RANKS (>1: the
# ConvNets train under `horovodrun -np RANKS`), EXA (the exaclimate command), SKIP_EXTRACT.
set -euo pipefail
OUT=${OUT:-runs/patch_study}
STEPS=${STEPS:-4000}
GRID=${GRID:-768x1152}
WORKERS=${WORKERS:-2}
SIZES=${SIZES:-}
COUNTS=${COUNTS:-}
SET=${SET:-}
RANKS=${RANKS:-1}
PATTERNS=${PATTERNS:-"wf ar tc"}
METHODS=${METHODS:-"convnet logreg knn rf svm"}
EXA=${EXA:-exaclimate}
TIME=$(command -v /usr/bin/time >/dev/null && echo "/usr/bin/time -v" || echo "")

# The fixed tuning budget (docs/PATCH_STUDY.md): every method at most 12 Optuna trials and 600 s of tuning,
# trials fit at most 4,000 patches, then the best parameters are fitted on all training patches.
BUDGET="--set classify.trials=12 --set classify.tune_timeout=600 --set classify.max_tune_examples=4000"
budget_of() {
  case $1 in
    svm) echo "$BUDGET --set classify.pca_components=256" ;;  # kernel SVM: n^2 kernel rows -> 256 PCA features
    convnet) echo "--set classify.trials=8 --set classify.tune_timeout=600 --set classify.max_tune_examples=4000 \
--set classify.tune_epochs=2 --set classify.epochs=8" ;;
    *) echo "$BUDGET" ;;
  esac
}

mkdir -p "$OUT/logs"
if [[ ${SKIP_EXTRACT:-0} != 1 && ! -f "$OUT/patches/.done" ]]; then  # SKIP_EXTRACT=1: another process extracts
  # shellcheck disable=SC2086
  ( $TIME $EXA patches extract --synthetic "$STEPS" --grid "$GRID" --synth-seed 7 --workers "$WORKERS" \
      --out "$OUT/patches" $SIZES $COUNTS --seed 0 && touch "$OUT/patches/.done" ) > "$OUT/logs/extract.log" 2>&1 &
  extract_pid=$!
fi
for pattern in $PATTERNS; do
  until [[ -f "$OUT/patches/$pattern.h5" ]]; do
    if [[ -n ${extract_pid:-} ]] && ! kill -0 "$extract_pid" 2>/dev/null && [[ ! -f "$OUT/patches/$pattern.h5" ]]; then
      echo "extraction ended without $pattern.h5 (see $OUT/logs/extract.log)" >&2; exit 1
    fi
    sleep 10
  done
  for method in $METHODS; do
    [[ -f "$OUT/runs/$pattern-$method/result.json" ]] && grep -q test_accuracy "$OUT/runs/$pattern-$method/result.json" \
      && continue
    start=$(date +%s)
    # shellcheck disable=SC2046,SC2086
    if [[ $method == convnet && $RANKS -gt 1 ]]; then
      $TIME horovodrun -np "$RANKS" $EXA classify train --pattern $pattern --method $method \
        --patches "$OUT/patches" --run-dir "$OUT/runs/$pattern-$method" $(budget_of $method) $SET \
        > "$OUT/logs/$pattern-$method.log" 2>&1 || echo "$pattern $method failed (see $OUT/logs)"
    else
      $TIME $EXA classify train --pattern $pattern --method $method --patches "$OUT/patches" \
        --run-dir "$OUT/runs/$pattern-$method" $(budget_of $method) $SET \
        > "$OUT/logs/$pattern-$method.log" 2>&1 || echo "$pattern $method failed (see $OUT/logs)"
    fi
    echo "$pattern $method wall $(( $(date +%s) - start )) s"
    $EXA classify report --runs "$OUT/runs" --out "$OUT/PATCH_STUDY.md" > /dev/null
  done
done
wait
$EXA classify report --runs "$OUT/runs" --out "$OUT/PATCH_STUDY.md"
