#!/usr/bin/env python
"""Does unlabelled data help the semi-supervised detector? (issue 19, docs/MODELS.md)

The same synthetic demo-grid data, the same step budget and the same seeds for every arm; only the share of
labelled training files (data.labelled_fraction) and the reconstruction term (reconstruction_weight 1 vs 0)
change. Each run goes through the ordinary training loop (train/loop.py) and is scored with `evaluate`'s
detector path (mAP per class at IoU 0.1 / 0.5 on the test split, against the stored boxes).

  PYTHONPATH=. .venv/bin/python scripts/semisup_experiment.py --out runs/semisup-question \
      [--samples 96] [--steps 240] [--seeds 0,1,2] [--fractions 0.05,0.2,1.0]

Writes results.jsonl (one line per run, appended as runs finish, so an interrupted study keeps its results),
summary.json, and a PNG plot. Runs in one process (no per-run TensorFlow start-up).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--samples", type=int, default=96, help="synthetic time steps (split 80/10/10)")
    p.add_argument("--steps", type=int, default=240, help="training steps per run (the shared budget)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--fractions", default="0.05,0.2,1.0")
    p.add_argument("--plot", type=Path, help="PNG (default: OUT/semisup_question.png)")
    return p.parse_args()


def dataset(root: Path, samples: int) -> Path:
    from exascale_climate.data.boxes import store_boxes
    from exascale_climate.data.demo import build_demo_dataset

    data = build_demo_dataset(root, samples=samples, workers=2).data_dir
    store_boxes(data / "test")
    return data


def run_one(data: Path, run_dir: Path, fraction: float, recon: float, seed: int, steps: int) -> dict:
    import keras

    from exascale_climate.config import load_config
    from exascale_climate.evaluate.detection import evaluate_detector
    from exascale_climate.train.loop import train

    keras.backend.clear_session()
    cfg = load_config("semisup_demo", [
        f"data.train_dir={data / 'train'}", f"data.valid_dir={data / 'valid'}", f"data.test_dir={data / 'test'}",
        f"data.stats_file={data / 'stats.h5'}", f"data.labelled_fraction={fraction}",
        f"model.semisup.reconstruction_weight={recon}", f"train.seed={seed}", "train.epochs=1000",
        f"train.max_steps={steps}", "train.log_every_steps=20", "train.checkpoint.every_epochs=0",
        f"train.validate_every_steps={steps}", "distributed.cycle_time_ms=1"])
    t0 = time.perf_counter()
    result = train(cfg, run_dir)
    report = evaluate_detector(run_dir, data / "test", labeller="off")
    return {"fraction": fraction, "reconstruction_weight": recon, "seed": seed, "steps": result["step"],
            "train_seconds": time.perf_counter() - t0, "final_loss": result.get("loss"),
            "map_0.1": report["map"]["iou_0.1"]["map"], "map_0.5": report["map"]["iou_0.5"]["map"],
            "ap_0.1": report["map"]["iou_0.1"]["ap"], "ap_0.5": report["map"]["iou_0.5"]["ap"],
            "detections": report["detections"], "true_boxes": report["true_boxes"]}


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for fraction in sorted({r["fraction"] for r in rows}):
        for recon in (1.0, 0.0):
            sel = [r for r in rows if r["fraction"] == fraction and r["reconstruction_weight"] == recon]
            if not sel:
                continue
            entry = {"fraction": fraction, "reconstruction_weight": recon, "runs": len(sel)}
            for key in ("map_0.1", "map_0.5"):
                values = np.array([r[key] or 0.0 for r in sel])
                entry[key] = float(values.mean())
                entry[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            out.append(entry)
    return out


def plot(summary: list[dict], path: Path) -> None:
    from exascale_climate.evaluate.plots import new_figure, save_figure

    fig = new_figure((900, 380))
    axes = fig.subplots(1, 2)
    for ax, key in zip(axes, ("map_0.1", "map_0.5")):
        for recon, label, style in ((1.0, "semi-supervised (reconstruction on)", "-o"),
                                    (0.0, "supervised only (reconstruction off)", "--s")):
            sel = [s for s in summary if s["reconstruction_weight"] == recon]
            x = [100 * s["fraction"] for s in sel]
            ax.errorbar(x, [s[key] for s in sel], yerr=[s[f"{key}_std"] for s in sel], fmt=style, capsize=3,
                        label=label)
        ax.set_xscale("log")
        ax.set_xticks([5, 20, 100], labels=["5%", "20%", "100%"])
        ax.set_xlabel("labelled training samples")
        ax.set_ylabel(f"mAP at box IoU {key.split('_')[1]}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle("semisup detector, demo grid 96x144, slim config: mean and std over seeds")
    save_figure(fig, path)


def main():
    args = parse_args()
    from exascale_climate.utils.runtime import configure_threads

    configure_threads()
    args.out.mkdir(parents=True, exist_ok=True)
    data = dataset(args.out / "data", args.samples)
    results = args.out / "results.jsonl"
    done = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    seen = {(r["fraction"], r["reconstruction_weight"], r["seed"]) for r in done}
    for seed in (int(s) for s in args.seeds.split(",")):
        for fraction in (float(f) for f in args.fractions.split(",")):
            for recon in (1.0, 0.0):
                if (fraction, recon, seed) in seen:
                    continue
                name = f"f{fraction:g}-r{recon:g}-s{seed}"
                row = run_one(data, args.out / "runs" / name, fraction, recon, seed, args.steps)
                print(json.dumps(row), flush=True)
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                done.append(row)
    summary = summarise(done)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary, args.plot or args.out / "semisup_question.png")
    for s in summary:
        print(f"{100 * s['fraction']:5.0f}% labelled, reconstruction {s['reconstruction_weight']:g}: "
              f"mAP@0.1 {s['map_0.1']:.3f} +- {s['map_0.1_std']:.3f}, mAP@0.5 {s['map_0.5']:.3f} "
              f"+- {s['map_0.5_std']:.3f} ({s['runs']} runs)")


if __name__ == "__main__":
    main()
