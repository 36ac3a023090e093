"""Small DeepCAM-layout datasets written with the data module's own writers.

Channel 0 of every sample holds the file's index and channel 1 the longitude (column) index (mod 128), so tests
can tell which file a batch came from and check that augmentation moved data and labels together.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

from exascale_climate.data.writers import write_deepcam_sample
from exascale_climate.data.stats import compute_stats, write_stats
from exascale_climate.data.synthetic import weather_like
from exascale_climate.variables import VARIABLE_NAMES

sys.path.insert(0, str(Path(__file__).parent))  # strace_observer: the outside observer of staging tests

GRID = (16, 24)


def write_dataset(root: Path, counts=(("train", 6), ("valid", 2), ("test", 2)), grid=GRID, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    h, w = grid
    index = 0
    for split, n in counts:
        for _ in range(n):
            data = weather_like(rng.normal(0.0, 1.0, (h, w, len(VARIABLE_NAMES))))  # plausible: checked on read
            labels = rng.integers(0, 3, (h, w)).astype(np.uint8)
            data[..., 0] = index
            data[..., 1] = np.arange(w)[None, :] % 128  # U850: below 150 m/s on the wide test grids
            write_deepcam_sample(root / split / f"data-{index:04d}.h5", data, labels, list(VARIABLE_NAMES))
            index += 1
    write_stats(root / "stats.h5", compute_stats(sorted((root / "train").glob("data-*.h5")), progress=False))
    return root


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "src")


@pytest.fixture
def dataset_factory():
    """write_dataset(root, counts, grid) for tests that need another size of dataset."""
    return write_dataset
