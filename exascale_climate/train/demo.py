"""The demo job's outputs for the notebooks and the evaluation tests: the demo dataset (data/demo.py) and a
tiny trained run beside it, found where `scripts/demo.sh` left them or made in a directory of their own.

The notebooks must run top to bottom on a fresh clone: when the demo job's outputs are absent they build a
small demo dataset and, for model inspection, train the demo config for a few steps with the real loop.
"""
from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from exascale_climate.data.demo import DemoDataset, build_demo_dataset
from exascale_climate.utils.log import get_logger

log = get_logger("demo")
DEMO_ENV = "EXACLIMATE_DEMO_DIR"
SMALL_SAMPLES = 16
SMALL_SPLIT = (0.625, 0.125, 0.25)  # 10 train, 2 valid, 4 test: enough test samples to rank the worst


@dataclass
class DemoAssets(DemoDataset):
    """The demo dataset plus `run/`, the training run directory."""

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    def has_run(self) -> bool:
        return (self.run_dir / "checkpoints").is_dir() and any((self.run_dir / "checkpoints").iterdir())


def ensure_dataset(assets: DemoAssets) -> DemoAssets:
    """A small demo dataset (16 samples) unless one is there."""
    build_demo_dataset(assets.root, samples=SMALL_SAMPLES, fractions=SMALL_SPLIT, progress=False)
    return assets


def ensure_run(assets: DemoAssets, steps: int = 6) -> DemoAssets:
    """Train the demo config's slim Tiramisu for a few steps on the dataset unless a run exists."""
    if assets.has_run():
        return assets
    from exascale_climate.config import CONFIG_DIR, load_config
    from exascale_climate.train.loop import train

    ensure_dataset(assets)
    cfg = load_config(CONFIG_DIR / "demo.yaml", [
        *assets.config_overrides(), "pipeline.stage_dir=", "train.epochs=1", f"train.max_steps={steps}",
        "train.batch_size=2", "optimizer.schedule.warmup_steps=0"])
    log.info("training a tiny model for %d steps in %s", steps, assets.run_dir)
    train(cfg, assets.run_dir)
    return assets


@functools.cache
def demo_root() -> Path:
    """$EXACLIMATE_DEMO_DIR, else a `demo/` directory here or one level up (notebooks/ runs from the repo)
    holding the demo job's dataset, else a new private directory (one per process, never shared)."""
    if os.environ.get(DEMO_ENV):
        return Path(os.environ[DEMO_ENV])
    for candidate in (Path("demo"), Path("..") / "demo"):
        if DemoAssets(candidate).complete():
            return candidate.resolve()
    return Path(tempfile.mkdtemp(prefix="exaclimate-demo-"))


def demo_assets(make: bool = True, trained: bool = False) -> DemoAssets:
    """The demo assets, made when absent (`trained` also ensures a run with a checkpoint)."""
    assets = DemoAssets(demo_root())
    if make:
        ensure_dataset(assets)
        if trained:
            ensure_run(assets)
    return assets
