"""A full disk during a checkpoint, on a real small tmpfs the test mounts: one-line error naming the checkpoint
path and the space needed, the previous checkpoint bit-for-bit intact, no temporary left behind."""
from __future__ import annotations

import os

import numpy as np
import pytest

from exascale_climate.config import Config
from exascale_climate.errors import ExaclimateError
from exascale_climate.train.checkpoints import CheckpointManager, list_checkpoints, load_arrays


def small_model():
    import keras

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    return model


def test_checkpoint_on_a_full_disk_keeps_the_previous_one(small_disk):
    model = small_model()
    ckpts = CheckpointManager(small_disk / "run", keep=5)
    first = [np.arange(1000, dtype=np.float32)]
    ckpts.save(1, model, {"model": first}, {"epoch": 0}, Config())
    before = {p.name: p.read_bytes() for p in (small_disk / "run/checkpoints/ckpt-1").iterdir()}
    free = os.statvfs(small_disk)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (free.f_bavail * free.f_frsize - 200_000))  # 200 kB left
    big = [np.ones(100_000, np.float32)]  # 400 kB of state: does not fit
    with pytest.raises(ExaclimateError) as info:
        ckpts.save(2, model, {"model": big}, {"epoch": 0}, Config())
    message = str(info.value)
    assert "\n" not in message
    assert str(small_disk / "run/checkpoints/ckpt-2") in message and "no space left" in message
    needed = int(message.split("needs about ", 1)[1].split(" ")[0])
    assert needed >= 800_000  # the 400 kB written twice (weights file + state.npz), by hand
    assert str(small_disk / "run/checkpoints/ckpt-1") in message  # the last good one, named
    assert [p.name for p in list_checkpoints(small_disk / "run/checkpoints")] == ["ckpt-1"]
    assert sorted(os.listdir(small_disk / "run/checkpoints")) == ["ckpt-1"]  # no temporaries
    after = {p.name: p.read_bytes() for p in (small_disk / "run/checkpoints/ckpt-1").iterdir()}
    assert after == before
    np.testing.assert_array_equal(load_arrays(small_disk / "run/checkpoints/ckpt-1")["model"][0], first[0])
    filler.unlink()  # space again: the next checkpoint is written
    ckpts.save(2, model, {"model": big}, {"epoch": 0}, Config())
    assert [p.name for p in list_checkpoints(small_disk / "run/checkpoints")] == ["ckpt-1", "ckpt-2"]
