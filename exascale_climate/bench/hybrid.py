"""`exaclimate bench hybrid`: synchronous vs hybrid (groups + parameter servers) training, with and without a
straggler, measured in one run on real mpirun ranks.

For every variant (sync = 1 group, then hybrid with G groups on the same compute ranks + 1 parameter server) and
straggler condition (none, one compute rank sleeping `--delay` seconds after every step):
- samples/s of the compute ranks (all groups, the first log window excluded: it holds the compilation);
- time from the first logged step to the first validation reaching `--target` mean IoU (group 0 validates);
- model updates (iterations) to that point: sync steps, or the servers' version (servers.jsonl) -- the
  statistical cost of asynchrony the 15PF paper weighs against its per-iteration speed.
Ratios are against sync under the same straggler condition. A plot of validation IoU against time per variant.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from exascale_climate.bench.common import record
from exascale_climate.utils.log import get_logger, read_json_lines

log = get_logger("bench.hybrid")
BENCH = "hybrid"


def _run(compute: int, groups: int, straggler: int, delay: float, run_dir: Path, sets: list[str],
         config: str) -> tuple[float, str]:
    from exascale_climate.utils.launch import exaclimate, run_ranks

    extra = [f"distributed.straggler_rank={straggler if delay else -1}", f"distributed.straggler_delay_s={delay}"]
    np_ = compute
    if groups > 1:
        np_ += 1
        extra += ["distributed.mode=hybrid", f"distributed.groups={groups}", "distributed.parameter_servers=1",
                  f"distributed.max_staleness={max(groups - 1, 2 * groups)}"]
    argv = exaclimate("train", "--config", config, "--run-dir", str(run_dir),
                      *sum((["--set", s] for s in [*sets, *extra]), []))
    t0 = time.time()
    result = run_ranks(np_, argv, "mpirun", threads_per_rank=1, timeout=7200)
    if result.returncode != 0:
        raise RuntimeError(f"{run_dir.name} failed:\n{result.stdout[-3000:]}")
    return time.time() - t0, run_dir.name


def summarise(run_dir: Path, groups: int, target: float) -> dict:
    """samples/s, time and updates to the target IoU, the IoU curve; from the run's own files."""
    rows = read_json_lines(run_dir / "metrics.jsonl")
    train = [r for r in rows if r["kind"] == "train"]
    start = min(r["time"] for r in train)
    per_group: dict[int, list[float]] = {}
    for r in train:
        per_group.setdefault(r.get("group", 0), []).append(r["samples_per_s"])
    samples_per_s = sum(sum(v[1:]) / max(len(v) - 1, 1) for v in per_group.values())
    valid = [r for r in rows if r["kind"] == "valid"]
    curve = [(r["time"] - start, r["val_mean_iou"], r["step"]) for r in valid]
    hit = next((r for r in valid if r["val_mean_iou"] >= target), None)
    out = {"samples_per_s": samples_per_s, "curve": curve, "best_iou": max((v for _, v, _ in curve), default=0.0),
           "seconds_to_target": None, "updates_to_target": None}
    if hit:
        out["seconds_to_target"] = hit["time"] - start
        if groups > 1:  # the servers' version when group 0 validated
            updates = [u for u in read_json_lines(run_dir / "servers.jsonl") if u["kind"] == "update"]
            out["updates_to_target"] = sum(1 for u in updates if u["time"] <= hit["time"])
        else:
            out["updates_to_target"] = hit["step"]
    return out


def _plot(results: dict, target: float, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, delay in zip(axes, sorted({d for _, d in results})):
        for (groups, d), res in sorted(results.items()):
            if d != delay:
                continue
            t, v, _ = zip(*res["curve"]) if res["curve"] else ((), (), ())
            ax.plot(t, v, marker="o", label="sync" if groups == 1 else f"hybrid, {groups} groups")
        ax.axhline(target, color="grey", ls=":", lw=1)
        ax.set_title("no straggler" if not delay else f"one rank +{delay:g} s per step")
        ax.set_xlabel("seconds since the first logged step")
    axes[0].set_ylabel("validation mean IoU")
    axes[0].legend()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def bench_hybrid(data_dir: str | Path | None = None, compute_ranks: int = 4, groups: tuple[int, ...] = (1, 2, 3),
                 delay: float = 1.0, straggler: int = 1, target: float = 0.5, epochs: int = 4,
                 config: str = "demo", overrides: tuple[str, ...] = (),
                 png: str | Path = "docs/figures/hybrid.png") -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="exaclimate-bench-hybrid-"))
    if not data_dir:
        from exascale_climate.data.demo import build_demo_dataset

        data_dir = build_demo_dataset(work / "demo", workers=2).data_dir
    data = Path(data_dir)
    sets = [f"data.train_dir={data / 'train'}", f"data.valid_dir={data / 'valid'}",
            f"data.stats_file={data / 'stats.h5'}", "pipeline.stage_dir=", f"train.epochs={epochs}",
            "train.checkpoint.keep=1", "train.log_every_steps=2", "train.validate_every_steps=4", *overrides]
    results, walls = {}, {}
    for d in (0.0, delay) if delay else (0.0,):
        for g in groups:
            if compute_ranks % g:
                log.warning("%d groups cannot split %d compute ranks: skipped", g, compute_ranks)
                continue
            run_dir = work / f"g{g}-delay{d:g}"
            walls[(g, d)], _ = _run(compute_ranks, g, straggler, d, run_dir, sets, config)
            results[(g, d)] = summarise(run_dir, g, target)
            log.info("%s: %s", run_dir.name, {k: v for k, v in results[(g, d)].items() if k != "curve"})
    records = []
    for (g, d), res in sorted(results.items()):
        base = results.get((1, d))
        common = {"groups": g, "compute_ranks": compute_ranks, "parameter_servers": int(g > 1),
                  "straggler_delay_s": d, "straggler_rank": straggler if d else None, "target_iou": target,
                  "variant": "sync" if g == 1 else f"hybrid-{g}", "wall_s": walls[(g, d)],
                  "curve": [[round(t, 2), round(v, 4), s] for t, v, s in res["curve"]], "png": str(png)}
        bname = "sync, same straggler condition"
        records.append(record(BENCH, f"{common['variant']} samples/s (straggler {d:g} s)", res["samples_per_s"],
                              "samples/s", base and base["samples_per_s"], bname, **common))
        for key, unit in (("seconds_to_target", "s"), ("updates_to_target", "updates")):
            value = res[key]
            if value is None:
                continue
            records.append(record(BENCH, f"{common['variant']} {key.replace('_', ' ')} {target:g} IoU "
                                         f"(straggler {d:g} s)", float(value), unit,
                                  base and base[key], bname, **common))
    _plot(results, target, Path(png))
    return records
