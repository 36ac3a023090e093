"""`exaclimate bench converge`: time to accuracy of a paper network on held-out synthetic data, MLPerf-style.

1. A synthetic dataset keyed by its parameters (reused when it exists): every synthetic run (seed) is a time
   series whose consecutive steps share storms, so the splits are made of *whole seeds*: training seeds,
   one validation seed, one test seed, never shared. Each HDF5 sample records its seed (`climate.attrs["seed"]`).
2. The paper network (full depth and width, the bundled `tiramisu` / `deeplabv3plus` config: LARC, warm-up,
   gradient lag, hierarchical allreduce, fp16 gradient compression; loss scaling with `--precision
   mixed_float16`) trained on N Horovod ranks until the target validation mean IoU (`train.target_iou`) or the
   time budget (`train.time_budget_s`), with mllog events (`train.mllog`).
3. The checkpoint at the stop (the only one written) scored on the test split (`exaclimate evaluate`), also
   with the prior correction chosen on the validation split (`evaluate --prior-sweep`), and the labeller's
   agreement with itself when its input fields are perturbed (the ceiling of a network trained on its labels).
4. JSON-lines records and a convergence plot (validation mean IoU against time and against samples).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from exascale_climate.bench.common import record
from exascale_climate.errors import ExaclimateError
from exascale_climate.utils.io import atomic_write_text
from exascale_climate.utils.log import get_logger

log = get_logger("bench.converge")
BENCH = "converge"
MODELS = ("tiramisu", "deeplabv3plus")


# ------------------------------------------------------------------------------------------------ data
@dataclass
class ConvergeData:
    """Parameters of the dataset; their hash names its directory, so the same parameters reuse it."""

    grid: tuple[int, int] = (96, 144)
    train_seeds: list[int] = field(default_factory=lambda: [101, 102, 103, 104])
    valid_seeds: list[int] = field(default_factory=lambda: [201])
    test_seeds: list[int] = field(default_factory=lambda: [301])
    samples_per_seed: int = 64
    hours_per_step: float = 12.0  # 12 h apart: a storm is seen a few times per seed, not dozens

    def __post_init__(self):
        splits = [set(self.train_seeds), set(self.valid_seeds), set(self.test_seeds)]
        if any(a & b for i, a in enumerate(splits) for b in splits[i + 1:]):
            raise ExaclimateError(f"converge data: a seed is in two splits ({self.train_seeds}, "
                                  f"{self.valid_seeds}, {self.test_seeds})")

    def key(self) -> str:
        text = json.dumps({**asdict(self), "grid": list(self.grid)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def splits(self) -> dict[str, list[int]]:
        return {"train": self.train_seeds, "valid": self.valid_seeds, "test": self.test_seeds}


def build_converge_dataset(root: str | Path, params: ConvergeData, workers: int = 2) -> Path:
    """`root/<key>/{train,valid,test}/` and `stats.h5` (training split); complete datasets are reused.

    Each seed is synthesised and labelled (`data synth`'s library call), converted to HDF5 (`data convert`),
    and its files moved into their split as `data-s<seed>-<time stamp>.h5` (the stamps repeat across seeds).
    """
    from exascale_climate.config import load_config
    from exascale_climate.data.convert import convert
    from exascale_climate.data.layouts import list_samples
    from exascale_climate.data.stats import compute_stats, write_stats
    from exascale_climate.data.synthetic import synthesize

    out = Path(root) / f"converge-{params.key()}"
    marker = out / "dataset.json"
    if marker.exists():
        log.info("reusing the converge dataset %s", out)
        return out
    h, w = params.grid
    workers = max(1, min(workers, params.samples_per_seed // 16))  # a process pool costs more than a few samples
    for split, seeds in params.splits().items():
        (out / split).mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            done = [p for p in list_samples(out / split) if p.name.startswith(f"data-s{seed}-")]
            if len(done) == params.samples_per_seed:
                continue
            cfg = load_config(None, [f"data.synth.samples={params.samples_per_seed}", f"data.synth.grid={h}x{w}",
                                     f"data.synth.seed={seed}", f"data.synth.workers={workers}",
                                     f"data.synth.hours_per_step={params.hours_per_step}"])
            raw, h5 = out / "work" / f"raw-s{seed}", out / "work" / f"h5-s{seed}"
            log.info("converge data: %s seed %d, %d samples at %dx%d", split, seed, params.samples_per_seed, h, w)
            synthesize(raw, cfg.data.synth, cfg.data.labeller, progress=False)
            convert(sorted(raw.glob("*.nc")), h5, workers=workers)
            for path in list_samples(h5):
                os.replace(path, out / split / f"data-s{seed}-{path.name[len('data-'):]}")
    write_stats(out / "stats.h5", compute_stats(list_samples(out / "train"), progress=False))
    shutil.rmtree(out / "work", ignore_errors=True)
    counts = {split: len(list_samples(out / split)) for split in params.splits()}
    atomic_write_text(marker, json.dumps({**asdict(params), "grid": list(params.grid), "files": counts}, indent=1)
                      + "\n")
    return out


def sample_seeds(directory: str | Path) -> dict[str, int]:
    """{file name: the seed recorded in the file} for every sample of a directory (provenance check)."""
    import h5py

    from exascale_climate.data.layouts import list_samples

    seeds = {}
    for path in list_samples(directory):
        with h5py.File(path, "r") as f:
            if "seed" not in f["climate"].attrs:
                raise ExaclimateError(f"{path}: climate.attrs has no 'seed' (provenance unknown)")
            seeds[path.name] = int(f["climate"].attrs["seed"])
    return seeds


# -------------------------------------------------------------------------------------- labeller ceiling
def labeller_agreement(params: ConvergeData, noise: float, samples: int = 8) -> dict:
    """Mean / per-class IoU of the labeller on perturbed fields against its labels of the clean fields.

    The test seed's first `samples` steps are regenerated; each of the 16 fields gets i.i.d. Gaussian noise of
    `noise` x its own spatial standard deviation (a model's error in the inputs it is given). A network trained
    on the labeller's masks learns a function of the fields; how much those masks move under small changes of the
    fields says how sharp (and learnable) the decision boundaries are.
    """
    from exascale_climate.config import load_config
    from exascale_climate.data.labeller import label_fields
    from exascale_climate.data.synthetic import Generator
    from exascale_climate.evaluate.evaluate import confusion, scores

    h, w = params.grid
    cfg = load_config(None, [f"data.synth.grid={h}x{w}", f"data.synth.seed={params.test_seeds[0]}",
                             f"data.synth.samples={params.samples_per_seed}",
                             f"data.synth.hours_per_step={params.hours_per_step}"])
    gen = Generator(cfg.data.synth)
    rng = np.random.default_rng(12345)
    cm = np.zeros((3, 3), np.int64)
    for index in range(min(samples, params.samples_per_seed)):
        fields = gen.fields(index)
        clean = label_fields(fields, gen.grid.lat, gen.grid.lon, cfg.data.labeller)
        noisy = {k: v + noise * float(np.std(v)) * rng.standard_normal(v.shape).astype(v.dtype)
                 for k, v in fields.items()}
        cm += confusion(clean, label_fields(noisy, gen.grid.lat, gen.grid.lon, cfg.data.labeller))
    s = scores(cm)
    return {"noise": noise, "samples": min(samples, params.samples_per_seed), "mean_iou": s["mean_iou"],
            "iou": s["iou"]}


# -------------------------------------------------------------------------------------------- training
def _train(model: str, config: str, data: Path, run_dir: Path, ranks: int, target: float, budget_s: float,
           validate_every: int, precision: str, overrides: list[str], timeout: float, cpu_budget_s: float = 0.0):
    from exascale_climate.utils.launch import exaclimate, run_ranks

    sets = [f"data.train_dir={data / 'train'}", f"data.valid_dir={data / 'valid'}", f"data.test_dir={data / 'test'}",
            f"data.stats_file={data / 'stats.h5'}", "pipeline.stage_dir=", f"train.target_iou={target}",
            f"train.time_budget_s={budget_s}", f"train.cpu_budget_s={cpu_budget_s}", f"train.validate_every_steps={validate_every}",
            "train.epochs=100000", "train.checkpoint.keep=1", "train.checkpoint.every_epochs=0",
            f"train.precision={precision}", "train.mllog.enabled=true", f"model.name={model}",
            # a full DeepLabv3+ step on one shared core can take minutes: the 60 s stall default killed such a run
            "distributed.stall_timeout_s=1800", *overrides]
    argv = exaclimate("train", "--config", config, "--run-dir", str(run_dir), *sum((["--set", s] for s in sets), []))
    result = run_ranks(ranks, argv, timeout=timeout)
    if result.returncode != 0:
        raise ExaclimateError(f"bench converge: training {model} on {ranks} rank(s) failed (exit "
                              f"{result.returncode}):\n{result.stdout[-3000:]}")


def _evaluate(run_dir: Path, data_dir: Path, out_json: Path, timeout: float, *flags: str) -> dict:
    import subprocess

    from exascale_climate.utils.launch import exaclimate

    argv = exaclimate("evaluate", "--checkpoint", str(run_dir), "--data", str(data_dir), "--json", str(out_json),
                      "--labeller", "off", "--prior-sweep", *flags)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise ExaclimateError(f"bench converge: evaluating {run_dir} on {data_dir} failed: "
                              f"{(result.stderr or result.stdout)[-2000:]}")
    return json.loads(out_json.read_text())


def mllog_compliance(path: Path) -> dict:
    """MLCommons' checker (hpc 3.0.0, the DeepCAM rules) on the run's mllog file: passed + its messages."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "hpc", "--ruleset", "3.0.0",
                "--log_output", str(Path(tmp) / "checker.log"), str(path)]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.strip()]
    return {"passed": result.returncode == 0, "returncode": result.returncode,
            "messages": [ln for ln in lines if ln.startswith(("ERROR", "WARNING"))]}


def read_curve(run_dir: Path) -> list[dict]:
    """The validation points of a run: seconds (wall, and rank 0's CPU), samples, step, mean and per-class IoU."""
    from exascale_climate.utils.log import read_json_lines

    return [{"train_seconds": r["train_seconds"], "cpu_seconds": r.get("cpu_seconds"), "samples": r["samples"], "step": r["step"],
             "val_mean_iou": r["val_mean_iou"], "val_iou": r["val_iou"]}
            for r in read_json_lines(run_dir / "metrics.jsonl") if r.get("kind") == "valid" and "samples" in r]


def plot_convergence(curves: dict[str, list[dict]], target: float, out_png: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from exascale_climate.utils.io import atomic_path

    with_cpu = all(p.get("cpu_seconds") is not None for c in curves.values() for p in c)
    xs = [("training time incl. validation, wall (min)", lambda p: p["train_seconds"] / 60)]
    if with_cpu:  # on a shared machine: the time a rank would have taken with a core of its own
        xs.append(("CPU time of rank 0 (min)", lambda p: p["cpu_seconds"] / 60))
    xs.append(("training samples seen", lambda p: p["samples"]))
    fig, axes = plt.subplots(1, len(xs), figsize=(5 * len(xs), 4), dpi=110, sharey=True)
    for name, curve in curves.items():
        for ax, (_, x) in zip(axes, xs):
            ax.plot([x(p) for p in curve], [p["val_mean_iou"] for p in curve], "o-", ms=3, label=name)
    for ax, (xlabel, _) in zip(axes, xs):
        ax.axhline(target, color="grey", ls="--", label=f"target {target:g}")
        ax.set_xlabel(xlabel)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation mean IoU")
    axes[-1].legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


DEFAULT_VALIDATE_EVERY = {"tiramisu": 40, "deeplabv3plus": 20}  # steps: a few minutes apart on 2 shared cores


def bench_converge(model: str, grid: tuple[int, int] = (96, 144), target: float = 0.82, budget_min: float = 30.0,
                   ranks: int = 2, data_root: str | Path = "converge-data", run_dir: str | Path | None = None,
                   params: ConvergeData | None = None, validate_every: int | None = None,
                   precision: str = "float32", overrides: list[str] | None = None,
                   png: str | Path | None = None, noise_levels: tuple[float, ...] = (0.01, 0.05),
                   workers: int = 2, config: str | None = None, cpu_budget_min: float = 0.0) -> list[dict]:
    """The whole benchmark for one model; returns its JSON-lines records. The test split is scored with the
    checkpoint at the stop (the only one the run writes)."""
    if model not in MODELS:
        raise ExaclimateError(f"--model {model!r}: choose one of {', '.join(MODELS)}")
    params = params or ConvergeData(grid=tuple(grid))
    t0 = time.time()
    data = build_converge_dataset(data_root, params, workers=workers)
    data_s = time.time() - t0
    run_dir = Path(run_dir) if run_dir else Path(data_root) / f"run-{model}-{time.strftime('%Y%m%d-%H%M%S')}"
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ExaclimateError(f"{run_dir}: exists and is not empty (bench converge starts from scratch)")
    budget_s = budget_min * 60.0
    every = validate_every or DEFAULT_VALIDATE_EVERY[model]
    t1 = time.time()
    _train(model, config or model, data, run_dir, ranks, target, budget_s, every, precision, list(overrides or []),
           timeout=budget_s * 3 + 1800, cpu_budget_s=cpu_budget_min * 60.0)
    wall_s = time.time() - t1
    curve = read_curve(run_dir)
    if not curve:
        raise ExaclimateError(f"{run_dir}/metrics.jsonl: no validation point (budget too small for one?)")
    test = _evaluate(run_dir, data / "test", run_dir / "test_metrics.json", 3600, "--errors")
    valid = _evaluate(run_dir, data / "valid", run_dir / "valid_metrics.json", 3600)  # picks the prior correction
    prior = valid["prior_sweep"]["best"]
    corrected = test["prior_sweep"]["exponents"].index(prior)
    ceiling = [labeller_agreement(params, noise) for noise in noise_levels]
    compliance = mllog_compliance(run_dir / "mllog.log")
    reached = next((p for p in curve if p["val_mean_iou"] >= target), None)
    last = curve[-1]
    files = json.loads((data / "dataset.json").read_text())["files"]
    samples_per_epoch = files["train"]
    png = png or run_dir / "convergence.png"
    plot_convergence({f"{model} ({ranks} ranks)": curve}, target, png,
                     f"{model} on synthetic CAM5-like data {grid[0]}x{grid[1]} (held-out seeds)")
    from exascale_climate.config import load_config

    cfg = load_config(str(run_dir / "config.yaml"))
    settings = {"precision": cfg.train.precision, "loss_scale": cfg.train.loss_scale if
                cfg.train.precision == "mixed_float16" else f"off ({cfg.train.precision})",
                "larc": asdict(cfg.optimizer.larc), "optimizer": cfg.optimizer.name,
                "learning_rate": cfg.optimizer.learning_rate, "schedule": asdict(cfg.optimizer.schedule),
                "gradient_lag": cfg.distributed.gradient_lag, "allreduce": cfg.distributed.allreduce,
                "fp16_compression": cfg.distributed.fp16_compression, "batch_per_rank": cfg.train.batch_size,
                "loss": cfg.train.loss, "class_weighting": cfg.pipeline.class_weighting,
                "class_weight_power": cfg.pipeline.class_weight_power}
    extra = {"model": model, "config": config or model, "grid": f"{grid[0]}x{grid[1]}", "ranks": ranks, "target_iou": target,
             "budget_min": budget_min, "cpu_budget_min": cpu_budget_min, "validate_every_steps": every, "data": str(data), "dataset": asdict(params),
             "files": files, "run_dir": str(run_dir), "png": str(png), "settings": settings,
             "train_wall_s": wall_s, "data_s": data_s, "load_average": os.getloadavg()[0],
             "stop": "target" if reached else "time_budget",
             "curve": [[round(p["train_seconds"], 1), p["samples"], round(p["val_mean_iou"], 4),
                        round(p["cpu_seconds"] or 0.0, 1)] for p in curve]}
    test_iou = test["model"]["iou"]
    records = [
        record(BENCH, f"{model} time to validation mean IoU {target:g}" if reached else
               f"{model} training time, validation mean IoU {target:g} not reached", (reached or last)["train_seconds"],
               "s", reached=bool(reached), **extra),
        record(BENCH, f"{model} CPU time of rank 0 at the stop", (reached or last)["cpu_seconds"] or 0.0, "s",
               **extra),
        record(BENCH, f"{model} steps", (reached or last)["step"], "steps", **extra),
        record(BENCH, f"{model} samples seen", (reached or last)["samples"], "samples", **extra),
        record(BENCH, f"{model} epochs", (reached or last)["samples"] / samples_per_epoch, "epochs", **extra),
        record(BENCH, f"{model} best validation mean IoU", max(p["val_mean_iou"] for p in curve), "mean IoU",
               baseline=target, baseline_name="target", **extra),
        record(BENCH, f"{model} held-out test mean IoU", test["model"]["mean_iou"], "mean IoU",
               baseline=ceiling[0]["mean_iou"], baseline_name=f"labeller ceiling (noise {ceiling[0]['noise']:g})",
               test_iou=test_iou, test_samples=test["samples"], test_errors=test["errors"], **extra),
        # the same checkpoint with the class weighting partly taken back (evaluate.prior), its exponent chosen
        # on the validation split: a free gain over the plain argmax above
        record(BENCH, f"{model} held-out test mean IoU, prior correction chosen on validation",
               test["prior_sweep"]["mean_iou"][corrected], "mean IoU", baseline=test["model"]["mean_iou"],
               baseline_name="plain argmax", prior_correction=prior, test_iou=test["prior_sweep"]["iou"][corrected],
               valid_sweep=dict(zip(map(str, valid["prior_sweep"]["exponents"]), valid["prior_sweep"]["mean_iou"])),
               **extra),
        # where the AR errors lie (evaluate --errors): the share of false AR pixels in candidate regions the
        # labeller rejected by a whole-object test, i.e. what the network has not learnt of the labels' rules
        record(BENCH, f"{model} false AR pixels in labeller-rejected regions (test)",
               test["errors"]["false_ar_in_rejected_regions"] or 0.0, "fraction",
               false_ar=test["errors"]["false_ar"], missed_ar=test["errors"]["missed_ar"],
               missed_ar_on_edges=test["errors"]["missed_ar_on_edges"], **extra),
        *[record(BENCH, f"labeller agreement, fields + {c['noise']:g} sigma noise", c["mean_iou"], "mean IoU",
                 iou=c["iou"], samples=c["samples"], **extra) for c in ceiling],
        record(BENCH, f"{model} mllog compliance (hpc 3.0.0 deepcam)", float(compliance["passed"]), "passed",
               messages=compliance["messages"], **extra),
    ]
    return records
