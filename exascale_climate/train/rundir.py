"""What makes a run directory a self-contained model: besides config and checkpoints, the normalisation
statistics it was trained with, copied in when training starts (the config's `data.stats_file` is often relative
to where training ran, or points at node-local staging that is gone afterwards)."""
from __future__ import annotations

import shutil
from pathlib import Path

from exascale_climate.utils.io import atomic_path

RUN_STATS = "stats.h5"


def keep_stats(stats_file: str | Path, run_dir: str | Path) -> Path:
    """Copy the training statistics into the run directory (atomically; rank 0 only)."""
    target = Path(run_dir) / RUN_STATS
    with atomic_path(target) as tmp:
        shutil.copyfile(stats_file, tmp)
    return target


def run_stats(checkpoint: str | Path) -> Path | None:
    """The run's own stats.h5 for a checkpoint (run/checkpoints/ckpt-N or best, or the run dir itself)."""
    checkpoint = Path(checkpoint).resolve()
    for directory in (checkpoint, checkpoint.parent, checkpoint.parent.parent):
        if (directory / RUN_STATS).is_file():
            return directory / RUN_STATS
    return None
