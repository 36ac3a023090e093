"""Benchmark records: the ratio against the same run's baseline, checked against hand-computed values (the
benchmark tests only check that each figure names its baseline)."""
from exascale_climate.bench.common import format_table, record


def test_ratio_is_value_over_baseline():
    assert record("b", "m", 3.0, "GB/s", baseline=1.5, baseline_name="cp")["ratio"] == 2.0
    assert record("b", "m", 0.25, "s", baseline=2.0)["ratio"] == 0.125
    assert record("b", "m", 3.0, "GB/s")["ratio"] is None
    assert record("b", "m", 3.0, "GB/s", baseline=0.0)["ratio"] is None  # no division by a zero baseline


def test_table_shows_baseline_and_ratio():
    rec = record("stage", "stage --verify size", 1.2345, "GB/s", baseline=2.469, baseline_name="cp -r")
    row = "| stage | stage --verify size | 1.234 | GB/s | 2.469 (cp -r) | 0.500 |"
    assert format_table([rec]).splitlines()[-1] == row
