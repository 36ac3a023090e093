"""`exaclimate scale validate`: measure, fit on some runs, predict the others -- all in one run.

The performance model is only as good as its predictions of runs it was not fitted on. This command times
`bench train` runs (real Horovod ranks: 1, 2, and 4 as 2 simulated nodes x 2), repeats them to show the noise of
this shared machine, fits this host's constants on a subset (by default Tiramisu at 96x144 on 1 and 2 ranks) and
predicts every other run: gradient lag (another setting), 4 ranks, another grid, and DeepLabv3+ (another model).

Why the "parts" probe: on this CPU a FLOP does not cost the same in every layer -- TensorFlow's dilated
convolutions (DeepLabv3+'s atrous backbone and ASPP) run at about a tenth of the rate of ordinary ones -- so one
FLOP rate fitted on Tiramisu cannot carry over to DeepLabv3+ (it is 69-76% off). The probe times every layer of a
model standalone (forward + backward, one thread); the model's compute is then factor x the sum of its parts, the
factor fitted on the fitted runs only. That still predicts DeepLabv3+'s whole training step and every multi-rank
run from constants fitted on Tiramisu; what it borrows from DeepLabv3+ is the cost of its layers one by one.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from exascale_climate.errors import ConfigError

PARTS_TAG = "SCALE_PARTS "
TWO_HOSTS = "localhost:2,127.0.0.1:2"


@dataclass(frozen=True)
class Run:
    config: str
    grid: str
    ranks: int
    variants: tuple[str, ...]

    @property
    def hosts(self) -> str | None:
        return TWO_HOSTS if self.ranks == 4 else None  # 4 ranks = 2 simulated nodes x 2


# Fitted on: Tiramisu 96x144, 1 and 2 ranks, flat / hierarchical / fp16. Everything else is predicted.
DEFAULT_PLAN = (
    Run("tiramisu", "96x144", 1, ("flat",)),
    Run("tiramisu", "96x144", 2, ("flat", "hierarchical", "fp16", "lag")),
    Run("tiramisu", "96x144", 4, ("flat", "lag")),
    Run("tiramisu", "128x192", 1, ("flat",)),
    Run("tiramisu", "128x192", 2, ("flat",)),
    Run("deeplabv3plus", "96x144", 1, ("flat",)),
    Run("deeplabv3plus", "96x144", 2, ("flat",)),
    Run("deeplabv3plus", "96x144", 4, ("flat",)),
)
DEFAULT_FIT_ON = ("tiramisu@96x144",)


# ------------------------------------------------------------------------------------------- parts probe
def parts_seconds(config: str, grid: tuple[int, int], repeat: int = 3, overrides: tuple[str, ...] = ()) -> float:
    """CPU seconds of forward + backward of every layer of `config`'s model run standalone, summed (1 sample).

    Runs in its own process with one thread (see _parts_main), like a bench train rank."""
    import tensorflow as tf

    from exascale_climate.config import load_config
    from exascale_climate.models import build_model
    from exascale_climate.models.summary import input_channels
    from exascale_climate.utils.runtime import apply_tf_threads

    apply_tf_threads()
    cfg = load_config(config, ["train.precision=float32", *overrides])
    model = build_model(cfg.model, (*grid, input_channels(cfg)), precision="float32")
    total = 0.0
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]
        xs = [tf.random.normal((1, *(int(d) for d in t.shape[1:]))) for t in inputs]

        @tf.function
        def step(xs, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(xs)
                y = layer(xs if len(xs) > 1 else xs[0], training=True)
                loss = tf.reduce_sum(y * y)
            return tape.gradient(loss, xs + list(layer.trainable_variables))

        step(xs)  # trace + warm-up
        t0 = time.process_time()
        for _ in range(repeat):
            step(xs)
        total += (time.process_time() - t0) / repeat
    return total


def whole_step_seconds(config: str, grid: tuple[int, int], repeat: int = 3) -> float:
    """CPU seconds of the whole training step of `config` (forward, backward, the config's optimizer; 1 sample)
    as one tf.function: run in the parts probe's process right after it (`--whole`), the ratio whole / parts
    is the parts model's factor measured at one moment, free of the load's changes between processes."""
    import tensorflow as tf

    from exascale_climate.config import load_config
    from exascale_climate.models import build_model
    from exascale_climate.models.summary import input_channels
    from exascale_climate.train.losses import segmentation_loss
    from exascale_climate.train.optimizers import build_optimizer

    cfg = load_config(config, ["train.precision=float32"])
    shape = (*grid, input_channels(cfg))
    model = build_model(cfg.model, shape, precision="float32")
    optimizer = build_optimizer(cfg.optimizer, 1)
    x = tf.random.normal((1, *shape))
    y = tf.random.uniform((1, *grid), 0, cfg.model.num_classes, dtype=tf.int32)
    w = tf.ones((1, *grid))
    variables = model.trainable_variables

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = segmentation_loss(y, model(x, training=True), w)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    step().numpy()
    t0 = time.process_time()
    for _ in range(repeat):
        step().numpy()
    return (time.process_time() - t0) / repeat


def _parts_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m exascale_climate.scale.validate")
    parser.add_argument("--parts", nargs=2, metavar=("CONFIG", "HxW"), required=True)
    parser.add_argument("--whole", action="store_true", help="also time the whole training step, same process")
    args = parser.parse_args(argv)
    from exascale_climate.utils.runtime import configure_threads

    configure_threads(1)
    from exascale_climate.config import parse_grid

    from exascale_climate.bench.common import reference_cpu_seconds

    reference = reference_cpu_seconds()  # before and after: what the load does to CPU seconds meanwhile
    seconds = parts_seconds(args.parts[0], parse_grid(args.parts[1]))
    reference = (reference + reference_cpu_seconds()) / 2
    out = {"model": args.parts[0], "grid": args.parts[1], "parts_s": seconds, "reference_cpu_s": reference}
    if args.whole:
        out["whole_s"] = whole_step_seconds(args.parts[0], parse_grid(args.parts[1]))
        out["whole_over_parts"] = out["whole_s"] / seconds
    print(PARTS_TAG + json.dumps(out), flush=True)
    return 0


def measure_parts(config: str, grid: str) -> dict:
    from exascale_climate.utils.launch import python_module, run_ranks

    result = run_ranks(1, python_module("exascale_climate.scale.validate", "--parts", config, grid),
                       threads_per_rank=1, timeout=3600)
    rows = [json.loads(line.split(PARTS_TAG, 1)[1]) for line in (result.stdout or "").splitlines()
            if PARTS_TAG in line]
    if result.returncode != 0 or not rows:
        raise RuntimeError(f"parts probe of {config} {grid} failed:\n{(result.stdout or '')[-3000:]}")
    return rows[0]


# ---------------------------------------------------------------------------------------------- measure
def measure(plan: tuple[Run, ...], steps: int, repeats: int, out: Path, log=print) -> list[dict]:
    """Run the plan `repeats` times and append bench-train-shaped records (plus a parts record per model and grid
    and repeat) to `out` as JSON lines.

    Interleaved: every repeat probes the parts again, right before its runs, so a change of the machine's load
    hits the probe and the runs it predicts alike (the check uses medians over the repeats of both)."""
    from exascale_climate.bench.common import machine_info, record
    from exascale_climate.bench.train import _launch, _timing

    records = []

    def keep(rec: dict) -> None:
        records.append(rec)
        with open(out, "a") as f:  # one line at a time: a killed run keeps what it measured
            f.write(json.dumps(rec) + "\n")

    for repeat in range(repeats):
        for config, grid in dict.fromkeys((r.config, r.grid) for r in plan):
            t0 = time.time()
            probe = measure_parts(config, grid)
            keep({"bench": "scale-parts", "model": config, "grid": grid, "overrides": ["train.precision=float32"],
                  "parts_s": probe["parts_s"], "reference_cpu_s": probe.get("reference_cpu_s"), "repeat": repeat,
                  "load_average": os.getloadavg()[0], "machine": machine_info()})
            log(f"repeat {repeat + 1}/{repeats}: parts {config} {grid}: {probe['parts_s']:.3f} CPU s "
                f"({time.time() - t0:.0f} s, load {os.getloadavg()[0]:.1f})")
        for run in plan:
            t0 = time.time()
            rows = _launch(run.ranks, run.config, ["train.precision=float32"], run.grid, 1, steps,
                           list(run.variants), "gloo", hosts=run.hosts)
            for variant, row in rows.items():
                keep(record("train", f"{run.config} {run.grid} {run.ranks} rank(s) {variant}", row["samples_per_s"],
                            "samples/s", model=run.config, grid=run.grid, batch_per_rank=1, threads_per_rank=1,
                            overrides=["train.precision=float32"], controller="gloo", steps=steps, repeat=repeat,
                            nodes=row["nodes"], ranks_per_node=row["ranks_per_node"], **_timing(row)))
            log(f"repeat {repeat + 1}/{repeats}: {run.config} {run.grid} {run.ranks} rank(s) "
                f"{','.join(run.variants)} ({time.time() - t0:.0f} s, load {os.getloadavg()[0]:.1f})")
    return records


# ------------------------------------------------------------------------------------------------ check
def read_parts(paths: list[str | Path], timing: str = "cpu") -> dict[tuple, float]:
    """{(config, grid, overrides): parts seconds} from scale-parts records (median over repeats); with timing
    "cpu-ref" each probe is scaled by (median reference / its reference), as the bench train records are."""
    from exascale_climate.scale.fit import reference_level
    from exascale_climate.utils.log import read_json_lines

    level = reference_level(paths) if timing == "cpu-ref" else None
    found: dict[tuple, list[float]] = {}
    for path in paths:
        for r in read_json_lines(path):
            if r.get("bench") == "scale-parts":
                if timing == "cpu-ref" and not r.get("reference_cpu_s"):
                    continue
                key = (str(r["model"]), str(r["grid"]), tuple(r.get("overrides") or []))
                scale = level / float(r["reference_cpu_s"]) if timing == "cpu-ref" else 1.0
                found.setdefault(key, []).append(float(r["parts_s"]) * scale)
    return {k: statistics.median(v) for k, v in found.items()}


def spread(paths: list[str | Path], timing: str) -> dict[str, dict]:
    """Per run (model, grid, ranks, variant): the measured seconds of every repeat, median and relative spread."""
    from exascale_climate.scale.fit import read_measurements

    groups: dict[str, list[float]] = {}
    for m in read_measurements(paths, timing):
        extra = [o for o in m.overrides if o != "train.precision=float32"]  # what every validate run sets
        groups.setdefault(m.label() + (f" [{','.join(extra)}]" if extra else ""), []).append(m.seconds)
    return {k: {"seconds": v, "median": statistics.median(v),
                "spread": (max(v) - min(v)) / statistics.median(v) if len(v) > 1 else None}
            for k, v in groups.items()}


def validate(records: list[str | Path], out_dir: str | Path, fit_on: tuple[str, ...] = DEFAULT_FIT_ON,
             fit_ranks: int = 2, timing: str = "cpu-ref", cores: int | None = None) -> dict:
    """Fit on `fit_on` (medians over repeats), predict every other run with the parts model, and report."""
    from exascale_climate.scale.fit import fit_and_check

    parts = read_parts(records, timing)
    if not parts:
        raise ConfigError(f"{', '.join(map(str, records))}: no scale-parts records (run `scale validate` to make them)")
    result = fit_and_check(records, out_dir, list(fit_on), fit_ranks, cores, timing, parts=parts, median=True)
    result["spread"] = spread(records, timing)
    result["parts"] = {" ".join([k[0], k[1], *k[2]]): v for k, v in parts.items()}
    from exascale_climate.utils.io import atomic_write_text

    atomic_write_text(Path(out_dir) / "validate.json", json.dumps(result, indent=1) + "\n")
    return result


def format_validation(result: dict) -> str:
    from exascale_climate.scale.fit import format_check

    lines = [format_check(result), "", f"{'run':<55} {'repeats (s)':>30} {'spread':>8}"]
    for label, s in result["spread"].items():
        values = " / ".join(f"{v:.3f}" for v in s["seconds"])
        lines.append(f"{label:<55} {values:>30} {('-' if s['spread'] is None else format(s['spread'], '.1%')):>8}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(_parts_main(sys.argv[1:]))
