"""`exaclimate bench train`: 1 and 2 real Horovod ranks, every allreduce variant, efficiency against 1 rank."""
import pytest

from exascale_climate.bench.train import VARIANTS, bench_scaling


@pytest.mark.multirank
def test_bench_scaling_reports_each_variant_against_one_rank():
    records = bench_scaling(["demo"], "48x72", batch=1, steps=2, overrides=[])
    by_metric = {r["metric"]: r for r in records}
    one = by_metric["demo samples/s, 1 rank"]["value"]
    assert one > 0
    for variant in VARIANTS:
        two = by_metric[f"demo samples/s, 2 ranks ({variant})"]["value"]
        efficiency = by_metric[f"demo weak-scaling efficiency 1->2 ranks ({variant})"]
        assert two > 0 and efficiency["value"] > 0
        assert efficiency["baseline"] == 0.9 and efficiency["threads_per_rank"] == 1
