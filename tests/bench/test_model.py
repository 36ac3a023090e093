"""`bench model`: forward and train-step figures, their ratio, and the best dense rate of the same run as baseline;
`--profile`: the step's time per op type from a real profiler trace."""
import json
import subprocess
import sys

import pytest

from exascale_climate.bench.common import cpu_isa
from exascale_climate.bench.model import bench_model
from exascale_climate.bench.profile import op_type_seconds
from exascale_climate.config import load_config
from exascale_climate.errors import ExaclimateError

TINY = ["model.tiramisu.down_layers=[1]", "model.tiramisu.up_layers=[1]", "model.tiramisu.bottleneck_layers=1",
        "model.tiramisu.growth_rate=4", "model.tiramisu.initial_filters=8", "data.channels=[TMQ,PSL]"]
SMALL_CONV = (16, 24, 8, 8, 3)


def test_bench_model_records_rates_ratio_and_the_best_dense_baseline(tmp_path):
    records = bench_model(load_config(None, TINY), ["tiramisu"], [(16, 24)], batch=2, repeat=1,
                          peak_matmul_n=256, conv_shape=SMALL_CONV, profile_dir=str(tmp_path / "prof"))
    by_metric = {r["metric"]: r for r in records}
    matmul, conv = by_metric["matmul_peak_256"], by_metric["conv3x3_8to8_16x24 forward"]
    best = by_metric["best dense rate"]
    assert matmul["value"] > 0 and conv["value"] > 0
    assert best["value"] == max(matmul["value"], conv["value"])
    assert best["cpu_gflops"] == max(matmul["cpu_gflops"], conv["cpu_gflops"])
    assert best["machine"]["isa"] == cpu_isa()  # the vector ISA is in every record
    label = "tiramisu 16x24 b2"
    for phase in ("forward", "train_step"):
        rate = by_metric[f"{label} {phase} samples/s"]
        flops = by_metric[f"{label} {phase} FLOP/s"]
        assert rate["value"] > 0 and rate["seconds"] > 0 and rate["cpu_seconds"] >= 0
        assert flops["baseline"] == best["value"] and flops["value"] > 0
        assert flops["cpu_baseline_gflops"] == best["cpu_gflops"] > 0
        assert flops["value"] == pytest.approx(flops["flops_per_sample"] * 2 / rate["seconds"] / 1e9)
    step, fwd = by_metric[f"{label} train_step FLOP/s"], by_metric[f"{label} forward FLOP/s"]
    assert step["flops_per_sample"] > 2.9 * fwd["flops_per_sample"]
    ratio = by_metric[f"{label} train_step/forward FLOP/s"]
    assert ratio["ratio"] == pytest.approx(step["value"] / fwd["value"])
    cpu_ratio = by_metric[f"{label} train_step/forward FLOP/s (CPU time)"]
    assert cpu_ratio["ratio"] == pytest.approx(step["cpu_gflops"] / fwd["cpu_gflops"])
    assert not step["jit_compile"]  # auto on a CPU host: no XLA
    # the profile: the step's table has the convolutions' weight gradients, the forward's has none (its
    # transposed convolution runs as Conv2DBackpropInput, so only the filter gradient tells them apart)
    prof = [r for r in records if r["bench"] == "profile"]
    fwd_ops = {r["op_type"] for r in prof if r["phase"] == "forward"}
    step_ops = {r["op_type"] for r in prof if r["phase"] == "train_step"}
    assert any("Conv2D" in op for op in fwd_ops) and not any("BackpropFilter" in op for op in fwd_ops)
    assert any("Conv2DBackpropFilter" in op for op in step_ops)
    assert any("Conv2DBackpropInput" in op for op in step_ops)
    assert all(0 < r["ratio"] <= 1 for r in prof)
    assert not any(r["op_type"].startswith("__inference") for r in prof)  # the function event is no op
    # the table agrees with the trace files on disk read independently (event names "scope/name:OpType")
    traces = sorted((tmp_path / "prof").rglob("*.xplane.pb"))
    assert len(traces) == 2 and all(t.stat().st_size > 0 for t in traces)


def test_bench_model_times_the_semisup_detector():
    """The two-output detector goes through the same forward / training-step timing (its own loss)."""
    cfg = load_config("semisup_demo", ["data.channels=[TMQ,PSL]"])
    records = bench_model(cfg, ["semisup"], [(16, 24)], batch=2, repeat=1, peak_matmul_n=256, conv_shape=SMALL_CONV)
    by_metric = {r["metric"]: r for r in records}
    assert {"semisup 16x24 b2 forward samples/s", "semisup 16x24 b2 train_step samples/s"} <= set(by_metric)
    assert all(r["value"] > 0 for r in by_metric.values())


def test_bench_model_demo_is_the_demo_config_model():
    """`--model demo` is configs/demo.yaml's slim Tiramisu, not the paper's (4.19 TFLOP per 768x1152 sample
    forward, docs/MODELS.md: scaled to 32x48 the paper network needs 7.3 GFLOP; the demo's a small fraction)."""
    records = bench_model(load_config(None, ["data.channels=[TMQ,PSL]"]), ["demo"], [(32, 48)], repeat=1,
                          peak_matmul_n=256, conv_shape=SMALL_CONV)
    fwd = next(r for r in records if r["metric"] == "demo 32x48 b1 forward FLOP/s")
    assert 0 < fwd["flops_per_sample"] < 0.1 * 4.19e12 * (32 * 48) / (768 * 1152)


@pytest.mark.slow  # the CLI's default baseline (4096^2 matmul, 384x576 convolution) and an XLA compile: minutes
def test_bench_model_cli_demo_model_with_xla(tmp_path):
    """`exaclimate bench model --model demo --set train.jit_compile=true`: the XLA step's records and table."""
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "exascale_climate.cli", "bench", "model", "--model", "demo",
                           "--grid", "32x48", "--json", str(out), "--set", "train.jit_compile=true",
                           "--set", "data.channels=[TMQ,PSL]"], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    step = next(r for r in records if r["metric"] == "demo 32x48 b1 train_step FLOP/s")
    assert step["jit_compile"] is True
    assert "| model | demo 32x48 b1 train_step/forward FLOP/s |" in proc.stdout


def test_bench_model_times_the_demo_model_in_mixed_bfloat16():
    """precision="mixed_bfloat16" builds the network under that policy: the records say so and the timed
    model ran bfloat16 convolutions (the returned records carry the precision the CLI resolved)."""
    records = bench_model(load_config(None, ["data.channels=[TMQ,PSL]"]), ["demo"], [(32, 48)], repeat=1,
                          precision="mixed_bfloat16", peak_matmul_n=256, conv_shape=SMALL_CONV)
    step = next(r for r in records if r["metric"] == "demo 32x48 b1 train_step FLOP/s")
    assert step["precision"] == "mixed_bfloat16" and step["value"] > 0 and step["cpu_gflops"] > 0


@pytest.mark.slow  # the CLI's default baseline (4096^2 matmul, 384x576 convolution)
@pytest.mark.parametrize("args, precision", [([], "float32"), (["--set", "train.precision=mixed_bfloat16"],
                                                                 "mixed_bfloat16")])
def test_bench_model_cli_precision_from_set(tmp_path, args, precision):
    """`bench model` times float32 unless asked, also with a paper config (mixed_float16 in the file);
    `--set train.precision=mixed_bfloat16` is asked."""
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "exascale_climate.cli", "bench", "model", "--model", "demo",
                           "--grid", "32x48", "--json", str(out), "--config", "tiramisu", *args,
                           "--set", "data.channels=[TMQ,PSL]"], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["precision"] for r in records if "precision" in r} == {precision}


def test_cpu_isa_reads_the_flags(tmp_path):
    for flags, isa in (("fpu sse2 avx2 fma", "AVX2"), ("avx2 avx512f avx512bw", "AVX-512"),
                       ("avx2 avx512f amx_tile amx_bf16", "AMX")):
        info = tmp_path / f"{isa}.txt"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert cpu_isa(info) == isa
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout  # this host, read another way
    host_flags = next((line.split(":", 1)[1].split() for line in lscpu.splitlines() if line.startswith("Flags")), [])
    expected = "AMX" if "amx_tile" in host_flags else "AVX-512" if "avx512f" in host_flags else \
        "AVX2" if "avx2" in host_flags else None
    if expected:
        assert cpu_isa() == expected


def test_op_type_seconds_refuses_a_file_that_is_no_trace(tmp_path):
    bad = tmp_path / "x.xplane.pb"
    bad.write_bytes(b"\xff\x00not a protobuf" * 10)
    with pytest.raises(ExaclimateError, match="x.xplane.pb"):
        op_type_seconds(bad)


def test_bench_model_median_of_rounds_ratio():
    """repeat 3: forward and step alternate in 3 rounds; the median over rounds of step/forward lies within
    the rounds' extremes, and the per-phase medians are no better than the best calls."""
    records = bench_model(load_config(None, TINY), ["tiramisu"], [(16, 24)], batch=2, repeat=3,
                          peak_matmul_n=128, conv_shape=SMALL_CONV)
    by_metric = {r["metric"]: r for r in records}
    label = "tiramisu 16x24 b2"
    for phase in ("forward", "train_step"):
        rec = by_metric[f"{label} {phase} samples/s"]
        assert rec["median_seconds"] >= rec["seconds"] > 0 and rec["median_cpu_seconds"] >= rec["cpu_seconds"]
    for timing in ("wall", "cpu"):
        med = by_metric[f"{label} train_step/forward FLOP/s ({timing}, median of rounds)"]
        assert med["rounds"] == 3 and 0 < med["ratio_min"] <= med["value"] <= med["ratio_max"]
