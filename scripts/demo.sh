#!/usr/bin/env bash
# The main job, end to end on the embedded synthetic dataset (set-up included, idempotent):
# synthesise CAM5-like labelled fields -> convert/split/stats -> 2-rank staging -> 2-rank Horovod training
# -> evaluate -> predict -> plots -> batch job scripts -> quick benchmarks -> notebooks.
# Outputs land in $DEMO_DIR (default: ./demo), which is emptied first.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export PATH="$ROOT/.venv/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
DEMO_DIR="${DEMO_DIR:-demo}"
export EXACLIMATE_DEMO_DIR="$DEMO_DIR"  # the notebooks read the demo's outputs from here
step() { printf '\n=== %s (%ss)\n' "$*" "$SECONDS"; }
# Two ranks share this machine's cores: half the cores each, so they do not oversubscribe (single-process
# steps keep all cores). Two names for this machine make Horovod report 2 hosts of 1 rank (no simulation).
PER_RANK=$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))
RANKS=(env TF_NUM_INTRAOP_THREADS=$PER_RANK OMP_NUM_THREADS=$PER_RANK horovodrun -np 2 -H localhost:1,127.0.0.1:1 --gloo)
# The demo's paths, wherever DEMO_DIR points (configs/demo.yaml defaults to ./demo).
PATHS=(--set "data.train_dir=$DEMO_DIR/data/train" --set "data.valid_dir=$DEMO_DIR/data/valid"
       --set "data.test_dir=$DEMO_DIR/data/test" --set "data.stats_file=$DEMO_DIR/data/stats.h5"
       --set "pipeline.stage_dir=$DEMO_DIR/stage/node{node}")
case "$(realpath -m "$DEMO_DIR")" in
  /|"$ROOT"|"$HOME") echo "error: DEMO_DIR=$DEMO_DIR would be emptied; choose a directory of its own" >&2; exit 2;;
esac
rm -rf "$DEMO_DIR"  # every run starts from scratch, so what it prints is what this checkout does

step "environment"
exaclimate info

step "2-rank Horovod check (Gloo)"
"${RANKS[@]}" python -m exascale_climate.utils.hvd_selfcheck "$DEMO_DIR/selfcheck" | grep -o '"rank": [0-9].*"ok": [a-z]*'

# data demo = data synth (CAM5-like fields, labelled by the heuristic TC/AR labeller) -> data convert (DeepCAM
# HDF5) -> data split (by time) -> data stats (per-channel statistics), the steps docs/DATA.md lists one by one
step "the demo dataset: synthesise + label, convert to HDF5, split by time, statistics"
exaclimate data demo --out "$DEMO_DIR" --samples 48 --grid 96x144 --seed 1 --workers 2
exaclimate data inspect "$(ls "$DEMO_DIR"/data/test/*.h5 | head -1)"

step "stage to node-local disk: 2 ranks stand for 2 nodes; each copies a disjoint share, then sends files only to the nodes that need them"
"${RANKS[@]}" exaclimate stage --src "$DEMO_DIR/data" --dst "$DEMO_DIR/stage/node{node}" --verify checksum

step "the network: slim Tiramisu of configs/demo.yaml (parameters, FLOPs per sample)"
exaclimate model summary --config demo --grid 96x144 --no-graph | head -8

step "2-rank Horovod training from the staged copy (hierarchical allreduce, checkpoints, metrics.jsonl)"
"${RANKS[@]}" exaclimate train --config demo --run-dir "$DEMO_DIR/run" "${PATHS[@]}"

step "evaluate on the held-out test split (--errors: which labeller rule the false AR pixels' regions fail)"
exaclimate evaluate --checkpoint "$DEMO_DIR/run" --data "$DEMO_DIR/data/test" --labeller off --errors \
  --json "$DEMO_DIR/eval/metrics.json" --csv "$DEMO_DIR/eval/samples.csv"

step "prior correction: on the validation split, how much of the training's class weighting to take back"
exaclimate evaluate --checkpoint "$DEMO_DIR/run" --data "$DEMO_DIR/data/valid" --labeller off --prior-sweep \
  --json "$DEMO_DIR/eval/prior-sweep.json" | tail -8
PRIOR="$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["prior_sweep"]["best"])' \
  "$DEMO_DIR/eval/prior-sweep.json")"

step "predict: CF netCDF masks and a TC/AR event table (with the prior correction chosen on validation: $PRIOR)"
NC="$(ls "$DEMO_DIR"/raw/*.nc | tail -1)"
STEM="$(basename "$NC" .nc)"
exaclimate predict --checkpoint "$DEMO_DIR/run" "$NC" --out "$DEMO_DIR/pred" --probabilities --prior-correction "$PRIOR"
head -5 "$DEMO_DIR/pred/events.csv"

step "plots: a field with the labelled events, and truth / prediction / error panels"
exaclimate plot "$NC" --var TMQ --truth --out "$DEMO_DIR/plots/$STEM.TMQ.png"
exaclimate plot "$NC" --var PSL --truth --pred "$DEMO_DIR/pred/$STEM.mask.nc" \
  --out "$DEMO_DIR/plots/$STEM.panels.png" --size 1400x1000

step "semi-supervised box detector (SC17): boxes from labels, 2-rank training with 25% labelled, mAP, boxes"
exaclimate data boxes "$DEMO_DIR/data/test"
"${RANKS[@]}" exaclimate train --config semisup_demo --run-dir "$DEMO_DIR/run-semisup" "${PATHS[@]}" \
  --set data.labelled_fraction=0.25 --set train.epochs=4
exaclimate evaluate --checkpoint "$DEMO_DIR/run-semisup" --data "$DEMO_DIR/data/test" --labeller off
exaclimate predict --checkpoint "$DEMO_DIR/run-semisup" "$NC" --out "$DEMO_DIR/pred-semisup"
exaclimate plot "$NC" --var TMQ --boxes --pred-boxes "$DEMO_DIR/pred-semisup/events.csv" \
  --out "$DEMO_DIR/plots/$STEM.boxes.png"
step "tracks: TCs and ARs linked over the 48 labelled steps (CSV, CF trajectory netCDF, map)"
exaclimate track "$DEMO_DIR/raw" --out "$DEMO_DIR/tracks"
head -4 "$DEMO_DIR/tracks/tracks_summary.csv"

NCL=/usr/share/ncarg/data/cdf  # real fields of the Debian package libncarg-data (docs/DATA.md)
if [ -f "$NCL/941110_P.cdf" ]; then
  step "real fields: the 10 Nov 1994 analysis imported (missing variables filled on request), predicted, verified"
  exaclimate data import "$NCL/941110_P.cdf" "$NCL/941110_UV.cdf" --out "$DEMO_DIR/real" --grid 96x144 \
    --time 1994-11-10T12 --fill-from "$NC"
  exaclimate predict --checkpoint "$DEMO_DIR/run" "$DEMO_DIR/real" --out "$DEMO_DIR/real-pred"
  exaclimate track "$DEMO_DIR/real-pred" --out "$DEMO_DIR/real-tracks" --set track.tc_min_lifetime_hours=0
  exaclimate verify --tracks "$DEMO_DIR/real-tracks/tracks.csv" --ibtracs --start 1994-11-10T12 \
    --end 1994-11-10T12 | tail -1
fi

step "SC17 hybrid training: 2 synchronous groups of 1 rank + 1 parameter server under mpirun (1 epoch)"
# Staged with the training's placement (1 rank per simulated node: group 0, group 1, the server): the training
# shards are over the 2 compute ranks only (--train-ranks), so each group's node holds what it reads.
mpirun --allow-run-as-root --oversubscribe --bind-to none -np 3 exaclimate stage --src "$DEMO_DIR/data" \
  --dst "$DEMO_DIR/stage-hybrid/node{node}" --ranks-per-node 1 --train-ranks 2 --verify size | tail -2
mpirun --enable-recovery --allow-run-as-root --oversubscribe --bind-to none -np 3 -x TF_NUM_INTRAOP_THREADS=1 \
  -x OMP_NUM_THREADS=1 exaclimate train --config demo --run-dir "$DEMO_DIR/hybrid" "${PATHS[@]:0:8}" \
  --set "pipeline.stage_dir=$DEMO_DIR/stage-hybrid/node{node}" --set distributed.ranks_per_node=1 \
  --set distributed.mode=hybrid --set distributed.groups=2 --set train.epochs=1 | tail -1
exaclimate train --status --run-dir "$DEMO_DIR/hybrid"

step "batch jobs for a cluster: the same stage -> train -> evaluate as SLURM and Summit-style LSF scripts"
mkdir -p "$DEMO_DIR/jobs"
exaclimate submit --scheduler slurm --nodes 4 --tasks-per-node 4 --time 02:00:00 --config tiramisu \
  --run-dir runs/tiramisu --dry-run > "$DEMO_DIR/jobs/tiramisu.sbatch"
exaclimate submit --scheduler lsf --template summit --nodes 2 --tasks-per-node 6 --time 01:00:00 \
  --config tiramisu --run-dir runs/tiramisu --dry-run > "$DEMO_DIR/jobs/tiramisu-summit.lsf"
grep -h '^#SBATCH\|^#BSUB' "$DEMO_DIR"/jobs/* | head -12

step "quick benchmarks at the demo grid (JSON lines in $DEMO_DIR/bench, read by notebook 03)"
exaclimate bench model --model tiramisu --grid 96x144 --config demo --json "$DEMO_DIR/bench/model.jsonl"
# the same slim network in bfloat16 (AVX512_BF16 / AMX CPUs run it ~1.3-1.9x faster; elsewhere it shows the cost)
exaclimate bench model --model demo --precision mixed_bfloat16 --json "$DEMO_DIR/bench/model-bf16.jsonl" > "$DEMO_DIR/bench/model-bf16.txt"
grep "demo 96x144 b1 .*FLOP/s |" "$DEMO_DIR/bench/model-bf16.txt" || true
exaclimate bench pipeline --grid 96x144 --samples 16 --json "$DEMO_DIR/bench/pipeline.jsonl"

step "fuzzing: 20 malformed inputs through data inspect/convert/stats/label/split/import, stage, track and config (docs/RELIABILITY.md)"
exaclimate bench fuzz --examples 20 --predict-every 0 --subprocess-every 0 --json "$DEMO_DIR/fuzz.jsonl" | tail -4

step "performance model: the paper's Tiramisu on Summit nodes, on paper (docs/PERFORMANCE.md)"
exaclimate scale predict --config tiramisu --system summit --nodes 1,6,96,1536,4560 \
  --json "$DEMO_DIR/bench/scale-summit.json" --png "$DEMO_DIR/plots/scale-summit.png"

step "the 2017 patch study at the demo grid: TC / AR / front patches, a KNN and a ConvNet for fronts"
exaclimate patches extract "$DEMO_DIR/raw" --out "$DEMO_DIR/patches" --size tc=8x8 --size ar=24x36 --size wf=8x16 \
  --count tc=100,100 --count ar=100,100 --count wf=100,100
for method in knn convnet; do
  exaclimate classify train --pattern wf --method $method --patches "$DEMO_DIR/patches" \
    --run-dir "$DEMO_DIR/classify/wf-$method" --set classify.trials=2 --set classify.epochs=3
done
exaclimate classify report --runs "$DEMO_DIR/classify" --out "$DEMO_DIR/classify/PATCH_STUDY.md" | head -12
# the same patches streamed from the generator (no field written): how the table's counts are reached
exaclimate patches extract --synthetic 80 --grid 96x144 --synth-seed 1 --workers 1 --out "$DEMO_DIR/patches-stream" \
  --size tc=8x8 --size ar=24x36 --size wf=8x16 --count tc=40,40 --count ar=40,40 --count wf=40,40

step "notebooks: explore the data, inspect the model, performance, boxes (executed into $DEMO_DIR/notebooks)"
python scripts/run_notebooks.py --out "$DEMO_DIR/notebooks" notebooks/*.ipynb

step "done in ${SECONDS}s; outputs in $DEMO_DIR/"
printf '  %s\n' "$DEMO_DIR/run/metrics.jsonl" "$DEMO_DIR/eval/metrics.json" "$DEMO_DIR/pred/events.csv" \
  "$DEMO_DIR"/plots/*.png "$DEMO_DIR"/notebooks/*.ipynb
