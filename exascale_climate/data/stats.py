"""Per-channel normalisation statistics and class pixel counts, computed in one streaming pass.

`stats.h5` follows the MLPerf DeepCAM file (`climate/{count, mean, sqmean, minval, maxval}`, length C) and adds
`climate/class_counts` plus the derived loss weights, so the pipeline never has to scan the data again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

import numpy as np

from exascale_climate.errors import DataError
from exascale_climate.utils.io import atomic_path
from exascale_climate.variables import NUM_CHANNELS, NUM_CLASSES, VARIABLE_NAMES

WeightScheme = Literal["inverse", "inverse_sqrt", "inverse_power", "none"]
WEIGHT_SCHEMES = ("inverse", "inverse_sqrt", "inverse_power", "none")
_STAT_FIELDS = ("count", "mean", "sqmean", "minval", "maxval")


@dataclass
class Stats:
    """Per-channel moments over all pixels of a dataset; `sqmean` is the mean of squares (E[x^2])."""

    count: np.ndarray
    mean: np.ndarray
    sqmean: np.ndarray
    minval: np.ndarray
    maxval: np.ndarray
    variables: list[str]
    class_counts: np.ndarray

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.maximum(self.sqmean - self.mean**2, 0.0))

    @property
    def class_fractions(self) -> np.ndarray:
        total = self.class_counts.sum()
        return self.class_counts / total if total else np.zeros_like(self.class_counts, dtype=np.float64)

    def select(self, channels: list[str] | None) -> "Stats":
        """The statistics of `channels` only, in that order (None or empty = all)."""
        if not channels:
            return self
        missing = [c for c in channels if c not in self.variables]
        if missing:
            raise DataError("<stats>", f"no statistics for variable(s) {missing}; have {self.variables}",
                            field=missing[0])
        idx = [self.variables.index(c) for c in channels]
        return Stats(*(getattr(self, f)[idx] for f in _STAT_FIELDS), list(channels), self.class_counts.copy())


class StatsAccumulator:
    """Streaming sums in float64: add one sample at a time, never hold the dataset."""

    def __init__(self, variables: list[str], num_classes: int = NUM_CLASSES):
        c = len(variables)
        self.variables = list(variables)
        self.count = np.zeros(c, np.float64)
        self.total = np.zeros(c, np.float64)
        self.sqtotal = np.zeros(c, np.float64)
        self.minval = np.full(c, np.inf)
        self.maxval = np.full(c, -np.inf)
        self.class_counts = np.zeros(num_classes, np.int64)

    def add(self, data: np.ndarray, labels: np.ndarray | None = None) -> None:
        flat = np.asarray(data).reshape(-1, data.shape[-1])
        # Per-sample sums relative to the sample's own mean would be marginally more exact, but float64 sums of
        # ~1e6 pixels of values up to 1e5 keep 10+ significant digits of the variance, which is plenty.
        as64 = flat.astype(np.float64)
        self.count += flat.shape[0]
        self.total += as64.sum(0)
        self.sqtotal += np.einsum("ij,ij->j", as64, as64)
        self.minval = np.minimum(self.minval, as64.min(0))
        self.maxval = np.maximum(self.maxval, as64.max(0))
        if labels is not None:
            self.class_counts += np.bincount(np.asarray(labels).ravel(), minlength=len(self.class_counts))[
                : len(self.class_counts)]

    def result(self) -> Stats:
        if not self.count.any():
            raise DataError("<stats>", "no samples to compute statistics from")
        return Stats(self.count.copy(), self.total / self.count, self.sqtotal / self.count, self.minval.copy(),
                     self.maxval.copy(), list(self.variables), self.class_counts.copy())


def compute_stats(paths: Iterable[str | Path], channels: list[str] | None = None, progress: bool = True) -> Stats:
    """Statistics of the samples in `paths` (any layout), one file in memory at a time."""
    from exascale_climate.data.samples import read_sample
    from exascale_climate.utils.progress import track

    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError("<stats>", "no sample files given")
    acc: StatsAccumulator | None = None
    items = track(paths, "stats", total=len(paths)) if progress else paths
    for path in items:
        sample = read_sample(path, channels=channels, with_labels=True)
        if acc is None:
            acc = StatsAccumulator(sample.variables)
        elif sample.variables != acc.variables:
            raise DataError(path, f"variables {sample.variables} differ from the first file's {acc.variables}",
                            field="variables")
        acc.add(sample.data, sample.labels)
    return acc.result()


def class_weights(class_counts, scheme: WeightScheme = "inverse_sqrt", power: float = 0.5) -> np.ndarray:
    """Loss weight per class from pixel counts, scaled so that the pixel-weighted mean weight is 1.

    "inverse" weights by 1/frequency (every class contributes equally to the loss), "inverse_sqrt" by
    1/sqrt(frequency) (the paper's milder choice), "inverse_power" by frequency**-power (MLPerf DeepCAM's
    reference: power 0.125). A class absent from the counts gets the largest weight of the present classes, so
    a rare event seen later is not ignored.
    """
    counts = np.asarray(class_counts, np.float64)
    if scheme not in WEIGHT_SCHEMES:
        raise DataError("<stats>", f"unknown class weighting {scheme!r}; use one of {WEIGHT_SCHEMES}",
                        field="class_weighting")
    if scheme == "none" or counts.sum() <= 0:
        return np.ones_like(counts)
    freq = counts / counts.sum()
    present = freq > 0
    weights = np.zeros_like(freq)
    exponent = {"inverse": 1.0, "inverse_sqrt": 0.5}.get(scheme, power)
    weights[present] = freq[present] ** -float(exponent)
    weights /= float((freq * weights).sum())
    weights[~present] = weights[present].max()
    return weights


def write_stats(path: str | Path, stats: Stats) -> Path:
    """Write `stats.h5` atomically (DeepCAM fields + class counts, fractions and both weight schemes)."""
    import h5py

    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            climate = f.create_group("climate")
            for name in _STAT_FIELDS:
                climate.create_dataset(name, data=np.asarray(getattr(stats, name), np.float64))
            climate.create_dataset("class_counts", data=np.asarray(stats.class_counts, np.int64))
            climate.create_dataset("class_fractions", data=stats.class_fractions)
            for scheme in ("inverse", "inverse_sqrt"):
                climate.create_dataset(f"class_weights_{scheme}", data=class_weights(stats.class_counts, scheme))
            climate.attrs["variables"] = np.array(stats.variables, dtype=h5py.string_dtype())
    return path


def read_stats(path: str | Path) -> Stats:
    """Read our `stats.h5` or a published DeepCAM one (no variable names -> the published 16-channel order)."""
    from exascale_climate.data.layouts import open_hdf5

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such statistics file")
    with open_hdf5(path) as f:
        climate = f.get("climate")
        if climate is None:
            raise DataError(path, "no `climate` group; not a stats file", field="climate")
        values = {}
        for name in _STAT_FIELDS:
            if name not in climate:
                raise DataError(path, "missing statistic", field=f"climate/{name}")
            values[name] = np.asarray(climate[name][()], np.float64).ravel()
        n = len(values["mean"])
        if any(len(v) != n for v in values.values()):
            raise DataError(path, "statistics have different lengths", field="climate")
        if "variables" in climate.attrs:
            variables = [v.decode() if isinstance(v, bytes) else str(v) for v in climate.attrs["variables"]]
        elif n == NUM_CHANNELS:
            variables = list(VARIABLE_NAMES)
        else:
            raise DataError(path, f"{n} channels but no `variables` attribute naming them", field="climate")
        counts = (np.asarray(climate["class_counts"][()], np.int64) if "class_counts" in climate
                  else np.zeros(NUM_CLASSES, np.int64))
    for name, v in values.items():
        if not np.isfinite(v).all():
            raise DataError(path, "non-finite values", field=f"climate/{name}")
    return Stats(values["count"], values["mean"], values["sqmean"], values["minval"], values["maxval"],
                 variables, counts)


def dataset_stats(directory, out=None, channels: list[str] | None = None) -> Stats:
    """`exaclimate data stats`: statistics of a sample directory, written to `out` (default DIR/../stats.h5)."""
    from exascale_climate.data.layouts import list_samples

    directory = Path(directory)
    files = list_samples(directory)
    if not files:
        raise DataError(directory, "no data-*.h5 samples")
    stats = compute_stats(files, channels=channels)
    write_stats(Path(out) if out else directory.parent / "stats.h5", stats)
    return stats


def format_stats(stats: Stats) -> str:
    lines = [f"{'variable':<8} {'mean':>12} {'std':>12} {'min':>12} {'max':>12}"]
    for i, name in enumerate(stats.variables):
        lines.append(f"{name:<8} {stats.mean[i]:12.5g} {stats.std[i]:12.5g} {stats.minval[i]:12.5g} "
                     f"{stats.maxval[i]:12.5g}")
    lines.append(f"pixels per channel: {int(stats.count[0])}")
    lines.append("class fractions: " + ", ".join(f"{f:.4%}" for f in stats.class_fractions))
    for scheme in ("inverse", "inverse_sqrt"):
        lines.append(f"class weights ({scheme}): " + ", ".join(f"{w:.4g}" for w in class_weights(stats.class_counts,
                                                                                                   scheme)))
    return "\n".join(lines)
