"""A run directory is a self-contained model: trained with a RELATIVE stats path in one working directory, it
predicts from another (before, `predict --checkpoint RUN` failed there: the config's stats.h5 path was relative)."""
import filecmp

import netCDF4
import numpy as np

from conftest import blob_overrides, make_blob_dataset


def test_run_keeps_its_stats_and_predicts_from_another_directory(tmp_path, monkeypatch):
    from exascale_climate.config import load_config
    from exascale_climate.evaluate.predict import predict
    from exascale_climate.train.loop import train

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    elsewhere.mkdir()
    make_blob_dataset(work / "data", n_train=4, n_valid=2)
    relative = [o.replace(str(work) + "/", "") for o in blob_overrides(work / "data", **{"train.max_steps": 2})]
    assert "data.stats_file=data/stats.h5" in relative
    monkeypatch.chdir(work)
    train(load_config(None, relative), "run")
    kept = work / "run" / "stats.h5"
    assert kept.is_file() and filecmp.cmp(kept, work / "data" / "stats.h5", shallow=False)
    (work / "data" / "stats.h5").rename(work / "data" / "moved.h5")  # the run must not need the original
    sample = sorted((work / "data" / "valid").glob("*.h5"))[0]
    monkeypatch.chdir(elsewhere)
    predict(work / "run", [sample], "pred")
    with netCDF4.Dataset(elsewhere / "pred" / f"{sample.stem}.mask.nc") as nc:
        mask = np.asarray(nc["mask"][:])
    assert mask.shape == (1, 48, 72) and set(np.unique(mask)) <= {0, 1, 2}
