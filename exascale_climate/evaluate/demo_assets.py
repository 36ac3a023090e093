"""Find the dataset and trained run of the README's demo job, or make a small one, for notebooks and tests.

The notebooks must run top to bottom on a fresh clone: when the demo job's outputs are absent they build a
small dataset with the same library steps as `scripts/demo.sh` (synthesise -> convert -> split -> stats) and,
for model inspection, train a tiny model for a few steps with the real training loop.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from exascale_climate.utils.log import get_logger

log = get_logger("demo")
DEMO_ENV = "EXACLIMATE_DEMO_DIR"
SMALL_GRID = (96, 144)  # the test grid of the project; divisible by both networks' down-sampling
SMALL_SAMPLES = 16
SMALL_SPLIT = (0.625, 0.125, 0.25)  # 10 train, 2 valid, 4 test: enough test samples to rank the worst


@dataclass
class DemoAssets:
    root: Path

    @property
    def raw_dir(self) -> Path:  # labelled netCDF, as synthesised
        return self.root / "raw"

    @property
    def data_dir(self) -> Path:  # HDF5 splits + stats.h5
        return self.root / "data"

    @property
    def test_dir(self) -> Path:
        return self.data_dir / "test"

    @property
    def stats_file(self) -> Path:
        return self.data_dir / "stats.h5"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    def has_dataset(self) -> bool:
        from exascale_climate.data.layouts import list_samples

        return self.stats_file.exists() and all(
            (self.data_dir / s).is_dir() and list_samples(self.data_dir / s) for s in ("train", "test"))

    def has_run(self) -> bool:
        return (self.run_dir / "checkpoints").is_dir() and any((self.run_dir / "checkpoints").iterdir())


def demo_root() -> Path:
    """$EXACLIMATE_DEMO_DIR, else a `demo/` directory here or one level up (notebooks/ runs from the repo),
    else a scratch directory for a small self-made dataset."""
    if os.environ.get(DEMO_ENV):
        return Path(os.environ[DEMO_ENV])
    for candidate in (Path("demo"), Path("..") / "demo"):
        if DemoAssets(candidate).has_dataset():
            return candidate.resolve()
    return Path(tempfile.gettempdir()) / "exaclimate-notebook-demo"


def ensure_dataset(assets: DemoAssets, samples: int = SMALL_SAMPLES, grid: tuple[int, int] = SMALL_GRID,
                   seed: int = 1) -> DemoAssets:
    """Make raw netCDF, HDF5 train/valid/test splits and stats.h5 unless the demo job already did."""
    if assets.has_dataset():
        return assets
    from exascale_climate.config import load_config
    from exascale_climate.data.convert import convert
    from exascale_climate.data.layouts import list_samples
    from exascale_climate.data.split import split_dataset
    from exascale_climate.data.stats import compute_stats, write_stats
    from exascale_climate.data.synthetic import synthesize

    log.info("making a small demo dataset in %s (%d samples, %dx%d)", assets.root, samples, *grid)
    cfg = load_config(None, [f"data.synth.samples={samples}", f"data.synth.grid={grid[0]}x{grid[1]}",
                             f"data.synth.seed={seed}"])
    synthesize(assets.raw_dir, cfg.data.synth, cfg.data.labeller, progress=False)
    convert(sorted(assets.raw_dir.glob("*.nc")), assets.data_dir / "all")
    split_dataset(assets.data_dir / "all", assets.data_dir, fractions=SMALL_SPLIT, seed=seed)
    write_stats(assets.stats_file, compute_stats(list_samples(assets.data_dir / "train"), progress=False))
    return assets


def ensure_run(assets: DemoAssets, steps: int = 6) -> DemoAssets:
    """Train the demo config's slim Tiramisu for a few steps on the dataset unless a run exists."""
    if assets.has_run():
        return assets
    from exascale_climate.config import CONFIG_DIR, load_config
    from exascale_climate.train.loop import train

    ensure_dataset(assets)
    cfg = load_config(CONFIG_DIR / "demo.yaml", [
        f"data.train_dir={assets.data_dir / 'train'}", f"data.valid_dir={assets.data_dir / 'valid'}",
        f"data.test_dir={assets.test_dir}", f"data.stats_file={assets.stats_file}", "pipeline.stage_dir=",
        "train.epochs=1", f"train.max_steps={steps}", "train.batch_size=2",
        "optimizer.schedule.warmup_steps=0"])
    log.info("training a tiny model for %d steps in %s", steps, assets.run_dir)
    train(cfg, assets.run_dir)
    return assets


def demo_assets(make: bool = True, trained: bool = False) -> DemoAssets:
    """The demo assets, made when absent (`trained` also ensures a run with a checkpoint)."""
    assets = DemoAssets(demo_root())
    if make:
        ensure_dataset(assets)
        if trained:
            ensure_run(assets)
    return assets
