"""Shared test set-up: keep TensorFlow quiet and single-threaded per process, and give tests small grids."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import subprocess  # noqa: E402

import pytest  # noqa: E402

TEST_GRID = (96, 144)


@pytest.fixture
def test_grid():
    return TEST_GRID


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MB tmpfs mounted for the test (full-disk faults); skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
