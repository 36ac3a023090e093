"""Training-test fixtures: a small learnable dataset in the DeepCAM layout and a slim Tiramisu config.

The blob dataset is written with the DATA helper's own writers (writers.write_deepcam_sample, stats) so the
pipeline reads it exactly like converted data; it is quicker to make than `data synth` + `data convert` and has
a signal a few hundred steps can learn (class regions are visible in the fields).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from exascale_climate.data.synthetic import weather_like

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # the rank worker scripts import helpers from here

CHANNELS = ["TMQ", "U850", "V850", "PSL"]


def blob_sample(rng: np.random.Generator, grid: tuple[int, int]):
    """Fields with one round 'cyclone' (class 1) and one long 'river' band (class 2) over noise."""
    h, w = grid
    yy, xx = np.mgrid[0:h, 0:w]
    labels = np.zeros(grid, np.uint8)
    cy, cx, r = rng.integers(h // 6, h - h // 6), rng.integers(0, w), rng.integers(h // 12, h // 7)
    band_y, slope = rng.integers(h // 5, h - h // 5), rng.uniform(-0.3, 0.3)
    river = np.abs(yy - (band_y + slope * (xx - w / 2))) < max(2, h // 20)
    cyclone = (yy - cy) ** 2 + ((xx - cx + w // 2) % w - w // 2) ** 2 < r * r
    labels[river] = 2
    labels[cyclone] = 1
    noise = rng.normal(0.0, 1.0, (h, w, len(CHANNELS)))
    data = noise.copy()
    data[..., 0] += 2.5 * river + 1.5 * cyclone  # TMQ: moist band and core
    data[..., 1] += 2.0 * cyclone * np.sign(yy - cy)  # U850: rotation
    data[..., 2] += 1.5 * river
    data[..., 3] -= 3.0 * cyclone  # PSL: low pressure core
    return weather_like(data, CHANNELS), labels  # each channel mapped onto plausible weather (checked on read)


def make_blob_dataset(root: Path, n_train: int = 16, n_valid: int = 4, grid=(48, 72), seed: int = 0) -> Path:
    from exascale_climate.data.layouts import list_samples
    from exascale_climate.data.writers import write_deepcam_sample
    from exascale_climate.data.stats import compute_stats, write_stats

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("valid", n_valid)):
        for i in range(n):
            data, labels = blob_sample(rng, grid)
            write_deepcam_sample(root / split / f"data-{split}-{i:04d}.h5", data, labels, CHANNELS, source="blobs")
    write_stats(root / "stats.h5", compute_stats(list_samples(root / "train"), progress=False))
    return root


def blob_overrides(root: Path, **extra) -> list[str]:
    """--set overrides for a fast run on the blob dataset with a slim Tiramisu."""
    base = {
        "data.train_dir": root / "train", "data.valid_dir": root / "valid", "data.stats_file": root / "stats.h5",
        "data.channels": "[" + ",".join(CHANNELS) + "]",
        "model.name": "tiramisu", "model.tiramisu.down_layers": "[1,1]", "model.tiramisu.up_layers": "[1,1]",
        "model.tiramisu.bottleneck_layers": 1, "model.tiramisu.growth_rate": 8, "model.tiramisu.kernel_size": 3,
        "model.tiramisu.initial_filters": 8, "model.tiramisu.dropout": 0.0,
        "optimizer.name": "adam", "optimizer.learning_rate": 0.01,
        "train.batch_size": 2, "train.epochs": 1, "train.seed": 3, "train.log_every_steps": 2,
        "pipeline.readers": 1,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture(scope="session")
def blob_data(tmp_path_factory) -> Path:
    return make_blob_dataset(tmp_path_factory.mktemp("blobs"))
