"""Staging onto a node-local disk too small for the data (a real 2 MB tmpfs the test mounts): refused before the
first byte is copied, one line naming the directory, the bytes needed (= the sizes on disk, summed here) and free."""
from __future__ import annotations

import subprocess


from exascale_climate.utils.launch import exaclimate


def run(*args):
    return subprocess.run(exaclimate(*args), capture_output=True, text=True, timeout=600)


def test_stage_refuses_a_disk_too_small(small_disk, tmp_path):
    nc, src = tmp_path / "nc", tmp_path / "src"
    assert run("data", "synth", "--out", str(nc), "--samples", "4", "--grid", "96x144", "--workers", "1").returncode == 0
    assert run("data", "convert", str(nc), "--out", str(src / "train")).returncode == 0
    need = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    assert need > 2 * 2**20
    done = run("stage", "--src", str(src), "--dst", str(small_disk / "stage"))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and f"error: {small_disk / 'stage'}" in error[0], done.stderr[-2000:]
    assert f"not enough space to stage: {need} bytes needed" in error[0], error
    assert not [p for p in small_disk.rglob("*") if p.is_file()]  # nothing copied, no temporary
