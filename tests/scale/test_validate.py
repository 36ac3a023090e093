"""`scale validate`: the parts compute model carries a fit on one workload to another whose FLOPs do not predict
its time; repeats count once at their median and their spread is reported; CPU seconds are scaled by a reference
kernel timed beside them (cpu-ref); records come from hand formulas."""
import json
import math
import subprocess
import sys

import pytest

from exascale_climate.scale.validate import validate

FACTOR, ALPHA, BANDWIDTH, CORES, REFERENCE = 1.3, 2e-4, 5e8, 2, 0.04
PARTS = {"48x72": 0.020, "96x144": 0.150}  # 7.5x the time for ~4x the FLOPs: a FLOP rate cannot carry over
WIDE = ["model.tiramisu.growth_rate=16"]  # a second gradient size, so the allreduce constants separate


def gradient_bytes(overrides):
    from exascale_climate.config import load_config
    from exascale_climate.models import build_model

    model = build_model(load_config("demo", overrides).model, (48, 72, 16), precision="float32")
    return 4 * sum(int(v.shape.num_elements()) for v in model.trainable_variables)


def seconds(parts, nbytes, ranks):
    compute = FACTOR * parts * max(1, ranks / CORES)
    if ranks == 1:
        return compute
    p = ranks  # one fused message, ring + tree negotiation, half of the demo config's 1 ms cycle
    return compute + (2 * (p - 1) + 2 * math.ceil(math.log2(p))) * ALPHA + 2 * (p - 1) / p * nbytes / BANDWIDTH + 0.5e-3


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    rows = []
    for k, overrides in enumerate(([], WIDE)):
        nbytes = gradient_bytes(overrides)  # the demo's gradient does not depend on the grid
        rows += [{"bench": "scale-parts", "model": "demo", "grid": g, "overrides": overrides, "parts_s": s * (1 + k),
                  "reference_cpu_s": REFERENCE} for g, s in PARTS.items()]
        for repeat, jitter in enumerate((0.98, 1.02)):
            for grid, parts in PARTS.items():
                for ranks, variant in ((1, "flat"), (2, "flat"), (2, "hierarchical"), (4, "flat")):
                    t = seconds(parts * (1 + k), nbytes, ranks) * jitter
                    # other jobs slow a third of the runs' CPU seconds too, and the reference kernel beside them
                    load = 1.0 if len(rows) % 3 else 1.0 + 0.2 * (1 + len(rows) % 4)
                    rows.append({"bench": "train", "metric": "m", "unit": "samples/s", "value": ranks / t,
                                 "model": "demo", "grid": grid, "batch_per_rank": 1, "overrides": overrides,
                                 "ranks": ranks, "variant": variant, "controller": "gloo", "repeat": repeat,
                                 "seconds_per_step": t * (3 + repeat),  # wall time inflated by other jobs
                                 "cpu_seconds_per_step": load * t / max(1, ranks / CORES),
                                 "reference_cpu_s": load * REFERENCE})
    path = tmp_path_factory.mktemp("val") / "measurements.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_fit_on_one_grid_predicts_the_other_through_its_parts(records, tmp_path):
    result = validate([records], tmp_path, fit_on=("demo@48x72",), fit_ranks=4, cores=CORES)
    assert result["compute"]["parts_factor"] == pytest.approx(FACTOR, rel=1e-6)
    held = [r for r in result["check"] if not r["fitted_on"]]
    assert result["controllers"]["gloo"]["alpha_s"] == pytest.approx(ALPHA, rel=1e-3)
    assert len(held) == 8 and all("96x144" in r["run"] for r in held)
    assert max(abs(r["error"]) for r in held) < 1e-3
    spreads = {k: v["spread"] for k, v in result["spread"].items()}
    assert all(s == pytest.approx(0.04 / 1.0, rel=1e-6) for s in spreads.values())  # (1.02 - 0.98) / median 1.0
    assert json.loads((tmp_path / "validate.json").read_text())["held_out"]["within_15_percent"] == 8
    # the same records in plain CPU seconds keep the load of the moment: the check is off
    plain = validate([records], tmp_path / "cpu", fit_on=("demo@48x72",), fit_ranks=4, cores=CORES, timing="cpu")
    assert max(abs(r["error"]) for r in plain["check"]) > 0.05


def test_cli_checks_given_records_and_needs_the_parts_probe(records, tmp_path):
    run = [sys.executable, "-m", "exascale_climate.cli", "scale", "validate"]
    ok = subprocess.run(run + [str(records), "--out", str(tmp_path / "a"), "--fit-on", "demo@48x72"],
                        capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr
    assert "held out:" in ok.stdout and (tmp_path / "a" / "host-gloo.yaml").is_file()
    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(line + "\n" for line in records.read_text().splitlines() if "scale-parts" not in line))
    bad = subprocess.run(run + [str(bare), "--out", str(tmp_path / "b")], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "no scale-parts records" in bad.stderr and "Traceback" not in bad.stderr
