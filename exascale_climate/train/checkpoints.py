"""Checkpoints: atomic directories with everything a run needs to continue exactly, the last K and the best.

A checkpoint `checkpoints/ckpt-<step>/` holds `model.weights.h5` (Keras, for inference and other tools),
`state.npz` (every model variable including RNG seed states, the optimizer's slots, loss-scale and
gradient-lag buffers, by position), `state.json` (step, epoch, pipeline position, loss scale, metrics) and the
resolved `config.yaml`. It is written under a temporary name and renamed, so a SIGKILL leaves either the old
set of checkpoints or the new one, never half a directory.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from exascale_climate.config import Config, config_from_dict, save_config
from exascale_climate.errors import ExaclimateError
from exascale_climate.utils.io import atomic_path, remove_stale_temps, temp_name
from exascale_climate.utils.log import get_logger

log = get_logger("checkpoints")

CKPT_RE = re.compile(r"^ckpt-(\d+)$")
WEIGHTS = "model.weights.h5"
STATE_ARRAYS = "state.npz"
STATE_JSON = "state.json"
CONFIG = "config.yaml"


def checkpoint_step(path: Path) -> int | None:
    m = CKPT_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def list_checkpoints(directory: str | Path) -> list[Path]:
    """`ckpt-<step>` directories, oldest first (temporaries and best/ excluded)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def read_state(path: str | Path) -> dict:
    try:
        return json.loads((Path(path) / STATE_JSON).read_text())
    except (OSError, ValueError) as e:
        raise ExaclimateError(f"{Path(path) / STATE_JSON}: unreadable checkpoint state ({e})") from None


class CheckpointManager:
    """Writes and finds checkpoints under `<run_dir>/checkpoints`; only rank 0 should call `save`."""

    def __init__(self, run_dir: str | Path, keep: int = 3, keep_best: bool = True):
        self.directory = Path(run_dir) / "checkpoints"
        self.keep = keep
        self.keep_best = keep_best

    @property
    def best_dir(self) -> Path:
        return self.directory / "best"

    def clean_temps(self) -> list[Path]:
        """Remove what a killed writer left (temporary checkpoint directories)."""
        return remove_stale_temps(self.directory)

    def latest(self) -> Path | None:
        found = list_checkpoints(self.directory)
        return found[-1] if found else None

    def best_metric(self) -> float | None:
        if not (self.best_dir / STATE_JSON).exists():
            return None
        return read_state(self.best_dir).get("best_metric")

    def save(self, step: int, model, arrays: dict[str, list], state: dict, cfg: Config,
             metric: float | None = None) -> Path:
        """Write ckpt-<step> atomically, keep the last K, and refresh best/ when `metric` improved."""
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"ckpt-{step}"
        best_before = self.best_metric()
        improved = metric is not None and (best_before is None or metric > best_before)
        state = {**state, "step": step, "best_metric": metric if improved else best_before}
        flat = {f"{group}_{i:05d}": np.asarray(a) for group, values in arrays.items() for i, a in enumerate(values)}
        # model weights + the same arrays again in state.npz, + headers: what the directory will roughly take
        need = 2 * sum(a.nbytes for a in flat.values()) + (1 << 16)
        previous = self.latest()
        try:
            with atomic_path(target) as tmp:  # the old ckpt-<step> (same step saved twice) is replaced only at the end
                tmp.mkdir()
                model.save_weights(str(tmp / WEIGHTS))
                with open(tmp / STATE_ARRAYS, "wb") as f:
                    np.savez(f, **flat)
                (tmp / STATE_JSON).write_text(json.dumps(state, indent=1, default=float))
                save_config(cfg, tmp / CONFIG)
                if target.exists():  # the same step saved twice (e.g. end of epoch == every_steps)
                    shutil.rmtree(target)
            if improved and self.keep_best:
                self._replace_best(target, metric)
        except (OSError, RuntimeError) as e:
            if not out_of_space(e):
                raise
            raise ExaclimateError(f"{target}: no space left on the device ({disk_free(self.directory)} bytes free, "
                                  f"a checkpoint needs about {need} bytes); nothing half-written is left, the last "
                                  f"good checkpoint is {previous or 'none'}") from None
        self._prune()
        return target

    def _replace_best(self, source: Path, metric: float) -> None:
        fresh = temp_name(self.best_dir)
        try:
            shutil.copytree(source, fresh)
        except BaseException:  # a full disk mid-copy: the old best/ stays, the partial copy goes
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        old = temp_name(self.best_dir)
        if self.best_dir.exists():
            os.replace(self.best_dir, old)
        os.replace(fresh, self.best_dir)
        shutil.rmtree(old, ignore_errors=True)
        log.info("new best checkpoint (validation mean IoU %.4f) from %s", metric, source.name)

    def _prune(self) -> None:
        for old in list_checkpoints(self.directory)[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)


def out_of_space(e: BaseException) -> bool:
    """ENOSPC/EDQUOT, also when h5py wraps it in a RuntimeError/OSError with only a message."""
    import errno

    return getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(e) \
        or "Disk quota exceeded" in str(e)


def disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


def load_arrays(path: str | Path) -> dict[str, list[np.ndarray]]:
    """The grouped arrays saved by `CheckpointManager.save`, in their original order."""
    file = Path(path) / STATE_ARRAYS
    try:
        with np.load(file) as data:
            groups: dict[str, list] = {}
            for key in sorted(data.files):
                group, _ = key.rsplit("_", 1)
                groups.setdefault(group, []).append(data[key])
    except (OSError, ValueError) as e:
        raise ExaclimateError(f"{file}: unreadable checkpoint arrays ({e})") from None
    return groups


def assign_arrays(path: str | Path, group: str, variables, values: list[np.ndarray]) -> None:
    """Assign saved values to variables by position; a mismatch (other model/config) is a clear error."""
    if len(values) != len(variables):
        raise ExaclimateError(f"{Path(path) / STATE_ARRAYS}: [{group}] has {len(values)} arrays but the run has "
                              f"{len(variables)} variables; was it written with another model config?")
    for i, (var, value) in enumerate(zip(variables, values)):
        if tuple(var.shape) != tuple(value.shape):
            raise ExaclimateError(f"{Path(path) / STATE_ARRAYS}: [{group}] array {i} has shape {value.shape}, "
                                  f"the variable {getattr(var, 'path', getattr(var, 'name', i))} has {tuple(var.shape)}")
        var.assign(value)


def resolve_checkpoint(path: str | Path) -> Path:
    """A run dir (-> its best/, else its latest ckpt), a checkpoints/ dir, or a checkpoint directory."""
    path = Path(path)
    if (path / WEIGHTS).exists():
        return path
    for directory in (path / "checkpoints", path):
        if (directory / "best" / WEIGHTS).exists():
            return directory / "best"
        found = list_checkpoints(directory)
        if found:
            return found[-1]
    raise ExaclimateError(f"{path}: no checkpoint here (expected a run dir, checkpoints/ or a ckpt-<step> dir)")


def load_for_inference(path: str | Path, precision: str | None = None):
    """(keras.Model with the trained weights, the Config it was trained with) for evaluate/predict.

    `precision` builds the model with another dtype policy than the training's (None = the training's): the
    variables are float32 under every policy, so e.g. a mixed_bfloat16 run evaluates in float32 on a CPU
    without bfloat16 instructions. The returned config carries the precision used."""
    from exascale_climate.models import build_model

    ckpt = resolve_checkpoint(path)
    try:
        import yaml

        cfg = config_from_dict(yaml.safe_load((ckpt / CONFIG).read_text()) or {})
    except OSError as e:
        raise ExaclimateError(f"{ckpt / CONFIG}: unreadable ({e})") from None
    from exascale_climate.train.rundir import run_stats

    kept = run_stats(ckpt)
    if kept is not None:  # the run's own copy, wherever this runs from (not the config's maybe-relative path)
        cfg.data.stats_file, cfg.pipeline.stage_dir = str(kept), ""
    state = read_state(ckpt)
    if precision is not None:
        cfg.train.precision = precision
    model = build_model(cfg.model, tuple(state["input_shape"]), cfg.train.precision)
    model.load_weights(str(ckpt / WEIGHTS))
    return model, cfg
