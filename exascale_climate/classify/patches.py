"""`exaclimate patches extract`: centred positive patches and event-free negatives, split by time, as HDF5.

Positives are cropped around labelled events: a TC object of the label mask (centred on its PSL minimum), an AR
object (centred on its own pixel nearest its centroid), a weather front of the front detector (data/fronts.py,
same centring). Negatives are windows of the same size holding no pixel of that class. Files are ordered by time
and the first `train_fraction` of them give the training patches, the rest the test patches, so no time step
(and no event snapshot) is in both. Longitude wraps; windows that would cross a pole are not used.

File `<out>/<pattern>.h5`: groups `train` and `test`, each with `data` (N, h, w, C) float32, `label` (N,) int8
(1 = event), `mask` (N, h, w) uint8 (that class's pixels in the window), `row`, `col` (centre pixel in the
source grid), `source` (index into the root attribute `sources`); attributes name the variables, sizes, counts,
seed, labeller settings and the tool version (provenance).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exascale_climate.classify.study import LANDMASK, PATTERNS, Pattern
from exascale_climate.config import LabellerConfig
from exascale_climate.errors import ConfigError, DataError
from exascale_climate.utils.log import get_logger

log = get_logger("classify.patches")
FORMAT = "exaclimate-patches-1"
NEG_TRIES_PER_FILE = 64


@dataclass
class Candidates:
    """Centres (row, col) of event windows and of event-free windows of one file."""

    positives: list[tuple[int, int]] = field(default_factory=list)
    negatives: list[tuple[int, int]] = field(default_factory=list)


def class_mask(pattern: str, sample, grid, labeller_cfg: LabellerConfig) -> np.ndarray:
    """The pixels of the pattern's class: labels 1 (TC) or 2 (AR) of the file, or the front detector's mask."""
    from exascale_climate.data.labeller import AR_CLASS, TC_CLASS

    if pattern == "wf":
        from exascale_climate.data.fronts import front_mask

        fields = {v: sample.data[..., i] for i, v in enumerate(sample.variables)}
        return front_mask(fields, grid, labeller_cfg)[0]
    if sample.labels is None:
        raise DataError(sample.path, "no labels: run `exaclimate data label` first", field="labels")
    return sample.labels == (TC_CLASS if pattern == "tc" else AR_CLASS)


def window_index(row: int, col: int, size: tuple[int, int], width: int) -> tuple[slice, np.ndarray]:
    """Rows (slice) and wrapped columns of the window whose centre pixel (index size//2) is (row, col)."""
    h, w = size
    r0 = row - h // 2
    return slice(r0, r0 + h), (np.arange(w) + col - w // 2) % width


def _window_sums(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Class pixels in the window centred on every pixel (NaN-free; rows without a full window get -1)."""
    h, w = size
    H, W = mask.shape
    padded = np.concatenate([mask[:, W - w // 2:], mask, mask[:, : w - w // 2]], axis=1).astype(np.int64)
    table = np.zeros((H + 1, padded.shape[1] + 1), np.int64)
    table[1:, 1:] = padded.cumsum(0).cumsum(1)
    out = np.full((H, W), -1, np.int64)
    rows = np.arange(h // 2, H - (h - h // 2) + 1)
    r0, r1 = rows - h // 2, rows - h // 2 + h
    c0 = np.arange(W)
    c1 = c0 + w
    out[rows] = (table[r1][:, c1] - table[r0][:, c1] - table[r1][:, c0] + table[r0][:, c0])
    return out


def candidates(pattern: Pattern, sample, grid, mask: np.ndarray, rng: np.random.Generator) -> Candidates:
    """Event centres and event-free window centres of one file."""
    from scipy import ndimage

    from exascale_climate.data.fronts import central_pixel
    from exascale_climate.data.grid import label_objects

    h, w = pattern.size
    H, W = mask.shape
    if h > H or w > W:
        raise ConfigError(f"patch size {h}x{w} of pattern {pattern.key} does not fit the {H}x{W} grid of "
                          f"{sample.path}; give a smaller one with --size {pattern.key}=HxW")
    out = Candidates()
    objects, n = label_objects(mask, grid.periodic)
    psl = sample.data[..., sample.variables.index("PSL")] if "PSL" in sample.variables else None
    for k, slc in enumerate(ndimage.find_objects(objects), start=1):
        if slc is None:
            continue
        r, c = np.nonzero(objects[slc] == k)
        r, c = r + slc[0].start, c + slc[1].start
        if pattern.key == "tc" and psl is not None:
            i = int(psl[r, c].argmin())
        else:
            lat0, lon0 = central_pixel(grid.lat[r], grid.lon[c])
            i = int(np.flatnonzero((grid.lat[r] == lat0) & (grid.lon[c] == lon0))[0])
        row, col = int(r[i]), int(c[i])
        if row - h // 2 >= 0 and row - h // 2 + h <= H:
            out.positives.append((row, col))
    sums = _window_sums(mask, pattern.size)
    free_rows, free_cols = np.nonzero(sums == 0)
    if free_rows.size:
        pick = rng.choice(free_rows.size, size=min(NEG_TRIES_PER_FILE, free_rows.size), replace=False)
        out.negatives = [(int(free_rows[i]), int(free_cols[i])) for i in pick]
    return out


def _read(path, pattern: Pattern, labeller_cfg):
    from exascale_climate.data.samples import read_sample
    from exascale_climate.data.grid import Grid, sample_coordinates

    needed = [v for v in pattern.variables if v != LANDMASK]
    if pattern.key == "wf":
        needed += [v for v in ("TREFHT", "PSL", "PS") if v not in needed]
    if pattern.key == "tc" and "PSL" not in needed:
        needed.append("PSL")
    sample = read_sample(path, channels=needed, with_labels=pattern.key != "wf")
    grid = Grid(*sample_coordinates(sample))
    return sample, grid, class_mask(pattern.key, sample, grid, labeller_cfg)


def _patch_fields(pattern: Pattern, sample, grid) -> np.ndarray:
    """(H, W, C) fields in the pattern's variable order (the land-sea mask from data/geography.py)."""
    from exascale_climate.data.geography import geography

    planes = []
    for v in pattern.variables:
        if v == LANDMASK:
            planes.append((geography(*grid.shape)[0] >= 0.5).astype(np.float32))
        else:
            planes.append(sample.data[..., sample.variables.index(v)].astype(np.float32))
    return np.stack(planes, axis=-1)


def parse_sizes(items) -> dict[str, tuple[int, int]]:
    """['ar=74x112', ...] -> {'ar': (74, 112)}."""
    from exascale_climate.config import parse_grid

    out = {}
    for item in items or ():
        key, _, value = item.partition("=")
        if key not in PATTERNS or not value:
            raise ConfigError(f"--size: {item!r} is not PATTERN=HxW with PATTERN one of {list(PATTERNS)}")
        out[key] = parse_grid(value)
    return out


def extract(inputs: list[str | Path], out_dir: str | Path, patterns=("tc", "ar", "wf"), counts=None,
            sizes=None, train_fraction: float = 0.8, seed: int = 0,
            labeller_cfg: LabellerConfig | None = None) -> dict:
    """Write <out_dir>/<pattern>.h5 for each pattern; returns {pattern: {split: (positives, negatives)}}.

    counts: {pattern: (positives, negatives)} over train + test (default: the study's); fewer are written when
    the files hold fewer events (the file's attributes say both).
    """
    import h5py

    from exascale_climate import __version__
    from exascale_climate.data.layouts import list_samples
    from exascale_climate.utils.io import atomic_path

    labeller_cfg = labeller_cfg or LabellerConfig()
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        files += [f for f in list_samples(p) + sorted(p.glob("data-*.nc"))] if p.is_dir() else [p]
    files = sorted(set(files), key=lambda p: p.name)
    if len(files) < 2:
        raise DataError(inputs[0] if inputs else "<inputs>", "need at least two time steps to split by time")
    if not 0.0 < train_fraction < 1.0:
        raise ConfigError(f"--train-fraction: {train_fraction} must be between 0 and 1")
    n_train = min(len(files) - 1, max(1, int(round(train_fraction * len(files)))))
    split_of = ["train"] * n_train + ["test"] * (len(files) - n_train)
    summary = {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for key in patterns:
        base = PATTERNS[key]
        pattern = dataclasses.replace(base, size=(sizes or {}).get(key, base.size))
        want_pos, want_neg = (counts or {}).get(key, (base.positives, base.negatives))
        rng = np.random.default_rng([seed, sum(map(ord, key))])
        found = []  # (file index, row, col, label)
        for i, path in enumerate(files):
            sample, grid, mask = _read(path, pattern, labeller_cfg)
            cand = candidates(pattern, sample, grid, mask, rng)
            found += [(i, r, c, 1) for r, c in cand.positives] + [(i, r, c, 0) for r, c in cand.negatives]
        chosen = {}
        for split in ("train", "test"):
            share = train_fraction if split == "train" else 1.0 - train_fraction
            rows = [f for f in found if split_of[f[0]] == split]
            pick = []
            for label, want in ((1, want_pos), (0, want_neg)):
                pool = [f for f in rows if f[3] == label]
                n = min(len(pool), int(round(want * share)))
                if n < int(round(want * share)):
                    log.warning("%s %s: %d %s available of %d asked", key, split, len(pool),
                                "positives" if label else "negatives", int(round(want * share)))
                pick += [pool[j] for j in sorted(rng.choice(len(pool), size=n, replace=False))] if n else []
            chosen[split] = sorted(pick)
        target = out_dir / f"{key}.h5"
        with atomic_path(target) as tmp:
            with h5py.File(tmp, "w") as f:
                f.attrs.update({
                    "format": FORMAT, "pattern": key, "pattern_name": pattern.name,
                    "variables": json.dumps(list(pattern.variables)), "size": list(pattern.size),
                    "requested": [want_pos, want_neg], "seed": seed, "train_fraction": train_fraction,
                    "split": "by time: the first train_fraction of the time-ordered files are train",
                    "sources": json.dumps([str(p) for p in files]),
                    "labeller": json.dumps(dataclasses.asdict(labeller_cfg)),
                    "created_by": f"exascale_climate {__version__} (exaclimate patches extract)",
                    "land_sea_mask": "data/geography.py landfrac >= 0.5" if LANDMASK in pattern.variables else "",
                })
                for split, picks in chosen.items():
                    _write_split(f.create_group(split), picks, files, pattern, labeller_cfg)
                summary[key] = {s: (sum(p[3] for p in v), sum(1 - p[3] for p in v)) for s, v in chosen.items()}
        log.info("%s: %s -> %s", key, summary[key], target)
    return summary


def _write_split(group, picks, files, pattern: Pattern, labeller_cfg) -> None:
    h, w = pattern.size
    n, c = len(picks), len(pattern.variables)
    data = group.create_dataset("data", (n, h, w, c), np.float32, chunks=(1, h, w, c) if n else None)
    masks = group.create_dataset("mask", (n, h, w), np.uint8)
    group.create_dataset("label", data=np.array([p[3] for p in picks], np.int8))
    group.create_dataset("row", data=np.array([p[1] for p in picks], np.int32))
    group.create_dataset("col", data=np.array([p[2] for p in picks], np.int32))
    group.create_dataset("source", data=np.array([p[0] for p in picks], np.int32))
    j = 0
    for i in sorted({p[0] for p in picks}):
        sample, grid, mask = _read(files[i], pattern, labeller_cfg)
        fields = _patch_fields(pattern, sample, grid)
        for _, row, col, _ in (p for p in picks if p[0] == i):
            rows, cols = window_index(row, col, pattern.size, grid.shape[1])
            data[j] = fields[rows][:, cols]
            masks[j] = mask[rows][:, cols]
            j += 1


# ----------------------------------------------------------------------------------------------- reading
@dataclass
class PatchSet:
    x: np.ndarray  # (N, h, w, C)
    y: np.ndarray  # (N,)
    variables: list[str]
    path: str
    source: np.ndarray
    row: np.ndarray
    col: np.ndarray
    mask: np.ndarray | None = None


def load_patches(path: str | Path, split: str, pattern: str | None = None, with_masks: bool = False) -> PatchSet:
    """Read one split, checking that it is a patch file of the expected pattern, variables and size."""
    from exascale_climate.data.layouts import open_hdf5

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such patch file")
    with open_hdf5(path) as f:
        if f.attrs.get("format") != FORMAT:
            raise DataError(path, f"not a patch file of `exaclimate patches extract` (format {FORMAT})", "format")
        key = str(f.attrs["pattern"])
        if pattern is not None and key != pattern:
            raise DataError(path, f"holds {key} patches, not {pattern}", field="pattern")
        expected = PATTERNS[key]
        variables = json.loads(f.attrs["variables"])
        if variables != list(expected.variables):
            raise DataError(path, f"variables {variables} are not the {key} study's {list(expected.variables)}",
                            field="variables")
        if split not in f:
            raise DataError(path, f"no {split!r} split", field=split)
        g = f[split]
        for name in ("data", "label"):
            if name not in g:
                raise DataError(path, "missing dataset", field=f"{split}/{name}")
        x = g["data"]
        size = tuple(int(v) for v in f.attrs["size"])
        if x.ndim != 4 or tuple(x.shape[1:3]) != size or x.shape[3] != len(variables):
            raise DataError(path, f"patches of shape {tuple(x.shape[1:])} do not match the file's size {size} and "
                                  f"{len(variables)} variables", field=f"{split}/data")
        data = x[...]
        if data.size and not np.isfinite(data).all():
            raise DataError(path, "non-finite values in the patches", field=f"{split}/data")
        return PatchSet(data, g["label"][...].astype(np.int64), variables, str(path), g["source"][...],
                        g["row"][...], g["col"][...], g["mask"][...] if with_masks and "mask" in g else None)


def patch_size(path: str | Path) -> tuple[int, int]:
    import h5py

    with h5py.File(path, "r") as f:
        return tuple(int(v) for v in f.attrs["size"])
