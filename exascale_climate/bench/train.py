"""`exaclimate bench train`: the distributed training step on real Horovod ranks, and a convergence run.

Measured in one run, so every ratio has its baseline beside it:
- samples/s and achieved FLOP/s of the full training step (allreduce, loss scaling, LARC) per model;
- weak scaling 1 -> 2 ranks, one thread per rank and the same per-rank batch (the paper's headline metric:
  efficiency = throughput(2 ranks) / (2 x throughput(1 rank)));
- gradient communication variants on 2 ranks of one host (1 node of 2 ranks): flat allreduce (baseline),
  process-set hierarchical allreduce, gradient lag 1, fp16 compression;
- 4 ranks that Horovod sees as 2 hosts x 2 ranks (`horovodrun -H localhost:2,127.0.0.1:2`): flat, hierarchical
  (a real intra-node and a real cross-node stage) and lag, each with its 1 -> 4 rank efficiency;
- a convergence run on the synthetic data: validation mean IoU against wall-clock time, as a PNG.
Each timing rank runs `python -m exascale_climate.bench.train --worker ...` under utils.launch.run_ranks.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from exascale_climate.bench.common import record, reference_cpu_seconds
from exascale_climate.config import Config, load_config
from exascale_climate.utils.log import get_logger

log = get_logger("bench.train")
BENCH = "train"
VARIANTS = ("flat", "hierarchical", "lag", "fp16")
RESULT_TAG = "BENCH_TRAIN "


# ------------------------------------------------------------------------------------------ worker
def _variant_config(cfg: Config, variant: str) -> Config:
    import copy

    cfg = copy.deepcopy(cfg)
    d = cfg.distributed
    d.allreduce, d.gradient_lag, d.fp16_compression, d.ranks_per_node = "flat", 0, False, 0
    if variant == "hierarchical":  # nodes as Horovod reports them (the launcher's hosts)
        d.allreduce = "hierarchical"
    elif variant == "lag":
        d.gradient_lag = 1
    elif variant == "fp16":
        d.fp16_compression = True
    return cfg


def time_variants(cfg: Config, grid: tuple[int, int], batch: int, steps: int, variants: list[str]) -> list[dict]:
    """Time the compiled training step of each variant on random data (no input pipeline in the timing)."""
    from exascale_climate.train.distributed import setup_world

    probe = _variant_config(cfg, "hierarchical")  # dynamic process sets must be enabled before hvd.init
    world = setup_world(probe)
    import tensorflow as tf

    from exascale_climate.utils.runtime import apply_tf_threads

    apply_tf_threads()  # one thread per rank really means one: TF 2.18 ignores the env variables

    from exascale_climate.models import build_model
    from exascale_climate.train.distributed import GradientReducer, broadcast_variables
    from exascale_climate.train.loop import per_sample_flops
    from exascale_climate.train.losses import segmentation_loss
    from exascale_climate.train.optimizers import build_optimizer
    from exascale_climate.train.precision import LossScaler
    from exascale_climate.train.step import TrainStep, resolve_jit_compile

    channels = len(cfg.data.channels) or 16
    shape = (grid[0], grid[1], channels)
    model = build_model(cfg.model, shape, cfg.train.precision)
    flops = per_sample_flops(model, shape)
    rng = tf.random.Generator.from_seed(world.rank)
    x = rng.normal((batch, *shape))
    y = rng.uniform((batch, *grid), 0, cfg.model.num_classes, dtype=tf.int32)
    w = tf.ones((batch, *grid))
    results = []
    for variant in variants:
        vcfg = _variant_config(cfg, variant)
        optimizer = build_optimizer(vcfg.optimizer, world.size)
        step = TrainStep(model, optimizer, GradientReducer.from_config(world, vcfg.distributed),
                         LossScaler.from_config(vcfg.train), lambda a, b, c: segmentation_loss(a, b, c),
                         gradient_lag=vcfg.distributed.gradient_lag,
                         jit_compile=resolve_jit_compile(vcfg.train.jit_compile))
        broadcast_variables(world, list(model.variables) + list(optimizer.variables))
        for _ in range(2):  # tracing + warm-up
            step([(x, y, w)])["loss"].numpy()
        reference = reference_cpu_seconds()  # what the load does to CPU seconds now (scale fit --timing cpu-ref)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step([(x, y, w)])["loss"].numpy()
        seconds = (time.perf_counter() - t0) / steps
        # CPU seconds of this rank's process (compute thread, Horovod's thread, Gloo/MPI) per step: unlike the
        # wall time it does not grow when other jobs share the cores (`scale fit` can use either).
        cpu = (time.process_time() - c0) / steps
        reference = (reference + reference_cpu_seconds()) / 2  # before and after the timed steps
        samples_per_s = batch * world.size / seconds
        results.append({"variant": variant, "ranks": world.size, "nodes": world.nodes,
                        "ranks_per_node": [len(g) for g in world.node_groups], "seconds_per_step": seconds,
                        "cpu_seconds_per_step": cpu, "reference_cpu_s": reference, "load_average": os.getloadavg()[0],
                        "samples_per_s": samples_per_s, "flops_per_s": samples_per_s * flops if flops else None})
    return results


def worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m exascale_climate.bench.train")
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--grid", default="96x144")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--variants", default="flat")
    args = parser.parse_args(argv)
    from exascale_climate.config import parse_grid
    from exascale_climate.utils.runtime import current_rank

    cfg = load_config(args.config, args.overrides)
    results = time_variants(cfg, parse_grid(args.grid), args.batch, args.steps, args.variants.split(","))
    if current_rank() == 0:
        for r in results:
            print(RESULT_TAG + json.dumps(r), flush=True)
    return 0


# ------------------------------------------------------------------------------------------ driver
TWO_HOSTS = "localhost:2,127.0.0.1:2"
FOUR_RANK_VARIANTS = ("flat", "hierarchical", "lag")


def _launch(np: int, config: str | None, overrides: list[str], grid: str, batch: int, steps: int,
            variants: list[str], controller: str = "gloo", hosts: str | None = None) -> dict[str, dict]:
    from exascale_climate.utils.launch import run_ranks

    argv = [sys.executable, "-m", "exascale_climate.bench.train", "--worker", "--grid", grid, "--batch", str(batch),
            "--steps", str(steps), "--variants", ",".join(variants)]
    if config:
        argv += ["--config", config]
    for item in overrides:
        argv += ["--set", item]
    result = run_ranks(np, argv, controller=controller, threads_per_rank=1, timeout=3600, hosts=hosts)
    if result.returncode != 0:
        raise RuntimeError(f"bench train worker on {np} rank(s) failed:\n{result.stdout[-3000:]}")
    rows = [json.loads(line.split(RESULT_TAG, 1)[1]) for line in result.stdout.splitlines() if RESULT_TAG in line]
    return {r["variant"]: r for r in rows}


def _timing(result: dict) -> dict:
    """What `scale fit` reads from a timed variant: ranks, variant, wall and CPU seconds per step, load."""
    return {k: result.get(k) for k in ("ranks", "variant", "seconds_per_step", "cpu_seconds_per_step",
                                       "reference_cpu_s", "load_average")}


def bench_scaling(models: list[str], grid: str, batch: int, steps: int, overrides: list[str],
                  ranks: tuple[int, ...] = (1, 2), controller: str = "gloo") -> list[dict]:
    """1 rank, 2 ranks with every variant, 4 ranks as 2 nodes x 2 (flat, hierarchical, lag), and the flat
    variant on any further rank counts in `ranks`.

    Every record names `ranks`, `controller` and `seconds_per_step` so `exaclimate scale fit` can read them.
    """
    records = []
    for name in models:
        config = name
        extra = {"model": config, "grid": grid, "batch_per_rank": batch, "threads_per_rank": 1,
                 "overrides": overrides, "controller": controller, "steps": steps}
        one = _launch(1, config, overrides, grid, batch, steps, ["flat"], controller)["flat"]
        two = _launch(2, config, overrides, grid, batch, steps, list(VARIANTS), controller)
        four = _launch(4, config, overrides, grid, batch, steps, list(FOUR_RANK_VARIANTS), controller,
                       hosts=TWO_HOSTS)
        one_x = {**extra, **_timing(one)}
        records.append(record(BENCH, f"{config} samples/s, 1 rank", one["samples_per_s"], "samples/s", **one_x))
        if one["flops_per_s"]:
            records.append(record(BENCH, f"{config} achieved FLOP/s, 1 rank", one["flops_per_s"], "FLOP/s", **one_x))
        flat = two["flat"]
        two_x = {**extra, **_timing(flat)}
        records.append(record(BENCH, f"{config} samples/s, 2 ranks (flat)", flat["samples_per_s"], "samples/s",
                              baseline=one["samples_per_s"], baseline_name="1 rank", **two_x))
        for variant in VARIANTS[1:]:
            records.append(record(BENCH, f"{config} samples/s, 2 ranks ({variant})", two[variant]["samples_per_s"],
                                  "samples/s", baseline=flat["samples_per_s"], baseline_name="flat",
                                  **{**extra, **_timing(two[variant])}))
        for variant in VARIANTS:  # 2 ranks x the same per-rank batch against twice one rank
            records.append(record(BENCH, f"{config} weak-scaling efficiency 1->2 ranks ({variant})",
                                  two[variant]["samples_per_s"] / (2 * one["samples_per_s"]), "fraction",
                                  baseline=0.9, baseline_name="goal", nodes=two[variant]["nodes"],
                                  ranks_per_node=two[variant]["ranks_per_node"], **extra))
        for variant in FOUR_RANK_VARIANTS:  # 2 nodes x 2 ranks, as Horovod reports them
            row = four[variant]
            where = {"nodes": row["nodes"], "ranks_per_node": row["ranks_per_node"], "hosts": TWO_HOSTS}
            base, base_name = (one, "1 rank") if variant == "flat" else (four["flat"], "flat")
            records.append(record(BENCH, f"{config} samples/s, 4 ranks as 2 nodes x 2 ({variant})",
                                  row["samples_per_s"], "samples/s", baseline=base["samples_per_s"],
                                  baseline_name=base_name, **where, **{**extra, **_timing(row)}))
            records.append(record(BENCH, f"{config} weak-scaling efficiency 1->4 ranks, 2 nodes x 2 ({variant})",
                                  row["samples_per_s"] / (4 * one["samples_per_s"]), "fraction", baseline=0.9,
                                  baseline_name="goal", **where, **{**extra, **_timing(row)}))
        for np in (n for n in ranks if n not in (1, 2, 4)):  # 4 ranks: the 2-node run above
            more = _launch(np, config, overrides, grid, batch, steps, ["flat"], controller)["flat"]
            records.append(record(BENCH, f"{config} samples/s, {np} ranks (flat)", more["samples_per_s"],
                                  "samples/s", baseline=one["samples_per_s"], baseline_name="1 rank",
                                  **{**extra, **_timing(more)}))
    return records


def bench_convergence(data_dir: str | None, out_png: str | Path, epochs: int = 12) -> list[dict]:
    """Train the demo config on 2 ranks and plot validation mean IoU against wall-clock time."""
    from exascale_climate.data.demo import build_demo_dataset
    from exascale_climate.data.split import split_dir
    from exascale_climate.utils.launch import exaclimate, run_ranks
    from exascale_climate.utils.log import read_json_lines

    work = Path(tempfile.mkdtemp(prefix="exaclimate-bench-train-"))
    data = Path(data_dir) if data_dir else build_demo_dataset(work / "demo", workers=2).data_dir
    run_dir = work / "run"
    valid_dir = split_dir(data, "valid") or data / "valid"  # valid/, or validation/ of the MLPerf tree
    sets = [f"data.train_dir={data / 'train'}", f"data.valid_dir={valid_dir}",
            f"data.stats_file={data / 'stats.h5'}", "pipeline.stage_dir=", f"train.epochs={epochs}",
            "train.checkpoint.keep=1"]
    t0 = time.time()
    result = run_ranks(2, exaclimate("train", "--config", "demo", "--run-dir", str(run_dir),
                                     *sum((["--set", s] for s in sets), [])), timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"convergence run failed:\n{result.stdout[-3000:]}")
    rows = read_json_lines(run_dir / "metrics.jsonl")
    start = min(r["time"] for r in rows)
    valid = [(r["time"] - start, r["val_mean_iou"], r["step"]) for r in rows if r["kind"] == "valid"]
    trivial = trivial_mean_iou(valid_dir)
    _plot(valid, trivial, out_png)
    extra = {"grid": "96x144", "ranks": 2, "epochs": epochs, "png": str(out_png), "wall_s": time.time() - t0,
             "curve": [[round(t, 2), round(v, 4), s] for t, v, s in valid]}
    return [record(BENCH, "demo convergence: best validation mean IoU", max(v for _, v, _ in valid), "mean IoU",
                   baseline=trivial, baseline_name="all-background prediction", **extra),
            record(BENCH, "demo convergence: training time to last validation", valid[-1][0], "s", **extra)]


def trivial_mean_iou(valid_dir: Path) -> float:
    """Mean IoU of predicting background everywhere (the floor a learning model must clear)."""
    import numpy as np

    from exascale_climate.data.layouts import list_samples
    from exascale_climate.data.samples import read_labels
    from exascale_climate.train.metrics import iou_from_confusion

    cm = np.zeros((3, 3))
    for path in list_samples(valid_dir):
        cm[:, 0] += np.bincount(read_labels(path).ravel(), minlength=3)
    return iou_from_confusion(cm)[1]


def _plot(valid, trivial: float, out_png) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from exascale_climate.utils.io import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.plot([t for t, _, _ in valid], [v for _, v, _ in valid], "o-", label="Tiramisu (demo), 2 ranks")
    ax.axhline(trivial, color="grey", ls="--", label="all-background prediction")
    ax.set_xlabel("wall-clock training time (s)")
    ax.set_ylabel("validation mean IoU")
    ax.set_ylim(0, 1)
    ax.set_title("Convergence on synthetic CAM5-like data (96x144)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def bench_train(models: list[str], grid: str = "96x144", batch: int = 1, steps: int = 5,
                overrides: list[str] | None = None, convergence: bool = True, data_dir: str | None = None,
                png: str | Path = "docs/figures/train_convergence.png", ranks: tuple[int, ...] = (1, 2),
                controller: str = "gloo") -> list[dict]:
    # float32 unless asked: on CPUs float16 convolutions are emulated and would only measure that.
    records = bench_scaling(models, grid, batch, steps, ["train.precision=float32", *(overrides or [])],
                            ranks=ranks, controller=controller)
    if convergence:
        records += bench_convergence(data_dir, png)
    return records


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
