"""`exaclimate scale fit`: this host's constants from `bench train` (and 1-thread `bench model`) records.

- Compute: seconds per sample of one rank = overhead + FLOPs per sample / rate, least squares over the distinct
  (model, grid) workloads of the 1-rank records (FLOPs from each record's config, models/flops.py).
- Allreduce, per Horovod controller (Gloo, MPI): the multi-rank flat, hierarchical and fp16 records' step time
  minus the predicted compute (ranks beyond the cores time-share them) is the communication; on this host the
  toolkit's TrainStep reduces all gradients after the backward pass, so nothing overlaps and it equals
  m x (2(p-1) + 2 ceil(log2 p)) alpha + 2(p-1)/p n beta + tensors x tensor cost + wakes x cycle cost
  + cast bytes / memory bandwidth (fp16 compression) + half a cycle. Horovod negotiates and copies every tensor
  (the hierarchical reducer sends one concatenated tensor) and its background thread wakes every cycle on cores
  that are all computing. Non-negative least squares; gradient lag is left out, to be predicted.
The result is a system file per controller (`--system FILE` for `scale predict`), every number's source naming
the records it was fitted from.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np

from exascale_climate.errors import ConfigError
from exascale_climate.scale import costs
from exascale_climate.scale.model import MIB, Settings, Workload, predict
from exascale_climate.scale.systems import System, load_system, system_to_yaml
from exascale_climate.utils.log import read_json_lines

HOROVOD_FUSION_MB = 128.0  # Horovod 0.28 default
FIT_VARIANTS = ("flat", "hierarchical", "fp16")  # lag is left to predict: on this host it should change nothing


@dataclasses.dataclass
class Measurement:
    """One timed configuration: what ran and its measured seconds per step."""

    config: str
    grid: str
    overrides: tuple[str, ...]
    batch: int
    ranks: int
    variant: str
    controller: str
    seconds: float
    source: str

    @property
    def key(self) -> tuple:
        return (self.config, self.grid, self.overrides)

    def label(self) -> str:
        return f"{self.config} {self.grid} {self.ranks} rank(s) {self.variant} ({self.controller})"


TIMINGS = ("wall", "cpu", "cpu-ref")


def _load(paths: list[str | Path]) -> list[tuple[str, list[dict]]]:
    out = []
    for path in paths:
        if not Path(path).is_file():
            raise ConfigError(f"{path}: no such records file")
        try:
            out.append((str(path), read_json_lines(path)))
        except (ValueError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: not JSON lines ({e})") from None
    return out


def reference_level(paths: list[str | Path]) -> float | None:
    """Median `reference_cpu_s` over every record of `paths` (bench train and parts probes): the level the
    cpu-ref timing scales each measurement back to, so its figures stay in seconds."""
    values = [float(r["reference_cpu_s"]) for _, records in _load(paths) for r in records
              if isinstance(r.get("reference_cpu_s"), (int, float)) and r["reference_cpu_s"] > 0]
    return float(np.median(values)) if values else None


def read_measurements(paths: list[str | Path], timing: str = "wall", cores: int | None = None) -> list[Measurement]:
    """Timed steps from bench train records and (wall only) 1-thread bench model train_step records.

    timing "wall": seconds_per_step as measured. "cpu": the rank's CPU seconds per step x max(1, ranks / cores):
    the step time the ranks would see with the cores to themselves, which other jobs on a shared machine do not
    inflate (they do inflate the wall time, by whatever share of the cores they take at that moment). "cpu-ref":
    the cpu figure x (median reference / this record's reference), the reference being a fixed piece of work
    timed in the same process before and after the steps (bench.common.reference_cpu_seconds): what the load
    of the moment does to CPU seconds (shared caches, memory bandwidth, SMT siblings) divides out.
    """
    if timing not in TIMINGS:
        raise ConfigError(f"--timing {timing!r}: choose wall, cpu or cpu-ref")
    cores = cores or os.cpu_count() or 1
    loaded = _load(paths)
    level = reference_level(paths) if timing == "cpu-ref" else None
    if timing == "cpu-ref" and level is None:
        raise ConfigError(f"{', '.join(map(str, paths))}: no reference_cpu_s in the records; use --timing cpu")
    out = []
    for path, records in loaded:
        for i, r in enumerate(records):
            where = f"{path}:{i + 1}"
            if r.get("bench") == "train" and "seconds_per_step" in r and r.get("unit") == "samples/s":
                if timing != "wall" and r.get("cpu_seconds_per_step") is None:
                    continue
                if timing == "cpu-ref" and not r.get("reference_cpu_s"):
                    continue
                try:
                    ranks = int(r["ranks"])
                    seconds = (float(r["seconds_per_step"]) if timing == "wall"
                               else float(r["cpu_seconds_per_step"]) * max(1.0, ranks / cores))
                    if timing == "cpu-ref":
                        seconds *= level / float(r["reference_cpu_s"])
                    out.append(Measurement(str(r["model"]), str(r["grid"]), tuple(r.get("overrides", [])),
                                           int(r["batch_per_rank"]), ranks, str(r.get("variant", "flat")),
                                           str(r.get("controller", "gloo")), seconds, where))
                except (KeyError, TypeError, ValueError) as e:
                    raise ConfigError(f"{where}: bench train record without {e}") from None
            elif (timing == "wall" and r.get("bench") == "model" and r.get("unit") == "samples/s"
                  and "train_step" in r.get("metric", "") and str((r.get("machine") or {}).get("threads")) == "1"):
                out.append(Measurement(str(r["model"]), str(r["grid"]), (), int(r["batch"]), 1, "flat", "none",
                                       float(r["seconds"]), where))
    if not out:
        raise ConfigError(f"{', '.join(map(str, paths))}: no usable bench train / 1-thread bench model records")
    return out


_WORKLOADS: dict[tuple, tuple[Workload, Settings]] = {}


def workload_of(m: Measurement) -> tuple[Workload, Settings]:
    """The measured run's workload (its config's model on its grid, FLOPs from models/flops.py) and settings."""
    if m.key not in _WORKLOADS:
        from exascale_climate.config import load_config, parse_grid
        from exascale_climate.scale.workload import settings_from_config, workload_from_config

        cfg = load_config(m.config, list(m.overrides))
        work = workload_from_config(cfg, parse_grid(m.grid), batch=1)
        _WORKLOADS[m.key] = (work, settings_from_config(cfg))
    work, settings = _WORKLOADS[m.key]
    return dataclasses.replace(work, batch=m.batch), settings


def variant_settings(settings: Settings, variant: str) -> Settings:
    """bench train's variants (bench/train.py _variant_config) as model settings."""
    s = dataclasses.replace(settings, algorithm="ring", gradient_lag=0, fp16_compression=False)
    if variant == "hierarchical":
        s = dataclasses.replace(s, algorithm="hierarchical", inter_algorithm="ring")
    elif variant == "lag":
        s = dataclasses.replace(s, gradient_lag=1)
    elif variant == "fp16":
        s = dataclasses.replace(s, fp16_compression=True)
    return s


def cycle_ms(settings: Settings) -> float:
    from exascale_climate.train.distributed import CPU_CYCLE_TIME_MS

    return settings.cycle_time_ms if settings.cycle_time_ms is not None else CPU_CYCLE_TIME_MS


def median_runs(measurements: list[Measurement]) -> list[Measurement]:
    """One measurement per configuration (model, grid, overrides, ranks, variant, controller): the median of its
    repeats, its source naming every record."""
    groups: dict[tuple, list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.key, m.batch, m.ranks, m.variant, m.controller), []).append(m)
    out = []
    for group in groups.values():
        seconds = float(np.median([m.seconds for m in group]))
        out.append(dataclasses.replace(group[0], seconds=seconds, source="+".join(m.source for m in group)))
    return out


def parts_of(m: Measurement, parts: dict[tuple, float] | None) -> float | None:
    """Seconds of m's layers run standalone: the probe of its config, grid and overrides, else one recorded
    without overrides (it then stands for every run of that config and grid)."""
    if not parts:
        return None
    return parts.get((m.config, m.grid, m.overrides), parts.get((m.config, m.grid, ())))


def fit_parts_factor(measurements: list[Measurement], parts: dict[tuple, float]) -> tuple[float, list[str]]:
    """Whole training step / sum of its layers run standalone (scale/validate.py), median over the 1-rank runs."""
    ones = [m for m in measurements if m.ranks == 1 and parts_of(m, parts) is not None]
    if not ones:
        raise ConfigError("scale fit: no 1-rank records with a parts probe to fit the compute factor from")
    return float(np.median([m.seconds / m.batch / parts_of(m, parts) for m in ones])), [m.source for m in ones]


def parts_rate(m: Measurement, parts: dict[tuple, float] | None, factor: float | None) -> float | None:
    """The FLOP rate that makes the model's compute time factor x parts (None without a parts probe)."""
    seconds = parts_of(m, parts)
    if seconds is None or factor is None:
        return None
    work, _ = workload_of(m)
    return work.flops_per_sample / (factor * seconds)


def fit_compute(measurements: list[Measurement]) -> tuple[float, float, list[str]]:
    """(overhead seconds per sample, FLOP/s per rank) from 1-rank runs; least squares over the workloads."""
    ones = [m for m in measurements if m.ranks == 1]
    if not ones:
        raise ConfigError("scale fit: no 1-rank records to fit the compute time from")
    rows = {}
    for m in ones:
        work, _ = workload_of(m)
        rows.setdefault(work.flops_per_sample, []).append(m.seconds / m.batch)
    flops = np.array(sorted(rows))
    per_sample = np.array([np.median(rows[f]) for f in flops])
    if len(flops) == 1:
        return 0.0, float(flops[0] / per_sample[0]), [m.source for m in ones]
    a = np.stack([np.ones_like(flops), flops], axis=1)
    (overhead, inv_rate), *_ = np.linalg.lstsq(a, per_sample, rcond=None)
    if inv_rate <= 0:
        raise ConfigError("scale fit: the 1-rank records do not get slower with more FLOPs; cannot fit a rate")
    if overhead < 0:  # force through zero rather than a negative cost
        overhead, inv_rate = 0.0, float(np.sum(flops * per_sample) / np.sum(flops * flops))
    return float(overhead), float(1.0 / inv_rate), [m.source for m in ones]


def host_system(name: str, overhead: float, rate: float, alpha: float, beta: float, sources: dict[str, str],
                cores: int, tensor_cost: float = 0.0, cycle_cost: float = 0.0,
                memory_bandwidth: float | None = None) -> str:
    """The system file of this host for one controller: each node is one rank with one thread."""
    fitted = sources
    extra = {}
    if memory_bandwidth:
        extra["device.memory_bandwidth_Bps"] = (memory_bandwidth, fitted["comm"] + " (fp16 compression's casts)")
    return system_to_yaml(
        name, f"This host ({os.cpu_count()} cores), ranks as nodes of one device with 1 thread each; fitted by "
              "`exaclimate scale fit`.",
        {"node.devices": (1, "bench train runs one rank per simulated node, 1 thread per rank"),
         "node.shared_cores": (cores, "os.cpu_count() of the host the records were measured on: all ranks share them"),
         "device.peak_flops_float32": (rate, "not measured: set to the fitted rate (only rates are used)"),
         "device.sustained_fraction_float32": (1.0, "the fitted rate is already sustained"),
         "compute.overhead_s": (overhead, fitted["compute"]),
         "network.intra.latency_s": (alpha, fitted["comm"]),
         "network.intra.bandwidth_Bps": (1.0 / beta, fitted["comm"]),
         "network.inter.latency_s": (alpha, fitted["comm"]),
         "network.inter.bandwidth_Bps": (1.0 / beta, fitted["comm"]),
         "horovod.cycle_time_ms": (10.0, "exascale_climate.train.distributed.CPU_CYCLE_TIME_MS (CPU-only nodes); a "
                                         "config's distributed.cycle_time_ms overrides it"),
         "horovod.fusion_threshold_mb": (HOROVOD_FUSION_MB, "Horovod 0.28 default (v0.21.0 release notes)"),
         "horovod.tensor_cost_s": (tensor_cost, fitted["comm"]),
         "horovod.cycle_cost_s": (cycle_cost, fitted["comm"]),
         "horovod.overlap": (0.0, "TrainStep reduces the gradients after the backward pass, and every core "
                                  "computes: nothing overlaps on this host"),
         "variability.step_time_cv": (0.0, "not fitted: medians of few steps"), **extra},
        strings={"horovod.control_plane": "tree", "horovod.gradients": "grouped"},
        rates={"any/float32": (rate, fitted["compute"])})


def _comm_terms(m: Measurement, system: System, rate: float | None = None) -> tuple[float, list[float], float]:
    """(compute seconds, coefficients of [alpha, beta, tensor cost, cycle cost], constant) of a multi-rank run."""
    work, settings = workload_of(m)
    s = dataclasses.replace(variant_settings(settings, m.variant), rate=rate)
    if m.variant == "hierarchical":  # TrainStep's hierarchical reducer concatenates the gradients into one buffer
        work = dataclasses.replace(work, tensors=1)
    cycle = cycle_ms(settings) / 1e3
    row = predict(work, system, m.ranks, dataclasses.replace(s, cycle_time_ms=cycle * 1e3))
    p, nbytes, msgs = m.ranks, row["gradient_bytes"], row["messages"]
    ctrl = 2 * math.ceil(math.log2(p))
    wakes = math.ceil(row["compute_s"] / cycle) if cycle > 0 else 0
    cast_bytes = 2 * (4 + 2) * work.parameters if s.fp16_compression else 0  # float32 -> float16 and back
    return (row["compute_s"], [msgs * (2 * (p - 1) + ctrl), 2 * (p - 1) / p * nbytes, work.tensors, wakes, cast_bytes],
            cycle / 2)


def fit(measurements: list[Measurement], cores: int | None = None,
        parts: dict[tuple, float] | None = None) -> dict:
    """Fitted constants and system YAML text per controller: {"compute": {...}, "controllers": {name: {...}}}.

    With `parts` ({(config, grid): seconds of its layers run standalone}), each workload's compute is
    factor x parts, the factor fitted on the 1-rank runs; otherwise overhead + FLOPs / rate."""
    import tempfile

    cores = cores or os.cpu_count() or 1
    overhead, rate, compute_src = fit_compute(measurements)
    src_c = f"fitted: least squares over {len(compute_src)} 1-rank record(s) ({', '.join(compute_src[:4])}...)"
    result = {"compute": {"overhead_s": overhead, "rate_flops": rate, "records": compute_src}, "controllers": {}}
    factor = None
    if parts:
        factor, _ = fit_parts_factor(measurements, parts)
        result["compute"]["parts_factor"] = factor
        overhead = 0.0  # the parts model replaces overhead + FLOPs / rate wherever a probe exists
    for controller in sorted({m.controller for m in measurements if m.ranks > 1}):
        multi = [m for m in measurements if m.ranks > 1 and m.controller == controller and m.variant in FIT_VARIANTS]
        if not multi:
            continue
        probe_text = host_system("probe", overhead, rate, 1e-6, 1e-9, {"compute": src_c, "comm": "probe"}, cores)
        with tempfile.TemporaryDirectory() as tmp:
            probe_path = Path(tmp) / "probe.yaml"
            probe_path.write_text(probe_text)
            probe = load_system(probe_path)
        a, b = [], []
        for m in multi:
            compute, coefficients, const = _comm_terms(m, probe, parts_rate(m, parts, factor))
            a.append(coefficients)
            b.append(m.seconds - compute - const)
        from scipy.optimize import nnls

        (alpha, beta, tensor_cost, cycle_cost, per_cast_byte), _ = nnls(np.array(a), np.array(b))
        alpha, beta = max(alpha, 1e-7), max(beta, 1e-12)
        memory_bandwidth = 1.0 / per_cast_byte if per_cast_byte > 0 else None  # only with fp16 records
        src = (f"fitted ({controller}): non-negative least squares over {len(multi)} multi-rank record(s) "
               f"({', '.join(m.source for m in multi[:4])}...)")
        text = host_system(f"host-{controller}", overhead, rate, alpha, beta, {"compute": src_c, "comm": src}, cores,
                           tensor_cost, cycle_cost, memory_bandwidth)
        result["controllers"][controller] = {"alpha_s": alpha, "beta_s_per_byte": beta,
                                             "tensor_cost_s": tensor_cost, "cycle_cost_s": cycle_cost,
                                             "cast_bandwidth_Bps": memory_bandwidth,
                                             "bandwidth_Bps": 1.0 / beta, "records": [m.source for m in multi],
                                             "system_yaml": text}
    return result


def predict_measurement(m: Measurement, system: System, rate: float | None = None) -> float:
    """Predicted seconds per step of a measured run on the fitted host system (`rate`: FLOP/s for this workload,
    e.g. from the parts model; None = the system's fitted rate)."""
    work, settings = workload_of(m)
    s = dataclasses.replace(variant_settings(settings, m.variant), rate=rate)
    if m.variant == "hierarchical":
        work = dataclasses.replace(work, tensors=1)
    return predict(work, system, m.ranks, dataclasses.replace(s, cycle_time_ms=cycle_ms(settings)))["step_s"]


def check(measurements: list[Measurement], systems: dict[str, System], fitted_on: set[str],
          parts: dict[tuple, float] | None = None, factor: float | None = None) -> list[dict]:
    """Predicted vs measured step time of every measurement, marking the ones the constants were fitted on."""
    rows = []
    for m in measurements:
        controller = m.controller if m.controller in systems else next(iter(systems))
        predicted = predict_measurement(m, systems[controller], parts_rate(m, parts, factor))
        rows.append({"run": m.label(), "source": m.source, "measured_s": m.seconds, "predicted_s": predicted,
                     "error": predicted / m.seconds - 1, "fitted_on": m.source in fitted_on})
    return rows


def fit_and_check(paths: list[str | Path], out_dir: str | Path, fit_models: list[str] | None = None,
                  fit_ranks: int = 2, cores: int | None = None, timing: str = "wall",
                  parts: dict[tuple, float] | None = None, median: bool = False) -> dict:
    """Fit on the records of `fit_models` (default: all) up to `fit_ranks` ranks (flat variant), write one
    system file per controller to out_dir, and predict every record (held-out ones are the validation).
    `median`: repeated runs count once, at their median; `parts`: the parts compute model (scale/validate.py)."""
    from exascale_climate.utils.io import atomic_write_text

    every = read_measurements(paths, timing, cores)
    if median:
        every = median_runs(every)
    def chosen(m: Measurement) -> bool:  # "tiramisu" = every grid of it, "tiramisu@96x144" = that grid only
        return not fit_models or m.config in fit_models or f"{m.config}@{m.grid}" in fit_models

    train = [m for m in every if chosen(m) and m.ranks <= fit_ranks and m.variant in FIT_VARIANTS]
    if not train:
        raise ConfigError(f"--fit-on {','.join(fit_models or [])}: no records of those models to fit on")
    result = fit(train, cores, parts)
    out_dir = Path(out_dir)
    systems = {}
    for controller, info in result["controllers"].items():
        path = out_dir / f"host-{controller}.yaml"
        atomic_write_text(path, info["system_yaml"])
        systems[controller] = load_system(path)
        info["system_file"] = str(path)
    if not systems:
        raise ConfigError("scale fit: no multi-rank flat/hierarchical records to fit the allreduce from")
    result["check"] = check(every, systems, {m.source for m in train}, parts,
                            result["compute"].get("parts_factor"))
    held = [abs(r["error"]) for r in result["check"] if not r["fitted_on"]]
    result["timing"] = timing
    result["held_out"] = {"count": len(held), "max_abs_error": max(held) if held else None,
                          "within_15_percent": sum(e <= 0.15 for e in held)}
    for info in result["controllers"].values():
        info.pop("system_yaml")
    atomic_write_text(out_dir / "fit.json", json.dumps(result, indent=1) + "\n")
    return result


def format_check(result: dict) -> str:
    c = result["compute"]
    lines = [f"timing: {result['timing']} seconds per step",
             f"compute: {c['overhead_s'] * 1e3:.2f} ms + FLOPs / {c['rate_flops'] / 1e9:.1f} GFLOP/s per sample "
             f"and rank ({len(c['records'])} 1-rank records)"]
    if c.get("parts_factor"):
        lines.append(f"compute (parts model): {c['parts_factor']:.3f} x the sum of the layers run standalone")
    for name, info in result["controllers"].items():
        lines.append(f"allreduce ({name}): alpha {info['alpha_s'] * 1e6:.1f} us, bandwidth "
                     f"{info['bandwidth_Bps'] / 1e9:.3f} GB/s, {info['tensor_cost_s'] * 1e6:.1f} us per tensor, "
                     f"{info['cycle_cost_s'] * 1e6:.1f} us per Horovod cycle -> {info['system_file']}")
    lines += ["", f"{'run':<55} {'measured s':>11} {'predicted s':>12} {'error':>8}  fitted on"]
    for r in result["check"]:
        lines.append(f"{r['run']:<55} {r['measured_s']:>11.4f} {r['predicted_s']:>12.4f} {r['error']:>+8.1%}  "
                     f"{'yes' if r['fitted_on'] else ''}")
    h = result["held_out"]
    if h["count"]:
        lines.append(f"\nheld out: {h['within_15_percent']} of {h['count']} within 15% (max |error| "
                     f"{h['max_abs_error']:.1%})")
    return "\n".join(lines)


__all__ = ["MIB", "fit", "fit_and_check", "format_check", "read_measurements", "costs"]
