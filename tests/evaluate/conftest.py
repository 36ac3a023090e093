"""Small hand-made samples for the evaluate tests (fields with a known TC blob and AR band)."""
import numpy as np
import pytest

from exascale_climate.data.writers import write_netcdf_sample
from exascale_climate.data.grid import default_coordinates
from exascale_climate.variables import VARIABLE_NAMES


# Plausible weather (issue 23: values outside a variable's physical range are rejected on read), hand-picked in
# VARIABLE_NAMES order; PSL and TMQ get their means below.
MEAN = np.array([0, 0, 0, 0, 0, 0.01, 97000, 0, 220, 255, 1e-7, 288, 287, 100, 11800, 60], np.float32)
SPREAD = np.array([1, 1, 1, 1, 1, 0.001, 1, 1, 1, 1, 1e-8, 1, 1, 1, 1, 1], np.float32)


def make_fields(grid=(48, 72), seed=0):
    """Fields (H, W, 16) and labels (H, W): a TC square (low PSL, strong wind) and an AR band (high TMQ)."""
    rng = np.random.default_rng(seed)
    h, w = grid
    data = (rng.normal(0.0, 1.0, (h, w, len(VARIABLE_NAMES))) * SPREAD + MEAN).astype(np.float32)
    data[..., VARIABLE_NAMES.index("PSL")] += 101000.0
    data[..., VARIABLE_NAMES.index("TMQ")] += 20.0
    labels = np.zeros((h, w), np.uint8)
    labels[h // 2 - 3: h // 2 + 3, 10:16] = 1
    labels[h // 4: h // 4 + 2, 30:60] = 2
    data[labels == 1, VARIABLE_NAMES.index("PSL")] -= 3000.0
    data[labels == 1, VARIABLE_NAMES.index("UBOT")] += 30.0
    data[labels == 2, VARIABLE_NAMES.index("TMQ")] += 30.0
    return data, labels


@pytest.fixture
def nc_sample(tmp_path):
    """A labelled ClimateNet-layout netCDF file on a 48x72 global grid; returns (path, data, labels, lat, lon)."""
    data, labels = make_fields()
    lat, lon = default_coordinates(*labels.shape)
    path = write_netcdf_sample(tmp_path / "sample-2000-01-01.nc", data, labels, list(VARIABLE_NAMES), lat=lat,
                               lon=lon, time_hours=6.0)
    return path, data, labels, lat, lon


def write_dataset(root, grid=(48, 72), counts=(("train", 6), ("valid", 2), ("test", 3))):
    """DeepCAM-layout splits + stats.h5 from make_fields (different seeds), as `data split` lays them out."""
    from exascale_climate.data.layouts import list_samples
    from exascale_climate.data.writers import write_deepcam_sample
    from exascale_climate.data.stats import compute_stats, write_stats

    lat, lon = default_coordinates(*grid)
    seed = 0
    for split, n in counts:
        for _ in range(n):
            data, labels = make_fields(grid, seed)
            write_deepcam_sample(root / "data" / split / f"data-2000-01-{seed + 1:02d}-00-00-00.h5", data, labels,
                                 list(VARIABLE_NAMES), source="test", time=f"2000-01-{seed + 1:02d}T00:00:00",
                                 lat=lat, lon=lon)
            seed += 1
    write_stats(root / "data" / "stats.h5", compute_stats(list_samples(root / "data" / "train"), progress=False))


@pytest.fixture(scope="session")
def trained_assets(tmp_path_factory):
    """A real run: the demo config's slim Tiramisu trained for 2 steps on a hand-made dataset (shared by the
    evaluate/predict tests; ~10 s)."""
    from exascale_climate.train.demo import DemoAssets, ensure_run

    assets = DemoAssets(tmp_path_factory.mktemp("demo"))
    write_dataset(assets.root)
    return ensure_run(assets, steps=2)


@pytest.fixture
def fields_factory():
    """make_fields for tests that need other grids or seeds (conftest is not importable as a module)."""
    return make_fields
