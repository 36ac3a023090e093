"""The training loop end to end (one process): run-dir outputs, learning, exact resume after SIGKILL, abort."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import blob_overrides
from exascale_climate.train.checkpoints import list_checkpoints, load_arrays
from exascale_climate.utils.launch import exaclimate, rank_env
from exascale_climate.utils.log import read_json_lines


def cli_args(run_dir: Path, overrides: list[str], *extra: str) -> list[str]:
    return exaclimate("train", "--run-dir", str(run_dir), *extra, *sum((["--set", s] for s in overrides), []))


def run_cli(run_dir, overrides, *extra, check=True):
    result = subprocess.run(cli_args(run_dir, overrides, *extra), env=rank_env(1, 2), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout[-3000:]
    return result


def final_arrays(run_dir: Path) -> dict:
    return load_arrays(list_checkpoints(run_dir / "checkpoints")[-1])


def test_train_writes_run_dir_and_learns(blob_data, tmp_path):
    run_dir = tmp_path / "run"
    overrides = blob_overrides(blob_data, **{"train.epochs": 3, "train.checkpoint.keep": 2})
    result = run_cli(run_dir, overrides)
    final = json.loads(result.stdout.strip().splitlines()[-1])
    # Resolved config, metrics, TensorBoard events, checkpoints (last K + best), events log.
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 3 and saved["data"]["channels"] == ["TMQ", "U850", "V850", "PSL"]
    records = read_json_lines(run_dir / "metrics.jsonl")
    train_records = [r for r in records if r["kind"] == "train"]
    valid_records = [r for r in records if r["kind"] == "valid"]
    for key in ("loss", "lr", "loss_scale", "samples_per_s", "flops_per_s", "data_wait_fraction"):
        assert all(key in r for r in train_records), key
    assert [r["step"] for r in valid_records] == [8, 16, 24]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["ckpt-16", "ckpt-24"]
    best_state = json.loads((run_dir / "checkpoints" / "best" / "state.json").read_text())
    assert best_state["best_metric"] == pytest.approx(max(r["val_mean_iou"] for r in valid_records))
    assert "validation mean IoU" in (run_dir / "events.log").read_text()
    # Learning: the loss falls and the mean IoU is far above the all-background prediction (~0.3).
    assert train_records[-1]["loss"] < 0.5 * train_records[0]["loss"]
    assert final["val_mean_iou"] > 0.6
    assert final["step"] == 24 and final["skipped_steps"] == 0


def test_resume_after_sigkill_matches_uninterrupted_run(blob_data, tmp_path):
    """Deterministic mode with dropout, flips, Adam and gradient lag: kill -9 mid-run, --resume, same weights."""
    overrides = blob_overrides(blob_data, **{
        "train.epochs": 6, "train.deterministic": "true", "train.checkpoint.every_steps": 2,
        "train.checkpoint.every_epochs": 0, "train.validate_every_steps": 1000, "model.tiramisu.dropout": 0.2,
        "pipeline.random_flip": "true", "distributed.gradient_lag": 1})
    reference = tmp_path / "uninterrupted"
    run_cli(reference, overrides)

    resumed = tmp_path / "resumed"
    proc = subprocess.Popen(cli_args(resumed, overrides), env=rank_env(1, 2), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (resumed / "checkpoints" / "ckpt-10").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps_at_kill = [int(p.name.split("-")[1]) for p in list_checkpoints(resumed / "checkpoints")]
    assert 10 <= max(steps_at_kill) < 48
    result = run_cli(resumed, overrides, "--resume")
    assert "resumed from" in result.stdout
    a, b = final_arrays(reference), final_arrays(resumed)
    assert a.keys() == b.keys()
    for group in a:
        for x, y in zip(a[group], b[group]):
            np.testing.assert_array_equal(x, y, err_msg=group)
    state = json.loads((list_checkpoints(resumed / "checkpoints")[-1] / "state.json").read_text())
    assert state["step"] == 48


def test_repeated_overflow_aborts_naming_the_step_without_checkpoint(blob_data, tmp_path):
    """A static loss scale far too large overflows float16 every step: the run stops with a clear message."""
    run_dir = tmp_path / "run"
    overrides = blob_overrides(blob_data, **{"train.precision": "mixed_float16", "train.max_bad_steps": 3,
                                             "train.checkpoint.every_steps": 1})
    result = run_cli(run_dir, overrides, "--loss-scale", "1e30", check=False)
    assert result.returncode == 2, result.stdout[-3000:]
    assert "error: step 3: loss/gradients were NaN/Inf for 3 consecutive steps" in result.stdout
    assert list_checkpoints(run_dir / "checkpoints") == []
    # this host has no GPU: the run said once why float16 is the slow path here, naming the key
    assert result.stdout.count("train.precision is mixed_float16 on a node without a GPU") == 1


def test_mixed_bfloat16_run_learns_and_its_checkpoint_evaluates_in_float32(blob_data, tmp_path):
    """train.precision=mixed_bfloat16 through the CLI: no loss scaling (scale 1 in every record), the loss
    falls, the checkpoint on disk holds float32 variables only, and `evaluate`/`predict --precision float32`
    run it in float32, agreeing with the bfloat16 model it was trained as."""
    import h5py
    import xarray as xr

    run_dir = tmp_path / "run"
    overrides = blob_overrides(blob_data, **{"train.epochs": 3, "train.precision": "mixed_bfloat16"})
    result = run_cli(run_dir, overrides)
    final = json.loads(result.stdout.strip().splitlines()[-1])
    train_records = [r for r in read_json_lines(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert {r["loss_scale"] for r in train_records} == {1.0} and final["skipped_steps"] == 0
    assert train_records[-1]["loss"] < 0.5 * train_records[0]["loss"]
    assert final["val_mean_iou"] > 0.6
    ckpt = list_checkpoints(run_dir / "checkpoints")[-1]
    assert yaml.safe_load((ckpt / "config.yaml").read_text())["train"]["precision"] == "mixed_bfloat16"
    with h5py.File(ckpt / "model.weights.h5", "r") as f:  # Keras' weights file, read with h5py
        dtypes = set()
        f.visititems(lambda name, obj: dtypes.add(obj.dtype.name) if isinstance(obj, h5py.Dataset) else None)
    assert dtypes == {"float32"}
    assert {a.dtype.name for group in load_arrays(ckpt).values() for a in group if a.dtype.kind == "f"} == {"float32"}

    # evaluate and predict in float32 (CLI); the bfloat16 model it was trained as scored the same files in
    # training's validation, and gives its probabilities in-process (Segmenter, the run's own precision)
    out, pred = tmp_path / "eval.json", tmp_path / "pred"
    for args in (("evaluate", "--checkpoint", str(run_dir), "--data", str(blob_data / "valid"), "--json", str(out)),
                 ("predict", str(blob_data / "valid"), "--checkpoint", str(run_dir), "--out", str(pred),
                  "--probabilities")):
        proc = subprocess.run(exaclimate(*args, "--precision", "float32"), env=rank_env(1, 2), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:]
    mean_iou = json.loads(out.read_text())["model"]["mean_iou"]
    assert mean_iou > 0.6 and abs(mean_iou - final["val_mean_iou"]) < 0.05
    from exascale_climate.evaluate.predict import Segmenter

    segmenter = Segmenter.from_checkpoint(run_dir)
    assert segmenter.cfg.train.precision == "mixed_bfloat16"
    nc = sorted(pred.glob("*.nc"))
    assert len(nc) == 4
    for path in nc:
        source = blob_data / "valid" / path.name.replace(".mask.nc", ".h5")
        with xr.open_dataset(path) as ds:
            p32 = np.moveaxis(ds["probability"].values[0], 0, -1)
        p16 = segmenter.segment(*segmenter.read(source))
        # the same weights in two precisions: close (bfloat16 logits), but not the same computation
        assert 0 < np.max(np.abs(p32 - p16)) < 0.1 and np.mean(np.abs(p32 - p16)) < 1e-2


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory) -> Path:
    """The demo dataset (synth -> convert -> split -> stats), 32 samples: ROOT/data/{train,valid,test,stats.h5}."""
    from exascale_climate.data.demo import build_demo_dataset

    return build_demo_dataset(tmp_path_factory.mktemp("synth"), samples=32, workers=2, progress=False).data_dir


@pytest.mark.multirank
def test_two_ranks_learn_the_synthetic_data(synthetic_data, tmp_path):
    """The demo's slim Tiramisu on 2 ranks (hierarchical allreduce) clearly beats the trivial prediction."""
    from exascale_climate.utils.launch import run_ranks

    run_dir = tmp_path / "run"
    overrides = [f"data.train_dir={synthetic_data / 'train'}", f"data.valid_dir={synthetic_data / 'valid'}",
                 f"data.stats_file={synthetic_data / 'stats.h5'}", "pipeline.stage_dir=", "train.epochs=10",
                 "optimizer.schedule.decay_steps=60"]
    result = run_ranks(2, exaclimate("train", "--config", "demo", "--run-dir", str(run_dir),
                                     *sum((["--set", s] for s in overrides), [])), timeout=600)
    assert result.returncode == 0, result.stdout[-4000:]
    valid = [r for r in read_json_lines(run_dir / "metrics.jsonl") if r["kind"] == "valid"]
    from exascale_climate.bench.train import trivial_mean_iou

    trivial = trivial_mean_iou(synthetic_data / "valid")
    best = max(r["val_mean_iou"] for r in valid)
    print(f"synthetic data: trivial mean IoU {trivial:.3f}, trained best {best:.3f}, per class {valid[-1]['val_iou']}")
    assert best > trivial + 0.15
    assert max(r["val_iou"][2] for r in valid) > 0.1 and max(r["val_iou"][1] for r in valid) > 0.1


def test_target_iou_stops_at_the_first_validation_reaching_it(blob_data, tmp_path):
    """Validation every 2 steps; the run stops (and checkpoints) at the first one at or above the target."""
    run_dir = tmp_path / "run"
    target = 0.5
    overrides = blob_overrides(blob_data, **{"train.epochs": 4, "train.validate_every_steps": 2,
                                             "train.target_iou": target, "train.deterministic": "true"})
    result = run_cli(run_dir, overrides)
    valid = [r for r in read_json_lines(run_dir / "metrics.jsonl") if r["kind"] == "valid"]
    train_records = [r for r in read_json_lines(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    ious = [r["val_mean_iou"] for r in valid]
    assert ious[-1] >= target and all(v < target for v in ious[:-1]) and len(ious) > 1, ious
    stop = valid[-1]["step"]
    assert stop < 32 and max(r["step"] for r in train_records) <= stop  # not one step after it
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")][-1] == f"ckpt-{stop}"
    assert json.loads(result.stdout.strip().splitlines()[-1])["step"] == stop


@pytest.mark.multirank
@pytest.mark.slow  # two 4-rank runs with an XLA compile on each rank: minutes on 2 shared cores
def test_xla_step_on_four_ranks_is_deterministic(blob_data, tmp_path):
    """train.jit_compile=true on 4 ranks as 2 hosts x 2 (horovodrun --gloo) with gradient lag, LARC and
    deterministic mode: the collectives run outside the XLA-compiled pass, the run trains (finite losses that
    change from step to step), and a second identical run writes bitwise the same final weights."""
    from exascale_climate.utils.launch import run_ranks

    overrides = blob_overrides(blob_data, **{"train.jit_compile": "true", "train.deterministic": "true",
                                             "distributed.gradient_lag": 1, "optimizer.name": "sgd",
                                             "optimizer.learning_rate": 0.05, "optimizer.larc.enabled": "true",
                                             "train.batch_size": 1, "train.log_every_steps": 1,
                                             "train.epochs": 2})
    arrays = []
    for name in ("a", "b"):
        run_dir = tmp_path / name
        result = run_ranks(4, cli_args(run_dir, overrides), hosts="localhost:2,127.0.0.1:2", timeout=1800)
        assert result.returncode == 0, result.stdout[-4000:]
        losses = [r["loss"] for r in read_json_lines(run_dir / "metrics.jsonl") if r["kind"] == "train"]
        assert len(losses) >= 6 and all(np.isfinite(losses))
        assert len(set(np.round(losses, 6))) > 1
        arrays.append(final_arrays(run_dir))
    for group in arrays[0]:
        for x, y in zip(arrays[0][group], arrays[1][group]):
            assert np.array_equal(x, y), group
