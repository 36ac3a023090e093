"""`exaclimate patches extract` on real synthetic files: centred positives, event-free negatives, split by time."""
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.classify.patch_checks import SIZES, VARIABLES, class_mask, crop, source_fields



def cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "exascale_climate.cli", *args], capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    base = tmp_path_factory.mktemp("patches")
    cli("data", "synth", "--out", str(base / "nc"), "--samples", "8", "--grid", "96x144", "--seed", "2")
    args = ["patches", "extract", str(base / "nc"), "--out", str(base / "p"), "--seed", "1"]
    for key, (h, w) in SIZES.items():
        args += ["--size", f"{key}={h}x{w}", "--count", f"{key}=30,40"]
    out = cli(*args).stdout
    return base, out


@pytest.mark.parametrize("key", ["tc", "ar", "wf"])
def test_positives_centred_on_events_and_negatives_free_of_them(extracted, key):
    base, _ = extracted
    with h5py.File(base / "p" / f"{key}.h5", "r") as f:
        sources = json.loads(f.attrs["sources"])
        assert json.loads(f.attrs["variables"]) == VARIABLES[key]
        assert tuple(f.attrs["size"]) == SIZES[key]
        n_pos = 0
        for split in ("train", "test"):
            g = f[split]
            assert g["data"].shape[1:] == (*SIZES[key], len(VARIABLES[key]))
            for j in range(len(g["label"])):
                path = sources[g["source"][j]]
                mask = crop(class_mask(key, path), g["row"][j], g["col"][j], SIZES[key])
                h, w = SIZES[key]
                if g["label"][j] == 1:
                    n_pos += 1
                    assert mask[h // 2, w // 2], f"{key} positive {j} is not centred on the event"
                else:
                    assert not mask.any(), f"{key} negative {j} holds an event pixel"
                # the stored fields are the source's, cropped at the stored place
                fields = source_fields(key, path)
                np.testing.assert_array_equal(g["data"][j][..., : fields.shape[-1]],
                                              crop(fields, g["row"][j], g["col"][j], SIZES[key]))
        assert n_pos > 0


def test_ar_patches_carry_the_land_sea_mask(extracted):
    base, _ = extracted
    from exascale_climate.data.geography import geography

    land = geography(96, 144)[0] >= 0.5
    with h5py.File(base / "p" / "ar.h5", "r") as f:
        g = f["train"]
        for j in range(min(10, len(g["label"]))):
            np.testing.assert_array_equal(g["data"][j][..., 1], crop(land, g["row"][j], g["col"][j], SIZES["ar"]))


def test_split_by_time_does_not_leak(extracted):
    base, _ = extracted
    for key in SIZES:
        with h5py.File(base / "p" / f"{key}.h5", "r") as f:
            sources = json.loads(f.attrs["sources"])
            train_files = {sources[i] for i in f["train/source"][...]}
            test_files = {sources[i] for i in f["test/source"][...]}
            assert train_files and test_files and not train_files & test_files
            # every training time step comes before every test time step (file names are time stamps)
            assert max(Path(p).name for p in train_files) < min(Path(p).name for p in test_files)


def test_counts_option_and_provenance(extracted):
    base, out = extracted
    with h5py.File(base / "p" / "wf.h5", "r") as f:
        assert list(f.attrs["requested"]) == [30, 40]
        pos = int(f["train/label"][...].sum() + f["test/label"][...].sum())
        neg = len(f["train/label"]) + len(f["test/label"]) - pos
        assert pos <= 30 and neg == 40  # the set holds plenty of event-free windows
        assert "patches extract" in f.attrs["created_by"] and "wf_tfp_min" in f.attrs["labeller"]
    assert "wf: train" in out


def test_default_counts_are_the_tables(extracted, tmp_path):
    base, _ = extracted
    cli("patches", "extract", str(base / "nc"), "--out", str(tmp_path), "--pattern", "tc", "--size", "tc=8x8")
    with h5py.File(tmp_path / "tc.h5", "r") as f:
        assert list(f.attrs["requested"]) == [10000, 10000]


def test_size_that_does_not_fit_the_grid_is_named(extracted, tmp_path):
    base, _ = extracted
    proc = cli("patches", "extract", str(base / "nc"), "--out", str(tmp_path), "--pattern", "ar", check=False)
    assert proc.returncode != 0 and "148x224" in proc.stderr and "Traceback" not in proc.stderr
