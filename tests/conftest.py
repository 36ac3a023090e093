"""Shared test set-up: keep TensorFlow quiet and single-threaded per process, and give tests small grids."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

TEST_GRID = (96, 144)


@pytest.fixture
def test_grid():
    return TEST_GRID
