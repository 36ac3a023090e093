"""Deterministic train/valid/test split of a sample directory (`exaclimate data split`).

Default strategy "time": contiguous blocks in time order. Consecutive 3-hourly climate states are nearly
identical, so a random split puts near-copies of test samples into training and overstates skill; blocks keep
the splits apart (a 1-day gap of samples can be dropped between them with `gap`). "random" shuffles with the seed.
Files are hard-linked (copied across file systems) under a temporary name and renamed; a rerun only adds what is
missing and removes samples a changed split no longer assigns.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from exascale_climate.data.layouts import list_samples
from exascale_climate.errors import DataError
from exascale_climate.utils.io import atomic_path, atomic_write_text, remove_stale_temps
from exascale_climate.utils.log import get_logger

log = get_logger("data.split")
SPLITS = ("train", "valid", "test")
# Directory names a split may have on disk, first preferred: ours, and the MLPerf HPC DeepCAM tree's
# `validation/` (mlcommons/hpc deepcam reads train/ and validation/), so either tree is taken as published.
SPLIT_DIRS = {"train": ("train",), "valid": ("valid", "validation"), "test": ("test",)}


def split_dir(root: str | Path, split: str) -> Path | None:
    """The directory of `split` under a dataset root (valid/ or validation/), or None when there is none."""
    for name in SPLIT_DIRS[split]:
        if (Path(root) / name).is_dir():
            return Path(root) / name
    return None


def split_of_dir(name: str) -> str | None:
    """The split a directory name stands for (validation -> valid), or None."""
    return next((split for split, names in SPLIT_DIRS.items() if name in names), None)
STRATEGIES = ("time", "random")


def split_counts(n: int, fractions: tuple[float, ...]) -> list[int]:
    """Sample counts per split: proportional, every split with a positive fraction gets >= 1 when n allows."""
    fr = np.asarray(fractions, np.float64)
    if fr.ndim != 1 or len(fr) != len(SPLITS) or (fr < 0).any() or fr.sum() <= 0:
        raise DataError("<split>", f"fractions {list(fractions)} must be three non-negative numbers", field="fractions")
    fr = fr / fr.sum()
    counts = np.floor(fr * n).astype(int)
    for i in np.argsort(-(fr * n - counts))[: n - counts.sum()]:
        counts[i] += 1
    for i in np.nonzero((fr > 0) & (counts == 0))[0]:  # a tiny dataset still gets a sample in each split
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[i] += 1
    return counts.tolist()


def assign(files: list[Path], fractions=(0.8, 0.1, 0.1), seed: int = 0, strategy: str = "time",
           gap: int = 0) -> dict[str, list[Path]]:
    """Which file goes to which split (pure function of the sorted names, fractions, seed and strategy)."""
    if strategy not in STRATEGIES:
        raise DataError("<split>", f"unknown strategy {strategy!r}; use one of {STRATEGIES}", field="strategy")
    files = sorted(files)
    order = list(range(len(files)))
    if strategy == "random":
        order = np.random.default_rng(seed).permutation(len(files)).tolist()
    usable = len(files) - gap * (len(SPLITS) - 1) if strategy == "time" else len(files)
    counts = split_counts(max(usable, 0), fractions)
    out, start = {}, 0
    for name, count in zip(SPLITS, counts):
        out[name] = [files[i] for i in sorted(order[start:start + count])]
        start += count + (gap if strategy == "time" else 0)
    return out


def _place(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)


def split_dataset(src_dir, out_dir, fractions=(0.8, 0.1, 0.1), seed: int = 0, strategy: str = "time",
                  gap: int = 0) -> dict:
    """Populate out_dir/{train,valid,test} from the samples of src_dir; writes out_dir/split.json."""
    src, out = Path(src_dir), Path(out_dir)
    files = list_samples(src)
    if not files:
        raise DataError(src, "no data-*.h5 samples to split")
    plan = assign(files, fractions, seed, strategy, gap)
    for name, chosen in plan.items():
        target = out / name
        target.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target)
        wanted = {p.name for p in chosen}
        for stale in (p for p in list_samples(target) if p.name not in wanted and target.resolve() != src.resolve()):
            stale.unlink()
        for p in chosen:
            dst = target / p.name
            if not (dst.exists() and dst.stat().st_size == p.stat().st_size):
                _place(p, dst)
    manifest = {"source": str(src), "fractions": list(fractions), "seed": seed, "strategy": strategy, "gap": gap,
                "splits": {k: [p.name for p in v] for k, v in plan.items()}}
    atomic_write_text(out / "split.json", json.dumps(manifest, indent=1))
    log.info("split %d samples from %s: %s", len(files), src,
             ", ".join(f"{k} {len(v)}" for k, v in plan.items()))
    return {k: len(v) for k, v in plan.items()}
