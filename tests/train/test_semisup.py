"""The semi-supervised detector in the common training loop: unlabelled samples only reach the loss through the
reconstruction, the pipeline labels the configured share of files, and a 2-rank run learns and resumes."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from conftest import CHANNELS, blob_overrides
from exascale_climate.config import load_config
from exascale_climate.utils.launch import exaclimate, rank_env
from exascale_climate.utils.log import read_json_lines


def slim_model(grid=(32, 48)):
    import keras

    from exascale_climate.models import build_model

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    cfg = load_config("semisup_demo")
    return cfg, build_model(cfg.model, (*grid, 4))


def targets_with_one_event(grid=(32, 48), cell=8):
    """Both samples: an AR (class index 1) centred in cell (1, 2)."""
    t = np.zeros((2, grid[0] // cell, grid[1] // cell, 6), np.float32)
    t[:, 1, 2] = [1.0, 1.0, 0.3, 0.6, 0.5, -0.2]
    return t


def test_loss_ignores_box_terms_of_unlabelled_samples():
    """Gradients of the loss w.r.t. the detection output are exactly zero for the unlabelled sample (and
    non-zero for the labelled one); changing the unlabelled sample's box targets changes neither the loss nor
    any weight gradient, while its reconstruction still has a gradient."""
    import tensorflow as tf

    from exascale_climate.train.semisup import make_loss_fn

    cfg, model = slim_model()
    loss_fn = make_loss_fn(cfg.model.semisup, cfg.model.num_classes)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 32, 48, 4)).astype(np.float32))
    labelled = tf.constant([1.0, 0.0])
    t1 = targets_with_one_event()
    t2 = t1.copy()
    t2[1] = 0.0
    t2[1, 3, 5] = [1.0, 0.0, 0.9, 0.1, 2.0, 2.0]  # a different event for the UNLABELLED sample only
    y_mask = tf.zeros((2, 32, 48), tf.int32)

    def grads(targets):
        with tf.GradientTape(persistent=True) as tape:
            recon, det = model(x, training=True)
            tape.watch([recon, det])
            loss = loss_fn((x, tf.constant(targets), y_mask), (recon, det), labelled)
        g_out = tape.gradient(loss, [recon, det])
        g_w = tape.gradient(loss, [v.value for v in model.trainable_variables])
        return float(loss), g_out, g_w

    loss1, (g_recon, g_det), gw1 = grads(t1)
    loss2, _, gw2 = grads(t2)
    g_det = g_det.numpy()
    assert np.all(g_det[1] == 0.0)  # unlabelled: no confidence/class/box gradient at all
    assert np.abs(g_det[0]).sum() > 0  # labelled: box terms are live
    assert np.abs(g_recon.numpy()[1]).sum() > 0  # unlabelled: reconstruction still trains the network
    assert loss1 == loss2
    for a, b in zip(gw1, gw2):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_labelled_fraction_and_unlabelled_dir(blob_data, tmp_path):
    """The pipeline's labelled flags: round(fraction * N) of the labelled directory, none of the extra
    unlabelled directory; the flags travel with the batches (w of the (x, y, w) element)."""
    import shutil

    from exascale_climate.pipeline.dataset import build_dataset, labelled_files, load_stats, split_files

    extra = tmp_path / "unlabelled"
    extra.mkdir()
    for p in sorted((blob_data / "valid").glob("data-*.h5")):
        shutil.copy(p, extra / p.name.replace("valid", "extra"))
    cfg = load_config("semisup_demo", [*blob_overrides(blob_data), "model.name=semisup",
                                       "data.labelled_fraction=0.25", f"data.unlabelled_dir={extra}",
                                       "pipeline.shuffle=false", "train.batch_size=1"])
    files = split_files(cfg, "train")
    assert len(files) == 16 + 4
    chosen = labelled_files(cfg, files)
    assert len(chosen) == 4 and not any("extra" in p for p in chosen)
    flags = [float(w[0]) for _, _, w in build_dataset(cfg, files, load_stats(cfg), training=True)]
    assert sum(flags) == 4 and len(flags) == 20


@pytest.mark.slow
def test_evaluate_predict_plot_and_the_sample_without_boxes(blob_data, tmp_path):
    """A semisup run evaluated on samples of which one has no stored boxes: a one-line error naming it; with
    the boxes stored, evaluate reports mAP, predict writes boxes into the event table and plot draws them."""
    from exascale_climate.data.boxes import read_boxes

    import shutil

    run_dir = tmp_path / "run"
    overrides = blob_overrides(blob_data, **{"train.max_steps": 2, "train.epochs": 1})
    args = ["train", "--config", "semisup_demo", "--run-dir", str(run_dir),
            *sum((["--set", s] for s in overrides + ["model.name=semisup"]), [])]
    result = subprocess.run(exaclimate(*args), env=rank_env(1, 2), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    data = tmp_path / "test"
    shutil.copytree(blob_data / "valid", data)
    subprocess.run(exaclimate("data", "boxes", str(data)), check=True, capture_output=True)
    bad = sorted(data.glob("data-*.h5"))[2]
    import h5py

    with h5py.File(bad, "r+") as f:
        del f["climate/boxes"]
    out = subprocess.run(exaclimate("evaluate", "--checkpoint", str(run_dir), "--data", str(data)),
                         env=rank_env(1, 2), capture_output=True, text=True, timeout=600)
    assert out.returncode != 0
    assert f"{bad} [climate/boxes]: no stored boxes" in out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr

    # With the boxes back: mAP in the JSON report, boxes in predict's event table, and a plot of them.
    subprocess.run(exaclimate("data", "boxes", str(data)), check=True, capture_output=True)
    report_path = tmp_path / "metrics.json"
    out = subprocess.run(exaclimate("evaluate", "--checkpoint", str(run_dir), "--data", str(data), "--json",
                                    str(report_path)), env=rank_env(1, 2), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    import json

    report = json.loads(report_path.read_text())
    assert report["true_boxes"] == sum(len(read_boxes(p)) for p in sorted(data.glob("data-*.h5")))
    for key in ("iou_0.1", "iou_0.5"):
        assert set(report["map"][key]["ap"]) == {"tropical_cyclone", "atmospheric_river"}
        assert all(0.0 <= v <= 1.0 for v in report["map"][key]["ap"].values() if v is not None)
    assert set(report["box_masks"]) >= {"model", "true_boxes"}
    out = subprocess.run(exaclimate("predict", "--checkpoint", str(run_dir), str(bad), "--out", str(tmp_path / "pred")),
                         env=rank_env(1, 2), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    import csv

    rows = list(csv.DictReader((tmp_path / "pred" / "events.csv").open()))
    assert rows and all(r["box_lat_min"] and r["box_lon_max"] and float(r["score"]) >= 0.3 for r in rows)
    assert all(float(r["box_lat_min"]) <= float(r["centroid_lat"]) <= float(r["box_lat_max"]) for r in rows)
    png = tmp_path / "boxes.png"
    out = subprocess.run(exaclimate("plot", str(bad), "--boxes", "--pred-boxes", str(tmp_path / "pred" / "events.csv"),
                                    "--out", str(png)), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and png.read_bytes().startswith(b"\x89PNG")


LAYOUTS = [pytest.param(2, "gloo", None, id="2-gloo"),
           pytest.param(4, "gloo", "localhost:2,127.0.0.1:2", id="4-gloo-2hosts"),
           pytest.param(4, "mpirun", None, id="4-mpirun")]


@pytest.mark.multirank
@pytest.mark.timeout(3600)  # three multi-rank runs on 2 shared cores
@pytest.mark.slow
@pytest.mark.parametrize("np_,controller,hosts", LAYOUTS)
def test_two_ranks_lower_the_loss_and_resume(blob_data, tmp_path, np_, controller, hosts):
    """The slim detector on 2 Horovod ranks, 4 ranks on 2 simulated hosts and 4 mpirun ranks (half the files
    labelled): the loss falls; a second call with --resume continues from the last checkpoint to the new step
    budget, and ends with the same checkpoint arrays as one run of the whole budget (deterministic mode)."""
    from exascale_climate.utils.launch import run_ranks
    from test_resume_ranks import assert_same_arrays

    run_dir = tmp_path / "run"
    overrides = blob_overrides(blob_data, **{
        "model.name": "semisup", "data.labelled_fraction": 0.5, "train.epochs": 100, "train.max_steps": 40,
        "train.log_every_steps": 4, "train.checkpoint.every_steps": 8, "train.checkpoint.every_epochs": 0,
        "train.validate_every_steps": 40, "optimizer.learning_rate": 1e-3, "train.deterministic": "true",
        "data.channels": "[" + ",".join(CHANNELS) + "]"})

    def train(*extra, where=run_dir):
        argv = exaclimate("train", "--config", "semisup_demo", "--run-dir", str(where), *extra,
                          *sum((["--set", s] for s in overrides), []))
        result = run_ranks(np_, argv, controller, timeout=1800, hosts=hosts)
        assert result.returncode == 0, result.stdout[-4000:]
        return result

    first = train()
    assert f"training semisup on {np_} rank(s)" in first.stdout
    records = [r for r in read_json_lines(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    losses = [r["loss"] for r in records]
    assert records[-1]["step"] == 40
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:2]), losses
    overrides = [o for o in overrides if not o.startswith("train.max_steps=")] + ["train.max_steps=48"]
    result = train("--resume")
    assert "resumed from" in result.stdout and "ckpt-40" in result.stdout
    steps = [r["step"] for r in read_json_lines(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert steps[-1] == 48 and 44 in steps
    assert (run_dir / "checkpoints" / "ckpt-48").is_dir()
    train(where=tmp_path / "whole")  # 48 steps in one run
    arrays = assert_same_arrays(tmp_path / "whole" / "checkpoints" / "ckpt-48", run_dir / "checkpoints" / "ckpt-48")
    assert {"model", "optimizer"} <= set(arrays) and arrays["model"]
