"""`scale fit` recovers known constants from records made with hand-written timing formulas, and its system
files predict held-out runs."""
import json
import math

import pytest

from exascale_climate.config import load_config
from exascale_climate.scale.fit import fit_and_check, read_measurements
from exascale_climate.scale.systems import load_system

OVERHEAD, RATE, ALPHA, BANDWIDTH, CORES = 3e-3, 2e10, 2e-4, 5e8, 2
WIDE = ["model.tiramisu.growth_rate=16"]  # a second gradient size, so alpha and beta separate


def model_numbers(overrides, grid):
    """FLOPs per training sample and float32 gradient bytes, straight from the Keras model (not scale/)."""
    from exascale_climate.models import build_model
    from exascale_climate.models.flops import analytic_flops

    cfg = load_config("demo", overrides)
    model = build_model(cfg.model, (*grid, 16), precision="float32")
    return analytic_flops(model)["train_step"], 4 * sum(int(v.shape.num_elements()) for v in model.trainable_variables)


def seconds(flops, nbytes, ranks, batch=1):
    compute = batch * (OVERHEAD + flops / RATE) * max(1, ranks / CORES)
    if ranks == 1:
        return compute
    p = ranks  # one fused message (< 128 MiB), ring + tree negotiation, half of the demo's 1 ms cycle
    return (compute + (2 * (p - 1) + 2 * math.ceil(math.log2(p))) * ALPHA
            + 2 * (p - 1) / p * nbytes / BANDWIDTH + 0.5e-3)


@pytest.fixture(scope="module")
def records_file(tmp_path_factory):
    rows = []
    for overrides in ([], WIDE):
        for grid in ((48, 72), (96, 144)):
            flops, nbytes = model_numbers(overrides, grid)
            for ranks, variant in ((1, "flat"), (2, "flat"), (2, "hierarchical"), (4, "flat")):
                rows.append({"bench": "train", "metric": f"demo samples/s, {ranks} ranks", "unit": "samples/s",
                             "value": ranks / seconds(flops, nbytes, ranks), "model": "demo",
                             "grid": f"{grid[0]}x{grid[1]}", "batch_per_rank": 1, "overrides": overrides,
                             "ranks": ranks, "variant": variant, "controller": "gloo",
                             "seconds_per_step": seconds(flops, nbytes, ranks),
                             "cpu_seconds_per_step": seconds(flops, nbytes, ranks) / max(1, ranks / CORES)})
    path = tmp_path_factory.mktemp("records") / "bench-train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_fit_recovers_the_constants_and_predicts_held_out_runs(records_file, tmp_path):
    result = fit_and_check([records_file], tmp_path, fit_ranks=2, cores=CORES)
    assert result["compute"]["overhead_s"] == pytest.approx(OVERHEAD, rel=1e-3)
    assert result["compute"]["rate_flops"] == pytest.approx(RATE, rel=1e-3)
    gloo = result["controllers"]["gloo"]
    assert gloo["alpha_s"] == pytest.approx(ALPHA, rel=1e-3)
    assert gloo["bandwidth_Bps"] == pytest.approx(BANDWIDTH, rel=1e-3)
    held = [r for r in result["check"] if not r["fitted_on"]]
    assert {r["run"].split()[2] for r in held} == {"4"}  # the 4-rank runs were not used to fit
    assert all(abs(r["error"]) < 1e-3 for r in held)
    system = load_system(tmp_path / "host-gloo.yaml")
    assert system["node.shared_cores"] == CORES and "fitted" in system.sources["network.inter.latency_s"]
    assert json.loads((tmp_path / "fit.json").read_text())["held_out"]["within_15_percent"] == len(held)


def test_records_without_timings_are_a_clear_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text(json.dumps({"bench": "data", "metric": "x", "value": 1, "unit": "s"}) + "\n")
    from exascale_climate.errors import ConfigError

    with pytest.raises(ConfigError, match="no usable bench train"):
        read_measurements([path])


def test_cpu_timing_ignores_wall_time_inflated_by_other_jobs(records_file, tmp_path):
    """Other jobs on the machine stretch the wall time by a varying factor; the CPU seconds stay put."""
    rows = [json.loads(line) for line in records_file.read_text().splitlines()]
    for i, r in enumerate(rows):
        r["seconds_per_step"] *= 1.5 + (i % 5) * 0.7  # a load that changes from run to run
    noisy = tmp_path / "noisy.jsonl"
    noisy.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = fit_and_check([noisy], tmp_path / "fit", fit_ranks=2, cores=CORES, timing="cpu")
    assert result["compute"]["rate_flops"] == pytest.approx(RATE, rel=1e-3)
    assert result["controllers"]["gloo"]["alpha_s"] == pytest.approx(ALPHA, rel=1e-3)
    assert all(abs(r["error"]) < 1e-3 for r in result["check"])
    wall = fit_and_check([noisy], tmp_path / "wall", fit_ranks=2, cores=CORES, timing="wall")
    assert max(abs(r["error"]) for r in wall["check"]) > 0.15  # the same records read as wall time do not fit


def test_cpu_ref_timing_divides_out_the_load_of_the_moment(records_file, tmp_path):
    """Other jobs inflate CPU seconds too (shared caches, memory bandwidth, SMT siblings), and a reference kernel
    timed beside the steps by the same factor: cpu-ref recovers the constants, plain cpu does not."""
    rows = [json.loads(line) for line in records_file.read_text().splitlines()]
    for i, r in enumerate(rows):
        load = 1.0 if i % 3 else 1.0 + 0.3 * (1 + i % 4)  # a third of the runs slowed, each by its own amount
        r["cpu_seconds_per_step"] *= load
        r["reference_cpu_s"] = 0.04 * load
    loaded = tmp_path / "loaded.jsonl"
    loaded.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = fit_and_check([loaded], tmp_path / "ref", fit_ranks=2, cores=CORES, timing="cpu-ref")
    assert result["compute"]["rate_flops"] == pytest.approx(RATE, rel=1e-3)
    assert result["controllers"]["gloo"]["alpha_s"] == pytest.approx(ALPHA, rel=1e-3)
    assert all(abs(r["error"]) < 1e-3 for r in result["check"])
    plain = fit_and_check([loaded], tmp_path / "cpu", fit_ranks=2, cores=CORES, timing="cpu")
    assert max(abs(r["error"]) for r in plain["check"]) > 0.05
    from exascale_climate.errors import ConfigError

    with pytest.raises(ConfigError, match="no reference_cpu_s"):
        read_measurements([records_file], "cpu-ref")

