"""`exaclimate bench converge`: held-out seeds, an end-to-end run on 2 real ranks with a tiny budget, and its
mllog checked by MLCommons' own compliance checker (run here as its own command)."""
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from exascale_climate.bench.converge import ConvergeData
from exascale_climate.errors import ExaclimateError
from exascale_climate.utils.launch import exaclimate

# A slim Tiramisu keeps this test short (the benchmark itself trains the paper's width and depth).
SLIM = ["model.tiramisu.down_layers=[1,1,1,1]", "model.tiramisu.up_layers=[1,1,1,1]",
        "model.tiramisu.bottleneck_layers=1", "model.tiramisu.growth_rate=8", "model.tiramisu.initial_filters=16",
        "model.tiramisu.kernel_size=3", "optimizer.schedule.warmup_steps=2"]


def _seeds_on_disk(directory):
    """The seed each sample file records (read with h5py, not the package)."""
    seeds = set()
    for path in sorted(directory.glob("data-*.h5")):
        with h5py.File(path, "r") as f:
            seeds.add(int(f["climate"].attrs["seed"]))
    return seeds


def _mllog(path):
    return [json.loads(line.split(":::MLLOG ", 1)[1]) for line in path.read_text().splitlines() if ":::MLLOG" in line]


def test_a_seed_in_two_splits_is_refused():
    with pytest.raises(ExaclimateError, match="seed is in two splits"):
        ConvergeData(train_seeds=[5, 6], valid_seeds=[7], test_seeds=[6])


@pytest.mark.multirank
def test_converge_tiny_budget_end_to_end(tmp_path):
    out = tmp_path / "converge.jsonl"
    run_dir = tmp_path / "run"
    argv = exaclimate("bench", "converge", "--model", "tiramisu", "--grid", "32x48", "--budget", "0.01",
                      "--samples-per-seed", "2", "--validate-every", "2", "--data-root", str(tmp_path / "data"),
                      "--run-dir", str(run_dir), "--json", str(out), *sum((["--set", s] for s in SLIM), []))
    result = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    # Held-out split: the seeds recorded in the files' attributes never overlap.
    (data,) = (tmp_path / "data").glob("converge-*")
    train, valid, test = (_seeds_on_disk(data / split) for split in ("train", "valid", "test"))
    assert len(train) == 4 and len(valid) == 1 and len(test) == 1
    assert not (train & test) and not (train & valid) and not (valid & test)
    assert len(list((data / "train").glob("data-*.h5"))) == 8  # 4 seeds x 2 steps

    records = {r["metric"]: r for r in map(json.loads, out.read_text().splitlines())}
    test_rec = records["tiramisu held-out test mean IoU"]
    # the test IoU, recomputed by hand from the confusion matrix `exaclimate evaluate` wrote
    report = json.loads((run_dir / "test_metrics.json").read_text())
    cm = np.array(report["model"]["confusion_matrix"], float)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), 1.0)
    assert test_rec["value"] == pytest.approx(iou.mean())
    assert cm.sum() == 2 * 32 * 48  # the test seed's 2 samples, every pixel
    assert set(test_rec["test_iou"]) == {"background", "tropical_cyclone", "atmospheric_river"}
    # where the errors lie (evaluate --errors): the false and missed AR pixels are the confusion matrix's
    assert test_rec["test_errors"]["false_ar"] == cm[:, 2].sum() - cm[2, 2]
    assert test_rec["test_errors"]["missed_ar"] == cm[2].sum() - cm[2, 2]
    assert "tiramisu false AR pixels in labeller-rejected regions (test)" in records
    # the prior correction: its exponent is the best of the validation sweep `evaluate` wrote, its value the test
    # IoU at that exponent, recomputed from the test sweep's confusion matrix
    prior_rec = records["tiramisu held-out test mean IoU, prior correction chosen on validation"]
    valid_sweep = json.loads((run_dir / "valid_metrics.json").read_text())["prior_sweep"]
    assert valid_sweep["mean_iou"][valid_sweep["exponents"].index(prior_rec["prior_correction"])] == \
        max(valid_sweep["mean_iou"])
    sweep = report["prior_sweep"]
    cm_a = np.array(sweep["confusion_matrices"][sweep["exponents"].index(prior_rec["prior_correction"])], float)
    tp_a = np.diag(cm_a)
    union_a = cm_a.sum(0) + cm_a.sum(1) - tp_a
    assert prior_rec["value"] == pytest.approx(np.where(union_a > 0, tp_a / np.maximum(union_a, 1), 1.0).mean())
    assert prior_rec["baseline"] == test_rec["value"]
    assert sweep["confusion_matrices"][0] == report["model"]["confusion_matrix"]  # a = 0 is the plain argmax
    assert 0.0 <= records["labeller agreement, fields + 0.01 sigma noise"]["value"] <= 1.0

    # samples seen = steps x global batch (2 ranks x batch 2 of the tiramisu config)
    steps, samples = records["tiramisu steps"]["value"], records["tiramisu samples seen"]["value"]
    assert steps >= 2 and samples == steps * 2 * 2
    assert records["tiramisu epochs"]["value"] == pytest.approx(samples / 8)
    assert (run_dir / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # mllog: eval_accuracy equals the validation IoU of metrics.jsonl; the run stopped on its budget (aborted)
    events = _mllog(run_dir / "mllog.log")
    keys = [e["key"] for e in events]
    assert keys.index("init_stop") < keys.index("run_start") < keys.index("epoch_start") < keys.index("run_stop")
    valid_rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    valid_iou = [r["val_mean_iou"] for r in valid_rows if r["kind"] == "valid"]
    assert [e["value"] for e in events if e["key"] == "eval_accuracy"] == pytest.approx(valid_iou)
    cpu = [r["cpu_seconds"] for r in valid_rows if r["kind"] == "valid"]
    assert records["tiramisu CPU time of rank 0 at the stop"]["value"] == pytest.approx(cpu[-1]) and cpu[-1] > 0
    assert next(e for e in events if e["key"] == "train_samples")["value"] == 8
    assert next(e for e in events if e["key"] == "run_stop")["metadata"]["status"] == "aborted"

    # MLCommons' checker, HPC rules 3.0.0 (DeepCAM): everything passes except the quality target, which a run
    # stopped by a tiny budget cannot reach (eval_accuracy >= 0.82 is the checker's own convergence rule).
    checked = subprocess.run([sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "hpc",
                              "--ruleset", "3.0.0", "--log_output", str(tmp_path / "checker.log"),
                              str(run_dir / "mllog.log")], capture_output=True, text=True, timeout=300)
    problems = [ln for ln in (checked.stdout + checked.stderr).splitlines()
                if ln.startswith(("ERROR", "WARNING")) and ln.strip() != "ERROR - FAILED"]
    assert len(problems) == 1 and "Failed checks for eval_accuracy" in problems[0] and "0.82" in problems[0], \
        checked.stdout + checked.stderr
    assert max(valid_iou) < 0.82
