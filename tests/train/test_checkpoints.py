"""Checkpoints: atomic directories, keep last K and the best, exact array round trip, inference loading."""
from __future__ import annotations

import json

import numpy as np
import pytest

from exascale_climate.config import Config
from exascale_climate.errors import ExaclimateError
from exascale_climate.models import build_model
from exascale_climate.train.checkpoints import (CheckpointManager, assign_arrays, list_checkpoints, load_arrays,
                                                load_for_inference, resolve_checkpoint)
from exascale_climate.utils.io import temp_name

SHAPE = (16, 24, 3)


@pytest.fixture(scope="module")
def small():
    cfg = Config()
    cfg.data.channels = ["TMQ", "U850", "PSL"]
    t = cfg.model.tiramisu
    t.down_layers, t.up_layers, t.bottleneck_layers = [1], [1], 1
    t.growth_rate, t.initial_filters, t.kernel_size, t.dropout = 8, 8, 3, 0.0
    return cfg, build_model(cfg.model, SHAPE)


def save(manager, step, model, cfg, metric=None, extra=None):
    arrays = {"model": list(model.variables), "extra": extra or [np.arange(3.0) + step]}
    return manager.save(step, model, arrays, {"epoch": 0, "step_in_epoch": step, "input_shape": list(SHAPE)},
                        cfg, metric=metric)


def test_keep_last_k_and_best(small, tmp_path):
    cfg, model = small
    manager = CheckpointManager(tmp_path, keep=2)
    for step, metric in [(1, 0.3), (2, 0.6), (3, 0.5), (4, None)]:
        save(manager, step, model, cfg, metric)
    assert [p.name for p in list_checkpoints(manager.directory)] == ["ckpt-3", "ckpt-4"]
    best = json.loads((manager.best_dir / "state.json").read_text())
    assert best["step"] == 2 and best["best_metric"] == 0.6
    assert manager.best_metric() == 0.6 and manager.latest().name == "ckpt-4"
    assert resolve_checkpoint(tmp_path) == manager.best_dir  # a run dir resolves to best/
    assert not [p for p in manager.directory.iterdir() if p.name.startswith(".")]


def test_arrays_round_trip_and_mismatch_is_a_clear_error(small, tmp_path):
    cfg, model = small
    manager = CheckpointManager(tmp_path)
    path = save(manager, 7, model, cfg, extra=[np.float32(2.5), np.ones((2, 2))])
    arrays = load_arrays(path)
    for v, a in zip(model.variables, arrays["model"]):
        np.testing.assert_array_equal(v.numpy(), a)
    assert arrays["extra"][0] == 2.5
    with pytest.raises(ExaclimateError, match=r"\[model\] has .* arrays but the run has"):
        assign_arrays(path, "model", list(model.variables)[:-1], arrays["model"])


def test_interrupted_write_leaves_no_checkpoint_and_is_cleaned(small, tmp_path):
    cfg, model = small
    manager = CheckpointManager(tmp_path)
    save(manager, 1, model, cfg)

    class Exploding:
        def save_weights(self, path):
            raise KeyboardInterrupt  # e.g. the job is cancelled mid-write

    with pytest.raises(KeyboardInterrupt):
        manager.save(2, Exploding(), {}, {}, cfg)
    assert [p.name for p in list_checkpoints(manager.directory)] == ["ckpt-1"]
    leftover = temp_name(manager.directory / "ckpt-3")  # what a SIGKILL would leave behind
    leftover.mkdir()
    assert manager.clean_temps() == [leftover] and not leftover.exists()


def test_load_for_inference(small, tmp_path):
    cfg, model = small
    manager = CheckpointManager(tmp_path)
    path = save(manager, 5, model, cfg)
    loaded, loaded_cfg = load_for_inference(path)
    assert loaded_cfg.data.channels == cfg.data.channels
    x = np.random.default_rng(0).normal(size=(1, *SHAPE)).astype(np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)
    with pytest.raises(ExaclimateError, match="no checkpoint here"):
        load_for_inference(tmp_path / "nothing")
