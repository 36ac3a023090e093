"""`exaclimate bench train`: 1, 2 and 4 (as 2 hosts x 2) real Horovod ranks, allreduce variants, efficiency."""
import pytest

from exascale_climate.bench.train import FOUR_RANK_VARIANTS, VARIANTS, bench_scaling


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
        assert (efficiency["nodes"], efficiency["ranks_per_node"]) == (1, [2])  # one host, 2 ranks on it
    flat4 = by_metric["demo weak-scaling efficiency 1->4 ranks, 2 nodes x 2 (flat)"]
    for variant in FOUR_RANK_VARIANTS:  # Horovod reported 2 hosts of 2 ranks
        efficiency = by_metric[f"demo weak-scaling efficiency 1->4 ranks, 2 nodes x 2 ({variant})"]
        assert (efficiency["nodes"], efficiency["ranks_per_node"]) == (2, [2, 2])
        assert efficiency["value"] > 0
        if variant != "flat":
            four = by_metric[f"demo samples/s, 4 ranks as 2 nodes x 2 ({variant})"]
            assert four["value"] / (4 * one) == pytest.approx(efficiency["value"])
            assert four["ratio"] == pytest.approx(efficiency["value"] / flat4["value"])
