"""The checks every read makes: finite fields, label values in range, the requested channels present.

Why validate on read: a NaN or a label value of 7 found mid-epoch on 1000 ranks costs a whole allocation;
finding it on read, with the file and variable named, costs a second.
"""
from __future__ import annotations

import numpy as np

from exascale_climate.errors import DataError
from exascale_climate.variables import NUM_CLASSES


def check_finite(path, name: str, values: np.ndarray) -> None:
    """Raise naming `path` and `name` when `values` hold NaN or Inf."""
    if not np.isfinite(values).all():
        bad = values[~np.isfinite(values)]
        kinds = sorted({"NaN" if np.isnan(v) else "Inf" for v in bad[:1000].ravel()})
        raise DataError(path, f"{bad.size} non-finite value(s) ({'/'.join(kinds)})", field=name)


def all_finite(data: np.ndarray) -> bool:
    """One fast pass: NaN and Inf survive a sum, so one BLAS reduction answers for the whole array. Contiguous
    float32/64 data: the sum of squares (the values' dot product with themselves; per 768x1152x16 sample in
    16-row blocks fresh from the read, 0.5 ms against 1.5 ms for a per-pixel sum over the channels and 1.1 ms
    for np.isfinite(data).all()); otherwise the per-pixel sum in float32. An overflow of either sum can only
    give a false alarm, which the per-channel check then clears."""
    with np.errstate(over="ignore", invalid="ignore"):
        if data.dtype in (np.float32, np.float64) and data.flags.c_contiguous:
            flat = data.reshape(-1)
            return bool(np.isfinite(np.dot(flat, flat)))
        flat = data.reshape(-1, data.shape[-1])
        ones = np.ones(flat.shape[1], np.promote_types(flat.dtype, np.float32))  # float16 files: sum in float32
        return bool(np.isfinite(flat @ ones).all())


def check_fields(path, data: np.ndarray, names: list[str]) -> None:
    """(H, W, C) fields: one fast pass, and per channel only to name the bad variable."""
    if not all_finite(data):
        for i, name in enumerate(names):
            check_finite(path, name, data[..., i])


def check_labels(path, name: str, labels: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Labels must match the grid and hold only class ids 0..NUM_CLASSES-1; returns them as uint8."""
    labels = np.asarray(labels)
    if labels.shape != tuple(grid):
        raise DataError(path, f"shape {labels.shape} does not match the data grid {tuple(grid)}", field=name)
    if np.issubdtype(labels.dtype, np.floating):
        check_finite(path, name, labels)
        if not np.all(labels == np.round(labels)):
            raise DataError(path, "label values must be whole numbers", field=name)
    lo, hi = (labels.min(), labels.max()) if labels.size else (0, 0)
    if lo < 0 or hi >= NUM_CLASSES:
        raise DataError(path, f"label values {lo}..{hi} outside 0..{NUM_CLASSES - 1}", field=name)
    return labels.astype(np.uint8, copy=False)


def check_channels(path, stored: list[str], channels: list[str] | None) -> list[int]:
    """Indices of the requested `channels` among the `stored` ones (all when none are requested)."""
    if not channels:
        return list(range(len(stored)))
    missing = [c for c in channels if c not in stored]
    if missing:
        raise DataError(path, f"missing variable(s) {missing}; the file has {stored}", field=missing[0])
    return [stored.index(c) for c in channels]
