"""A run directory is a self-contained model: trained with a RELATIVE stats path in one working directory, it
predicts from another (before, `predict --checkpoint RUN` failed there: the config's stats.h5 path was relative)."""
import filecmp
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import blob_overrides, make_blob_dataset

ROOT = Path(__file__).resolve().parents[2]


def cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "exascale_climate.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def test_run_keeps_its_stats_and_predicts_from_another_directory(tmp_path):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    elsewhere.mkdir()
    make_blob_dataset(work / "data", n_train=4, n_valid=2)
    relative = [o.replace(str(work) + "/", "") for o in blob_overrides(work / "data", **{"train.max_steps": 2})]
    assert any(o == "data.stats_file=data/stats.h5" for o in relative)
    sets = [a for o in relative for a in ("--set", o)]
    proc = cli("train", *sets, "--run-dir", "run", cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    kept = work / "run" / "stats.h5"
    assert kept.is_file() and filecmp.cmp(kept, work / "data" / "stats.h5", shallow=False)
    (work / "data" / "stats.h5").rename(work / "data" / "moved.h5")  # the run must not need the original
    sample = sorted((work / "data" / "valid").glob("*.h5"))[0]
    proc = cli("predict", "--checkpoint", work / "run", sample, "--out", elsewhere / "pred", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import netCDF4

    with netCDF4.Dataset(elsewhere / "pred" / f"{sample.stem}.mask.nc") as nc:
        mask = np.asarray(nc["mask"][:])
    assert mask.shape == (1, 48, 72) and set(np.unique(mask)) <= {0, 1, 2}
