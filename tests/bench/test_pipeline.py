"""`exaclimate bench pipeline` and `bench stage`: records against a baseline measured in the same run."""
import pytest

from exascale_climate.bench.pipeline import bench_pipeline, drop_page_cache
from exascale_climate.bench.stage import bench_stage
from exascale_climate.errors import ExaclimateError


def _check_ratios(records):
    for r in records:
        assert r["value"] >= 0
        if r.get("baseline"):
            assert r["ratio"] is not None and r["ratio"] >= 0


@pytest.mark.parametrize("cache", ["warm", "cold"])
def test_bench_pipeline_compares_each_reader_with_the_raw_read(tmp_path, cache):
    if cache == "cold":
        try:
            drop_page_cache()
        except ExaclimateError as e:  # not root, or /proc/sys read-only (containers)
            pytest.skip(str(e))
    records = bench_pipeline((48, 72), samples=4, readers=2, passes=1, workdir=tmp_path, cache=cache)
    by_metric = {r["metric"]: r for r in records}
    tag = ", cold cache" if cache == "cold" else ""
    raw = by_metric[f"raw read (file bytes{tag})"]["value"]
    for mode in ("thread", "process"):
        rec = by_metric[f"pipeline ({mode} readers{tag})"]
        assert rec["baseline"] == raw and rec["samples_per_epoch"] == 4 and rec["cache"] == cache
        median = by_metric[f"pipeline ({mode} readers{tag}) / raw read, median of rounds"]
        assert median["unit"] == "ratio" and median["value"] > 0
    ladder = [f"raw read, 2 streams{tag}", f"plain reads of fields + labels (2 threads{tag})",
              f"+ NaN/Inf and label checks: read_sample (2 threads{tag})", f"+ z-score normalisation (2 threads{tag})"]
    for metric in ladder:  # the pipeline's work added step by step, each against the same raw read
        assert by_metric[metric]["baseline"] == raw and by_metric[metric]["value"] > 0
    by_file = by_metric.get("read_sample / raw read, file by file (cold cache, median)")
    assert (by_file is not None and by_file["value"] > 0) == (cache == "cold")
    wait = next(r for r in records if r["metric"].startswith("data wait"))
    assert 0 <= wait["value"] <= 1
    _check_ratios(records)


def test_median_round_ratio_pairs_rounds():
    from exascale_climate.bench.pipeline import _median_round_ratio

    # a slow round for both halves the rates but not the ratio; the median ignores one odd round
    assert _median_round_ratio([10, 5, 9], [20, 10, 9]) == pytest.approx(0.5)


def test_bench_pipeline_rejects_an_unknown_cache_mode(tmp_path):
    with pytest.raises(ExaclimateError, match="cache 'hot'"):
        bench_pipeline((48, 72), samples=2, workdir=tmp_path, cache="hot")


def test_bench_stage_times_each_verify_mode_against_cp(tmp_path):
    records = bench_stage((48, 72), samples=3, repeat=1, workdir=tmp_path)
    cp = next(r for r in records if r["metric"] == "cp -r")
    staged = [r for r in records if r["metric"].startswith("stage --verify")]
    assert {r["metric"].split()[2].rstrip(",") for r in staged} == {"full", "checksum", "size"}
    assert all(r["baseline"] == cp["value"] for r in staged)
    _check_ratios(records)


def test_stage_cost_fit_and_deepcam_extrapolation_by_hand():
    """The fit recovers costs that generated the timings; the extrapolation's bytes follow from the plan by hand:
    validation+test (22% of 8.8 TB) go to every node, each node reading 1/N of them itself."""
    from exascale_climate.bench.stage import extrapolate, fit_costs

    alpha, beta = 0.002, 3e-10
    runs = [{"messages": m, "max_node_received": b, "swap_seconds": alpha * m + beta * b}
            for m, b in ((10, 1e8), (40, 2e8), (25, 9e8))]
    assert fit_costs(runs) == pytest.approx((alpha, beta), rel=1e-6)
    shared = 8.8e12 * 0.22
    new = extrapolate(alpha, beta, 16, 6, "alltoall")
    old = extrapolate(alpha, beta, 16, 6, "allgather")
    assert new["node_bytes"] == pytest.approx(shared * 15 / 16) == new["ideal_node_bytes"]
    assert old["node_bytes"] == pytest.approx(6 * shared * (1 - 1 / 96))
    assert extrapolate(alpha, beta, 16, 1, "allgather")["node_bytes"] == pytest.approx(new["node_bytes"])
    assert old["seconds"] - new["seconds"] == pytest.approx(beta * (old["node_bytes"] - new["node_bytes"]), rel=1e-3)
