"""`bench model` produces forward and train-step figures with the matmul peak of the same run as baseline."""
from exascale_climate.bench.model import bench_model
from exascale_climate.config import load_config


def test_bench_model_records_rates_and_flops_against_the_peak():
    cfg = load_config(None, ["model.tiramisu.down_layers=[1]", "model.tiramisu.up_layers=[1]",
                             "model.tiramisu.bottleneck_layers=1", "model.tiramisu.growth_rate=4",
                             "model.tiramisu.initial_filters=8", "data.channels=[TMQ,PSL]"])
    records = bench_model(cfg, ["tiramisu"], [(16, 24)], batch=2, repeat=1, peak_matmul_n=256)
    peak = records[0]
    assert peak["metric"] == "matmul_peak_256" and peak["value"] > 0
    by_metric = {r["metric"]: r for r in records[1:]}
    assert set(by_metric) == {f"tiramisu 16x24 b2 {phase} {unit}" for phase in ("forward", "train_step")
                              for unit in ("samples/s", "FLOP/s")}
    for phase in ("forward", "train_step"):
        rate = by_metric[f"tiramisu 16x24 b2 {phase} samples/s"]
        flops = by_metric[f"tiramisu 16x24 b2 {phase} FLOP/s"]
        assert rate["value"] > 0 and rate["seconds"] > 0
        assert flops["baseline"] == peak["value"] and flops["value"] > 0
    assert by_metric["tiramisu 16x24 b2 train_step FLOP/s"]["flops_per_sample"] > \
        2.9 * by_metric["tiramisu 16x24 b2 forward FLOP/s"]["flops_per_sample"]


def test_bench_model_times_the_semisup_detector():
    """The two-output detector goes through the same forward / training-step timing (its own loss)."""
    cfg = load_config("semisup_demo", ["data.channels=[TMQ,PSL]"])
    records = bench_model(cfg, ["semisup"], [(16, 24)], batch=2, repeat=1, peak_matmul_n=256)
    by_metric = {r["metric"]: r for r in records[1:]}
    assert {"semisup 16x24 b2 forward samples/s", "semisup 16x24 b2 train_step samples/s"} <= set(by_metric)
    assert all(r["value"] > 0 for r in by_metric.values())
