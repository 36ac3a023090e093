"""Read and write the three published sample layouts, validating everything a training job would choke on.

Layouts (see docs/DATA.md):
- "netcdf": ClimateNet / CAM5 netCDF, dims (time, lat, lon), one variable per field plus LABELS (0/1/2); one or
  many time steps per file.
- "deepcam": MLPerf HPC DeepCAM HDF5, `climate/data` (H, W, C) channels last and `climate/labels_0` (H, W).
- "gordonbell": the older SC18 HDF5 files, `climate/data` (C, H, W) channels first, `climate/labels` and a
  per-file `climate/stats` (C, 4).

Why validate here: a NaN or a label value of 7 found mid-epoch on 1000 ranks costs a whole allocation; finding
it on read, with the file and variable named, costs a second.
"""
from __future__ import annotations

import fnmatch
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from exascale_climate.errors import DataError
from exascale_climate.utils.buffers import aligned_copy, aligned_empty
from exascale_climate.utils.io import atomic_path, is_temp_name
from exascale_climate.variables import BY_NAME, LABEL_VARIABLE, NUM_CHANNELS, NUM_CLASSES, VARIABLE_NAMES

Layout = Literal["deepcam", "gordonbell", "netcdf"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
NETCDF3_SIGNATURE = b"CDF"
SAMPLE_GLOB = "data-*.h5"
STATS_FILE = "stats.h5"


@dataclass
class Sample:
    """One time step: fields channels-last in the published order (or the requested subset), and its labels."""

    data: np.ndarray  # (H, W, C)
    labels: np.ndarray | None  # (H, W) uint8 in 0..NUM_CLASSES-1
    variables: list[str]
    path: str
    time: str | None = None
    lat: np.ndarray | None = None  # (H,)
    lon: np.ndarray | None = None  # (W,)
    attrs: dict = field(default_factory=dict)

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.data.shape[0]), int(self.data.shape[1])


# --------------------------------------------------------------------------------------------- detect
def _signature(path: Path) -> bytes:
    """The file's first 8 bytes, or HDF5's signature when it sits after a user block (at 512, 1024, 2048 ...
    bytes, where the HDF5 format allows it)."""
    try:
        with open(path, "rb") as f:
            first = f.read(8)
            offset, size = 512, os.fstat(f.fileno()).st_size
            while first != HDF5_SIGNATURE and offset + 8 <= size:
                f.seek(offset)
                if f.read(8) == HDF5_SIGNATURE:
                    return HDF5_SIGNATURE
                offset *= 2
            return first
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except IsADirectoryError:
        raise DataError(path, "is a directory, not a data file") from None
    except OSError as e:
        raise DataError(path, f"cannot read ({e.strerror or e})") from None


def open_hdf5(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DataError(path, f"not a readable HDF5 file (truncated or corrupt?): {e}") from None


def detect_layout(path: str | Path) -> Layout:
    """Which layout a file has, from its content (the suffix is only a tie-breaker for netCDF-4 files)."""
    path = Path(path)
    sig = _signature(path)
    if sig.startswith(NETCDF3_SIGNATURE):
        return "netcdf"
    if sig != HDF5_SIGNATURE:
        raise DataError(path, "neither HDF5 nor netCDF (unknown signature; truncated or not a data file?)")
    with open_hdf5(path) as f:
        climate = f.get("climate")
        if climate is not None and "data" in climate:
            if "labels_0" in climate:
                return "deepcam"
            if "labels" in climate or "stats" in climate:
                return "gordonbell"
            shape = climate["data"].shape
            if len(shape) == 3 and shape[0] <= NUM_CHANNELS < shape[-1]:
                return "gordonbell"
            return "deepcam"
        # netCDF-4 files are HDF5 files whose variables are top-level datasets with dimension scales.
        if "lat" in f or "lon" in f or any(name in f for name in VARIABLE_NAMES) or "_NCProperties" in f.attrs:
            return "netcdf"
    raise DataError(path, "HDF5 file without `climate/data` and without netCDF variables; unknown layout")


# --------------------------------------------------------------------------------------------- checks
def _check_finite(path, name: str, values: np.ndarray) -> None:
    if not np.isfinite(values).all():
        bad = values[~np.isfinite(values)]
        kinds = sorted({"NaN" if np.isnan(v) else "Inf" for v in bad[:1000].ravel()})
        raise DataError(path, f"{bad.size} non-finite value(s) ({'/'.join(kinds)})", field=name)


def _all_finite(data: np.ndarray) -> bool:
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


def check_labels(path, name: str, labels: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Labels must match the grid and hold only class ids 0..NUM_CLASSES-1; returns them as uint8."""
    labels = np.asarray(labels)
    if labels.shape != tuple(grid):
        raise DataError(path, f"shape {labels.shape} does not match the data grid {tuple(grid)}", field=name)
    if np.issubdtype(labels.dtype, np.floating):
        _check_finite(path, name, labels)
        if not np.all(labels == np.round(labels)):
            raise DataError(path, "label values must be whole numbers", field=name)
    lo, hi = (labels.min(), labels.max()) if labels.size else (0, 0)
    if lo < 0 or hi >= NUM_CLASSES:
        raise DataError(path, f"label values {lo}..{hi} outside 0..{NUM_CLASSES - 1}", field=name)
    return labels.astype(np.uint8, copy=False)


def _check_channels(path, stored: list[str], channels: list[str] | None) -> list[int]:
    if not channels:
        return list(range(len(stored)))
    missing = [c for c in channels if c not in stored]
    if missing:
        raise DataError(path, f"missing variable(s) {missing}; the file has {stored}", field=missing[0])
    return [stored.index(c) for c in channels]


def _decode(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def stored_variables(path, attrs, n_channels: int) -> list[str]:
    """Channel names from the file's attributes; files without them use the published order."""
    names = attrs.get("variables")
    if names is None:
        if n_channels != NUM_CHANNELS:
            raise DataError(path, f"{n_channels} channels but no `variables` attribute naming them",
                            field="climate/data")
        return list(VARIABLE_NAMES)
    names = [_decode(n) for n in np.atleast_1d(names)]
    if len(names) != n_channels:
        raise DataError(path, f"`variables` names {len(names)} channels, the data has {n_channels}",
                        field="climate/data")
    return names


# ------------------------------------------------------------------------------------------ read HDF5
def _numeric_array(ds) -> bool:
    """A non-empty array of numbers: what is read into `empty(shape, dtype)` rather than with h5py's `ds[()]`."""
    return bool(ds.shape) and 0 not in ds.shape and ds.dtype.kind in "biuf"


ROWS_PER_READ = 16  # rows per plain read (~1.2 MB of a 1152x16 float32 field: stays in cache for on_block)


@dataclass(frozen=True)
class _Location:
    """Where the bytes of a contiguous, uncompressed, native-order numeric dataset lie in its file."""

    offset: int  # absolute (a user block included)
    shape: tuple[int, ...]
    dtype: np.dtype


def _location(ds) -> _Location | None:
    """The dataset's location, or None when it is stored otherwise (chunked, compressed, foreign byte order)."""
    if not _numeric_array(ds) or not ds.dtype.isnative:
        return None
    offset = ds.id.get_offset()  # None if chunked
    return None if offset is None else _Location(offset, tuple(ds.shape), ds.dtype)


def _read_at(path, where: _Location, name: str, empty, on_block=None, fd: int | None = None) -> np.ndarray | None:
    """The dataset at `where`, read a block of rows at a time into `empty(shape, dtype)` from `fd` (else a
    fresh descriptor of `path`); None when `on_block(block)` returns False.

    Why not h5py: `os.preadv` releases the GIL (h5py holds it for the whole read, so reader threads queue), a
    fresh descriptor keeps the kernel's readahead (after HDF5's metadata reads it treats the big read as
    random: 3x slower from a cold page cache here), and `on_block` sees each block while it is still in cache.
    """
    if fd is None:
        try:
            with open(path, "rb", buffering=0) as raw:
                return _read_at(path, where, name, empty, on_block, raw.fileno())
        except OSError as e:
            raise DataError(path, f"cannot read ({e}); the file is truncated or corrupt", field=name) from None
    out = empty(where.shape, where.dtype)
    row_bytes = out[0].nbytes
    try:
        for start in range(0, len(out), ROWS_PER_READ):
            block = out[start:start + ROWS_PER_READ]
            got = os.preadv(fd, [memoryview(block).cast("B")], where.offset + start * row_bytes)
            if got != block.nbytes:
                raise DataError(path, f"the file ends inside the dataset (row {start}); truncated?", field=name)
            if on_block is not None and not on_block(block):
                return None
    except OSError as e:
        raise DataError(path, f"cannot read ({e}); the file is truncated or corrupt", field=name) from None
    return out


def _read_contiguous(path, ds, name: str, empty, on_block=None) -> np.ndarray | None:
    """`_read_at` for an h5py dataset; None when it is not stored contiguously (or on_block said no)."""
    where = _location(ds)
    return None if where is None else _read_at(path, where, name, empty, on_block)


def _read_h5_dataset(path, ds, name: str, empty=aligned_empty) -> np.ndarray:
    """The whole dataset, into `empty(shape, dtype)` (an aligned buffer by default: utils/buffers.py says why)."""
    out = _read_contiguous(path, ds, name, empty)
    if out is not None:
        return out
    try:
        if not _numeric_array(ds):
            return ds[()]
        out = empty(ds.shape, ds.dtype)
        ds.read_direct(out)
        return out
    except (OSError, ValueError) as e:
        raise DataError(path, f"cannot read ({e}); the file is truncated or corrupt", field=name) from None


def _read_fields_in_one_pass(path, where: _Location, empty, transform, fd: int | None = None) -> np.ndarray | None:
    """Float32 (H, W, C) fields checked for NaN/Inf and transformed block by block as they are read, while each
    block is in cache: one pass over memory instead of three. None: not possible here, or a non-finite block
    (the general path then names the variable)."""
    if where.dtype != np.dtype("=f4") or len(where.shape) != 3:
        return None

    def check_and_transform(block):
        if not _all_finite(block):
            return False
        if transform is not None:
            transform(block)
        return True

    return _read_at(path, where, "climate/data", empty, check_and_transform, fd)


# ------------------------------------------------------------------------------------------ known files
@dataclass(frozen=True)
class _KnownFile:
    """What a read learned about a DeepCAM file whose fields are contiguous float32: enough to read it again,
    while it is unchanged, without HDF5's metadata reads (2 file opens and ~30 attribute and group lookups per
    sample, all holding the GIL, so that reader threads queue behind each other; 1.5x the reader throughput).
    Unchanged means the same device, inode, size and modification time: every file this toolkit writes is
    renamed into place (a new inode); only an in-place rewrite of the same size within the file system's
    timestamp granularity could go unnoticed."""

    identity: tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns: a rewrite or rename changes it
    fields: _Location
    labels: tuple[str, _Location] | None
    variables: tuple[str, ...]
    time: str | None
    lat: np.ndarray | None
    lon: np.ndarray | None
    attrs: dict


KNOWN_FILES_LIMIT = 65536  # ~1 KB each (coordinates are shared); the paper's 63K training samples fit
SHARED_COORDINATES_LIMIT = 256  # distinct lat/lon vectors kept once each (grids, crops)
_known_files: dict[str, _KnownFile] = {}
_known_coordinates: dict[bytes, np.ndarray] = {}
_known_lock = threading.Lock()


def _shared_coordinate(values: np.ndarray | None) -> np.ndarray | None:
    """A read-only copy of a lat or lon vector, one per distinct vector (up to SHARED_COORDINATES_LIMIT of
    them), so 60,000 known files on one grid keep one lat between them."""
    if values is None:
        return None
    key = values.dtype.str.encode() + values.tobytes()
    with _known_lock:
        shared = _known_coordinates.get(key)
        if shared is None:
            shared = values.copy()
            shared.setflags(write=False)
            if len(_known_coordinates) < SHARED_COORDINATES_LIMIT:
                _known_coordinates[key] = shared
        return shared


def _identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def _remember(path: Path, known: _KnownFile) -> None:
    """Keep `known` unless the file changed while it was read."""
    try:
        if _identity(os.stat(path)) != known.identity:
            return
    except OSError:
        return
    with _known_lock:
        if len(_known_files) >= KNOWN_FILES_LIMIT:
            _known_files.pop(next(iter(_known_files)))
        _known_files[str(path)] = known


def _read_known(path: Path, channels, with_labels: bool, empty, transform) -> Sample | None:
    """A read of a known, unchanged file straight from its bytes; None when the file is unknown or changed,
    the request differs from what is known, or a block is not finite (the full read then names the variable).
    The identity is checked on the descriptor that is read, so a file replaced meanwhile is never misread."""
    known = _known_files.get(str(path))
    if known is None or (with_labels and known.labels is None) or (channels and tuple(channels) != known.variables):
        return None
    try:
        with open(path, "rb", buffering=0) as raw:
            if _identity(os.fstat(raw.fileno())) != known.identity:
                return None
            data = _read_fields_in_one_pass(path, known.fields, empty, transform, raw.fileno())
            if data is None:
                return None
            labels = None
            if with_labels:
                name, where = known.labels
                raw_labels = _read_at(path, where, name, empty, fd=raw.fileno())
                labels = check_labels(path, name, raw_labels, data.shape[:2])
    except OSError:
        return None  # vanished meanwhile: the full read reports it
    lat, lon = (None if a is None else a.copy() for a in (known.lat, known.lon))
    return Sample(data, labels, list(known.variables), str(path), known.time, lat, lon, dict(known.attrs))


def _read_fields_checked(path, ds, channels_first: bool, index: list[int], stored: list[str], empty,
                         transform) -> np.ndarray:
    """General path: any layout, channel subset or dtype; NaN/Inf named by variable. With a transform the
    fields come back as float32 (normalising float16 in float16 would lose precision)."""
    raw = _read_h5_dataset(path, ds, "climate/data", empty)
    data = np.moveaxis(raw, 0, -1) if channels_first else raw
    if index != list(range(len(stored))):
        data = data[..., index]
    data = aligned_copy(data, np.float32 if transform is not None else None)  # copies only when it must
    if not _all_finite(data):  # per channel only to name the bad variable
        for i, c in enumerate(index):
            _check_finite(path, stored[c], data[..., i])
    if transform is not None:
        transform(data)
    return data


def _read_hdf5(path: Path, layout: Layout, channels, with_labels, empty, transform) -> Sample:
    identity = _identity(os.stat(path))
    with open_hdf5(path) as f:
        climate = f["climate"]
        ds = climate["data"]
        if ds.ndim != 3:
            raise DataError(path, f"expected 3 dimensions, got shape {ds.shape}", field="climate/data")
        channels_first = layout == "gordonbell"
        n_channels = ds.shape[0] if channels_first else ds.shape[-1]
        stored = stored_variables(path, {**dict(climate.attrs), **dict(ds.attrs)}, n_channels)
        index = _check_channels(path, stored, channels)
        data = None
        fields = None if channels_first or index != list(range(n_channels)) else _location(ds)
        if fields is not None:
            data = _read_fields_in_one_pass(path, fields, empty, transform)
        if data is None:
            fields = None
            data = _read_fields_checked(path, ds, channels_first, index, stored, empty, transform)
        grid = data.shape[:2]
        label_name = "labels" if channels_first else "labels_0"
        label_where = _location(climate[label_name]) if label_name in climate else None
        labels = None
        if with_labels:
            if label_name not in climate:
                raise DataError(path, "no labels in the file", field=f"climate/{label_name}")
            raw_labels = _read_h5_dataset(path, climate[label_name], f"climate/{label_name}", empty)
            labels = check_labels(path, f"climate/{label_name}", raw_labels, grid)
        attrs = {k: _decode(v) if isinstance(v, (bytes, str)) else v for k, v in climate.attrs.items()
                 if k != "variables"}
        if channels_first and "stats" in climate:
            attrs["stats"] = _read_h5_dataset(path, climate["stats"], "climate/stats")
        lat = climate["lat"][()] if "lat" in climate else None
        lon = climate["lon"][()] if "lon" in climate else None
    time = attrs.pop("time", None) or None
    if fields is not None:
        labels_known = (f"climate/{label_name}", label_where) if label_where else None
        _remember(path, _KnownFile(identity, fields, labels_known, tuple(stored), time, _shared_coordinate(lat),
                                   _shared_coordinate(lon), dict(attrs)))
    return Sample(data, labels, [stored[c] for c in index], str(path), time, lat, lon, attrs)


# ---------------------------------------------------------------------------------------- read netCDF
def open_netcdf(path: Path):
    import netCDF4

    try:
        return netCDF4.Dataset(path, "r")
    except OSError as e:
        raise DataError(path, f"not a readable netCDF file (truncated or corrupt?): {e}") from None


def netcdf_time_steps(path: str | Path) -> int:
    """How many time steps a ClimateNet/CAM5 netCDF file holds (1 when it has no time dimension)."""
    with open_netcdf(Path(path)) as nc:
        return len(nc.dimensions["time"]) if "time" in nc.dimensions else 1


def _nc_field(path, nc, name: str, time_index: int, grid: tuple[int, int] | None) -> np.ndarray:
    var = nc.variables[name]
    dims = var.dimensions
    try:
        if len(dims) == 3 and dims[0] == "time":
            if time_index >= var.shape[0]:
                raise DataError(path, f"time index {time_index} out of range (0..{var.shape[0] - 1})", field=name)
            values = var[time_index]
        elif len(dims) == 2:
            values = var[:]
        else:
            raise DataError(path, f"expected dimensions (time, lat, lon) or (lat, lon), got {dims}", field=name)
    except (OSError, RuntimeError, IndexError) as e:
        raise DataError(path, f"cannot read ({e}); the file is truncated or corrupt", field=name) from None
    if np.ma.isMaskedArray(values):  # fill values are missing data: report them like NaN
        values = values.astype(np.float64).filled(np.nan) if values.mask.any() else values.data
    values = np.asarray(values)
    if grid is not None and values.shape != tuple(grid):
        raise DataError(path, f"shape {values.shape} does not match the grid {tuple(grid)}", field=name)
    return values


def _time_string(nc, time_index: int) -> str | None:
    if "time" not in nc.variables:
        return None
    tvar = nc.variables["time"]
    try:
        value = tvar[time_index] if tvar.ndim else tvar[()]
        units = getattr(tvar, "units", None)
        if units:
            import cftime

            date = cftime.num2date(value, units, calendar=getattr(tvar, "calendar", "standard"))
            return date.isoformat()
        return str(value)
    except Exception:  # an undecodable time axis is metadata, not a reason to reject the fields
        return None


def _read_netcdf(path: Path, channels, with_labels, time_index: int) -> Sample:
    with open_netcdf(path) as nc:
        nc.set_auto_mask(True)
        names = list(channels) if channels else list(VARIABLE_NAMES)
        missing = [n for n in names if n not in nc.variables]
        if missing:
            raise DataError(path, f"missing variable(s) {missing}", field=missing[0])
        lat = np.asarray(nc.variables["lat"][:]) if "lat" in nc.variables else None
        lon = np.asarray(nc.variables["lon"][:]) if "lon" in nc.variables else None
        grid = (len(lat), len(lon)) if lat is not None and lon is not None else None
        first = _nc_field(path, nc, names[0], time_index, grid)
        if first.ndim != 2:
            raise DataError(path, f"expected a 2-D field per time step, got {first.shape}", field=names[0])
        grid = first.shape
        data = np.empty(grid + (len(names),), np.float32)
        for i, name in enumerate(names):
            values = first if i == 0 else _nc_field(path, nc, name, time_index, grid)
            _check_finite(path, name, values)
            data[..., i] = values
        labels = None
        if with_labels:
            if LABEL_VARIABLE not in nc.variables:
                raise DataError(path, "no labels in the file", field=LABEL_VARIABLE)
            raw = _nc_field(path, nc, LABEL_VARIABLE, time_index, grid)
            labels = check_labels(path, LABEL_VARIABLE, raw, grid)
        attrs = {k: nc.getncattr(k) for k in nc.ncattrs()}
        if "time" in nc.variables:  # the time axis's calendar matters to anyone writing dates back out
            for key in ("units", "calendar"):
                if hasattr(nc.variables["time"], key):
                    attrs.setdefault(f"time_{key}" if key == "units" else key, getattr(nc.variables["time"], key))
        time = _time_string(nc, time_index)
    return Sample(data, labels, names, str(path), time, lat, lon, attrs)


# ------------------------------------------------------------------------------------------- read any
def read_sample(path: str | Path, channels: list[str] | None = None, with_labels: bool = True,
                time_index: int = 0, empty=aligned_empty, transform=None) -> Sample:
    """Read one validated sample from any of the three layouts (`time_index` selects a step in netCDF).

    HDF5 arrays are read into `empty(shape, dtype)`; the pipeline passes a `utils.buffers.BufferPool`'s.
    `transform`: an in-place function of (h, W, C) float32 fields, applied after validation (the pipeline's
    normalisation; on the fast path block by block while the rows are in cache); the data are then float32.
    """
    path = Path(path)
    if channels:
        unknown = [c for c in channels if c not in BY_NAME]
        if unknown:
            raise DataError(path, f"unknown variable(s) {unknown}; allowed: {list(VARIABLE_NAMES)}",
                            field=unknown[0])
    known = _read_known(path, channels, with_labels, empty, transform)
    if known is not None:
        return known
    layout = detect_layout(path)
    if layout == "netcdf":
        sample = _read_netcdf(path, channels, with_labels, time_index)
        if transform is not None:
            sample.data = aligned_copy(sample.data, np.float32)
            transform(sample.data)
        return sample
    return _read_hdf5(path, layout, channels, with_labels, empty, transform)


def read_labels(path: str | Path, time_index: int = 0) -> np.ndarray:
    """Only the labels of a sample (cheap: no field is read); validated like in read_sample."""
    path = Path(path)
    layout = detect_layout(path)
    if layout == "netcdf":
        with open_netcdf(path) as nc:
            if LABEL_VARIABLE not in nc.variables:
                raise DataError(path, "no labels in the file", field=LABEL_VARIABLE)
            raw = _nc_field(path, nc, LABEL_VARIABLE, time_index, None)
        return check_labels(path, LABEL_VARIABLE, raw, raw.shape)
    name = "labels" if layout == "gordonbell" else "labels_0"
    with open_hdf5(path) as f:
        if name not in f["climate"]:
            raise DataError(path, "no labels in the file", field=f"climate/{name}")
        ds = f["climate"]["data"]
        grid = ds.shape[1:] if layout == "gordonbell" else ds.shape[:2]
        raw = _read_h5_dataset(path, f["climate"][name], f"climate/{name}")
    return check_labels(path, f"climate/{name}", raw, grid)


# ---------------------------------------------------------------------------------------------- write
def _compression_args(compression: str | None) -> dict:
    """None, "gzip", "gzip:<level>" or "lzf" -> h5py keyword arguments."""
    if not compression or compression == "none":
        return {}
    if compression == "lzf":
        return {"compression": "lzf"}
    if compression.startswith("gzip"):
        level = int(compression.split(":", 1)[1]) if ":" in compression else 4
        return {"compression": "gzip", "compression_opts": level}
    raise DataError("<options>", f"unknown compression {compression!r}; use none, gzip, gzip:<0-9> or lzf",
                    field="compression")


def write_deepcam_sample(path: str | Path, data: np.ndarray, labels: np.ndarray | None, variables: list[str], *,
                         source: str = "", time: str | None = None, lat: np.ndarray | None = None,
                         lon: np.ndarray | None = None, dtype: str = "float32", compression: str | None = None,
                         chunks=None, attrs: dict | None = None) -> Path:
    """Write one DeepCAM-layout sample atomically: `climate/data` (H, W, C), `climate/labels_0` (H, W).

    `chunks`: None (contiguous unless compressed), True (h5py's guess), or a (h, w, c) tuple. `attrs`: extra
    string/number attributes of `climate` (e.g. label_source, so evaluation knows where labels came from).
    """
    import h5py

    path = Path(path)
    data = np.asarray(data)
    if data.ndim != 3 or data.shape[-1] != len(variables):
        raise DataError(path, f"data shape {data.shape} does not match {len(variables)} variables",
                        field="climate/data")
    if dtype not in ("float32", "float16"):
        raise DataError(path, f"dtype {dtype!r} not supported; use float32 or float16", field="climate/data")
    if dtype == "float16":  # PS/PSL in Pa do not fit: refuse instead of silently writing Inf
        peak = np.abs(data.reshape(-1, data.shape[-1])).max(axis=0) if data.size else np.zeros(len(variables))
        too_big = [v for v, m in zip(variables, peak) if m > np.finfo(np.float16).max]
        if too_big:
            raise DataError(path, f"values of {too_big} exceed the float16 range (65504); use dtype float32 or "
                                  "leave these channels out", field=too_big[0])
    comp = _compression_args(compression)
    if comp and chunks is None:
        chunks = True
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            climate = f.create_group("climate")
            climate.create_dataset("data", data=data.astype(dtype, copy=False), chunks=chunks, **comp)
            if labels is not None:
                labels = check_labels(path, "climate/labels_0", labels, data.shape[:2])
                lab_chunks = None if chunks in (None, True) else tuple(chunks[:2])
                climate.create_dataset("labels_0", data=labels, chunks=lab_chunks if comp else None, **comp)
            climate.attrs["variables"] = np.array(variables, dtype=h5py.string_dtype())
            climate.attrs["source"] = source
            for key, value in (attrs or {}).items():
                climate.attrs[key] = value
            if time:
                climate.attrs["time"] = time
            if lat is not None:
                climate.create_dataset("lat", data=np.asarray(lat, np.float64))
            if lon is not None:
                climate.create_dataset("lon", data=np.asarray(lon, np.float64))
    return path


def write_gordonbell_sample(path: str | Path, data: np.ndarray, labels: np.ndarray, variables: list[str]) -> Path:
    """The SC18 layout (channels first, per-file (C, 4) stats of mean, max, min, std); for interoperability."""
    import h5py

    path = Path(path)
    data = np.asarray(data, np.float32)
    flat = data.reshape(-1, data.shape[-1]).astype(np.float64)
    stats = np.stack([flat.mean(0), flat.max(0), flat.min(0), flat.std(0)], axis=1)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            climate = f.create_group("climate")
            climate.create_dataset("data", data=np.moveaxis(data, -1, 0))
            climate.create_dataset("labels", data=check_labels(path, "climate/labels", labels, data.shape[:2]))
            climate.create_dataset("stats", data=stats)
            climate.attrs["variables"] = np.array(variables, dtype=h5py.string_dtype())
    return path


def write_netcdf_sample(path: str | Path, data: np.ndarray, labels: np.ndarray | None, variables: list[str], *,
                        lat: np.ndarray, lon: np.ndarray, time_hours: float | None = None,
                        time_units: str = "hours since 2000-01-01 00:00:00", calendar: str = "noleap",
                        attrs: dict | None = None, compression: bool = False) -> Path:
    """One time step in the ClimateNet/CAM5 layout (dims time, lat, lon; CF units/long_name), atomically."""
    import netCDF4

    path = Path(path)
    data = np.asarray(data)
    if data.ndim != 3 or data.shape[-1] != len(variables) or data.shape[:2] != (len(lat), len(lon)):
        raise DataError(path, f"data shape {data.shape} does not match {len(variables)} variables on a "
                              f"{len(lat)}x{len(lon)} grid", field="data")
    with atomic_path(path) as tmp:
        with netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
            nc.createDimension("time", 1)
            nc.createDimension("lat", len(lat))
            nc.createDimension("lon", len(lon))
            t = nc.createVariable("time", "f8", ("time",))
            t.units, t.calendar, t.long_name = time_units, calendar, "time"
            t[:] = [0.0 if time_hours is None else time_hours]
            la = nc.createVariable("lat", "f8", ("lat",))
            la.units, la.long_name, la.standard_name = "degrees_north", "latitude", "latitude"
            la[:] = lat
            lo = nc.createVariable("lon", "f8", ("lon",))
            lo.units, lo.long_name, lo.standard_name = "degrees_east", "longitude", "longitude"
            lo[:] = lon
            for i, name in enumerate(variables):
                var = nc.createVariable(name, "f4", ("time", "lat", "lon"), zlib=compression)
                meta = BY_NAME.get(name)
                if meta:
                    var.units, var.long_name = meta.units, meta.long_name
                var[0] = data[..., i]
            if labels is not None:
                lab = nc.createVariable(LABEL_VARIABLE, "i1", ("time", "lat", "lon"), zlib=compression)
                lab.long_name = "0: background, 1: tropical cyclone, 2: atmospheric river"
                lab.flag_values = np.arange(NUM_CLASSES, dtype=np.int8)
                lab.flag_meanings = "background tropical_cyclone atmospheric_river"
                lab[0] = check_labels(path, LABEL_VARIABLE, labels, data.shape[:2])
            for key, value in (attrs or {}).items():
                nc.setncattr(key, value)
    return path


# ------------------------------------------------------------------------------------------- listing
def list_samples(directory: str | Path) -> list[Path]:
    """The `data-*.h5` samples of a directory, sorted (temporaries and stats.h5 are not samples)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(directory, "no such directory")
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and fnmatch.fnmatch(p.name, SAMPLE_GLOB) and not is_temp_name(p))
