"""A full disk met by `exaclimate data convert`, on a real 2 MB tmpfs the test mounts: one line naming the file,
the space left and the space still needed, exit 2, no traceback, no temporary left, the samples written before it complete."""
from __future__ import annotations

import subprocess

import h5py
import numpy as np

from exascale_climate.utils.launch import exaclimate


def run(*args):
    return subprocess.run(exaclimate(*args), capture_output=True, text=True, timeout=600)


def test_convert_on_a_full_disk(small_disk, tmp_path):
    nc = tmp_path / "nc"
    assert run("data", "synth", "--out", str(nc), "--samples", "3", "--grid", "96x144", "--workers", "1").returncode == 0
    roomy = tmp_path / "roomy"
    assert run("data", "convert", str(nc), "--out", str(roomy)).returncode == 0
    out = small_disk / "out"
    full = run("data", "convert", str(nc), "--out", str(out))  # ~0.9 MB a sample: the third does not fit
    assert full.returncode == 2, full.stderr[-2000:]
    lines = full.stderr.strip().splitlines()
    assert "Traceback" not in full.stderr and len([ln for ln in lines if ln.startswith("error:")]) == 1
    error = [ln for ln in lines if ln.startswith("error:")][0]
    written = sorted(p.name for p in out.iterdir())
    assert all(not name.startswith(".") for name in written)  # no temporary
    missing = sorted(p.name for p in roomy.glob("data-*.h5") if p.name not in written)
    assert missing and f"error: {out / missing[0]}: no space left on the device" in error
    assert "bytes free" in error
    # the space still needed: the samples missing from the full disk, as big as on the roomy one (summed here)
    need = sum((roomy / name).stat().st_size for name in missing)
    said = int(error.split("about ", 1)[1].split(" bytes needed", 1)[0])
    assert abs(said - need) <= 0.01 * need, (said, need, error)
    assert f"for the {len(missing)} sample(s) still to write" in error
    for name in written:  # complete: the same arrays as the copy written to a roomy disk
        with h5py.File(out / name) as a, h5py.File(roomy / name) as b:
            for key in b:
                if isinstance(b[key], h5py.Dataset):
                    np.testing.assert_array_equal(a[key][...], b[key][...], err_msg=f"{name}:{key}")
