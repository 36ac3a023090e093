"""The three published sample layouts: how to recognise a file's layout and where each layout keeps its arrays.

Layouts (see docs/DATA.md):
- "netcdf": ClimateNet / CAM5 netCDF, dims (time, lat, lon), one variable per field plus LABELS (0/1/2); one or
  many time steps per file.
- "deepcam": MLPerf HPC DeepCAM HDF5, `climate/data` (H, W, C) channels last and `climate/labels_0` (H, W).
- "gordonbell": the older SC18 HDF5 files, `climate/data` (C, H, W) channels first, `climate/labels` and a
  per-file `climate/stats` (C, 4).

Every reader, writer, labeller and inspector asks this module where a layout keeps its fields and labels, so
the naming lives in one place.
"""
from __future__ import annotations

import fnmatch
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from exascale_climate.data.validate import check_declared_size, check_variable_names, dtype_problem, unit_conversion
from exascale_climate.errors import DataError
from exascale_climate.utils.io import is_temp_name
from exascale_climate.variables import NUM_CHANNELS, VARIABLE_NAMES

Layout = Literal["deepcam", "gordonbell", "netcdf"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
NETCDF3_SIGNATURE = b"CDF"
SAMPLE_GLOB = "data-*.h5"
STATS_FILE = "stats.h5"
DATA_SUFFIXES = (".nc", ".nc4", ".h5", ".hdf5")  # what a directory given to convert or label contributes
FIELDS_DATASET = "climate/data"


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


@dataclass(frozen=True)
class HDF5Layout:
    """Where an HDF5 layout keeps its arrays: the fields' axis order and the labels' dataset."""

    channels_first: bool
    labels: str  # the labels' dataset, e.g. "climate/labels_0"

    def n_channels(self, shape) -> int:
        return int(shape[0] if self.channels_first else shape[-1])

    def grid(self, shape) -> tuple[int, int]:
        return tuple(int(n) for n in (shape[1:] if self.channels_first else shape[:2]))

    def channels_last(self, fields: np.ndarray) -> np.ndarray:
        """(H, W, C) view of the stored fields."""
        return np.moveaxis(fields, 0, -1) if self.channels_first else fields


HDF5_LAYOUTS: dict[str, HDF5Layout] = {
    "deepcam": HDF5Layout(channels_first=False, labels="climate/labels_0"),
    "gordonbell": HDF5Layout(channels_first=True, labels="climate/labels"),
}


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


def _open(path: Path, kind: str, opener):
    from exascale_climate.utils.io import library_path

    try:
        with library_path(path) as name:  # the library opens a descriptor of its own
            return opener(name, "r")
    except OSError as e:
        raise DataError(path, f"not a readable {kind} file (truncated or corrupt?): {e}") from None


def open_hdf5(path: Path):
    import h5py

    return _open(path, "HDF5", h5py.File)


@contextmanager
def hdf5_errors(path):
    """HDF5's own errors on corrupt metadata or data (RuntimeError, OSError, KeyError, ...) as one DataError
    naming the file."""
    try:
        yield
    except (RuntimeError, OSError, KeyError, ValueError, TypeError) as e:
        raise DataError(path, f"corrupt HDF5 file ({type(e).__name__}: {e})") from e


def member(path, group, name: str, kind: str):
    """`group[name]` if it is a `kind` ("group" or "dataset"), None if absent; a dangling soft or external link
    or an object of the other kind is an error naming it."""
    import h5py

    where = f"{group.name.strip('/')}/{name}".lstrip("/")
    link = group.get(name, getlink=True)
    if link is None:
        return None
    try:
        obj = group[name]
    except (KeyError, OSError, RuntimeError, ValueError) as e:
        if isinstance(link, h5py.SoftLink):
            raise DataError(path, f"dangling soft link to {link.path}", field=where) from None
        if isinstance(link, h5py.ExternalLink):
            raise DataError(path, f"dangling external link to {link.filename}:{link.path}", field=where) from None
        raise DataError(path, f"corrupt HDF5 object ({type(e).__name__}: {e})", field=where) from e
    if not isinstance(obj, h5py.Group if kind == "group" else h5py.Dataset):
        other = "group" if isinstance(obj, h5py.Group) else "dataset" if isinstance(obj, h5py.Dataset) else "type"
        raise DataError(path, f"is a {other}, expected a {kind}", field=where)
    return obj


def check_array(path, ds, name: str, rank: int, file_size: int, shape=None) -> None:
    """A dataset of real numbers, of `rank` (and `shape`), not empty, and not larger than the file can hold."""
    if ds.shape is None or len(ds.shape) != rank:
        got = "a null dataspace" if ds.shape is None else "a scalar" if ds.shape == () else f"shape {ds.shape}"
        raise DataError(path, f"expected {rank} dimensions, got {got}", field=name)
    if problem := dtype_problem(ds.dtype):
        raise DataError(path, problem, field=name)
    if 0 in ds.shape:
        raise DataError(path, f"zero-size array {ds.shape}", field=name)
    if shape is not None and tuple(ds.shape) != tuple(shape):
        raise DataError(path, f"shape {ds.shape} does not match the data grid {tuple(shape)}", field=name)
    check_declared_size(path, ds, name, file_size)


def check_hdf5(path, f, layout: Layout, file_size: int) -> list[str]:
    """The whole structure of an open DeepCAM / Gordon Bell sample, from metadata only (nothing is read but
    attributes): kinds, ranks, dtypes, shapes against the grid, sizes against the file, channel names.
    Returns the channel names."""
    where = HDF5_LAYOUTS[layout]
    climate = member(path, f, "climate", "group")
    ds = member(path, climate, "data", "dataset") if climate is not None else None
    if ds is None:
        raise DataError(path, "no fields in the file", field=FIELDS_DATASET)
    check_array(path, ds, FIELDS_DATASET, 3, file_size)
    names = hdf5_variables(path, f, layout)
    grid = where.grid(ds.shape)
    labels = member(path, climate, where.labels.split("/")[-1], "dataset")
    if labels is not None:
        check_array(path, labels, where.labels, 2, file_size, grid)
    for coord, n in (("lat", grid[0]), ("lon", grid[1])):
        values = member(path, climate, coord, "dataset")
        if values is not None:
            check_array(path, values, f"climate/{coord}", 1, file_size, (n,))
    stats = member(path, climate, "stats", "dataset") if where.channels_first else None
    if stats is not None:
        check_array(path, stats, "climate/stats", 2, file_size, (len(names), 4))
    return names


def check_netcdf3_length(path: Path) -> None:
    """A netCDF-3 (classic or 64-bit offset) file must hold every record its header declares: the netCDF library
    reads missing records as zeros. scipy's reader maps each variable onto the file by the header's offsets and
    record count (no data read), and fails when the file is too short."""
    import scipy.io

    with open(path, "rb") as f:
        if f.read(4) not in (b"CDF\x01", b"CDF\x02"):
            return  # netCDF-4 (HDF5: its own errors) or CDF-5 (scipy cannot parse it)
    try:
        with scipy.io.netcdf_file(path, "r", mmap=True):
            pass
    except (ValueError, IndexError, TypeError) as e:
        raise DataError(path, f"truncated netCDF-3 file: the header declares more data than its "
                        f"{os.path.getsize(path):,} bytes hold ({e})") from None
    except Exception as e:  # noqa: BLE001 - scipy's parser on a corrupt header: KeyError, struct.error, ...
        raise DataError(path, f"corrupt netCDF-3 header ({type(e).__name__}: {e})") from None


def open_netcdf(path: Path):
    import netCDF4

    check_netcdf3_length(path)
    return _open(path, "netCDF", netCDF4.Dataset)


def detect_layout(path: str | Path) -> Layout:
    """Which layout a file has, from its content (the suffix is only a tie-breaker for netCDF-4 files)."""
    path = Path(path)
    sig = _signature(path)
    if sig.startswith(NETCDF3_SIGNATURE):
        return "netcdf"
    if sig != HDF5_SIGNATURE:
        raise DataError(path, "neither HDF5 nor netCDF (unknown signature; truncated or not a data file?)")
    with open_hdf5(path) as f, hdf5_errors(path):
        climate = member(path, f, "climate", "group")
        if climate is not None and member(path, climate, "data", "dataset") is not None:
            if "labels_0" in climate:
                return "deepcam"
            if "labels" in climate or "stats" in climate:
                return "gordonbell"
            shape = climate["data"].shape or ()
            if len(shape) == 3 and shape[0] <= NUM_CHANNELS < shape[-1]:
                return "gordonbell"
            return "deepcam"
        # netCDF-4 files are HDF5 files whose variables are top-level datasets with dimension scales.
        if "lat" in f or "lon" in f or any(name in f for name in VARIABLE_NAMES) or "_NCProperties" in f.attrs:
            return "netcdf"
    raise DataError(path, "HDF5 file without `climate/data` and without netCDF variables; unknown layout")


def netcdf_time_steps(path: str | Path) -> int:
    """How many time steps a ClimateNet/CAM5 netCDF file holds (1 when it has no time dimension)."""
    with open_netcdf(Path(path)) as nc:
        steps = len(nc.dimensions["time"]) if "time" in nc.dimensions else 1
    if steps == 0:  # else convert writes nothing and label rewrites the file, both "successfully"
        raise DataError(path, "zero time records", field="time")
    return steps


def time_steps(path: str | Path) -> int:
    """Samples in a file of any layout: the netCDF time steps, else 1."""
    return netcdf_time_steps(path) if detect_layout(path) == "netcdf" else 1


# ------------------------------------------------------------------------------------------ variables
def _decode(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def stored_variables(path, attrs, n_channels: int) -> list[str]:
    """Channel names from the file's attributes; files without them use the published order."""
    names = attrs.get("variables")
    if names is None:
        if n_channels != NUM_CHANNELS:
            raise DataError(path, f"{n_channels} channels but no `variables` attribute naming them",
                            field=FIELDS_DATASET)
        return list(VARIABLE_NAMES)
    names = check_variable_names(path, names, FIELDS_DATASET)
    if len(names) != n_channels:
        raise DataError(path, f"`variables` names {len(names)} channels, the data has {n_channels}",
                        field=FIELDS_DATASET)
    return names


def hdf5_variables(path, f, layout: Layout) -> list[str]:
    """The channel names of an open HDF5 sample (attributes of `climate` or of its data)."""
    climate, ds = f["climate"], f[FIELDS_DATASET]
    return stored_variables(path, {**dict(climate.attrs), **dict(ds.attrs)}, HDF5_LAYOUTS[layout].n_channels(ds.shape))


UNITS_ATTRIBUTE = "units"  # per channel, beside `variables` (our writers); the published files have none


def hdf5_units(path, f, names: list[str]) -> list[str]:
    """Per channel the units an HDF5 sample records (attribute `units` of `climate` or of its data, one string
    per channel or one for all); "" where none are recorded, which means the published units (variables.py)."""
    climate, ds = f["climate"], f[FIELDS_DATASET]
    units = ds.attrs.get(UNITS_ATTRIBUTE, climate.attrs.get(UNITS_ATTRIBUTE))
    if units is None:
        return [""] * len(names)
    decoded = []
    for u in np.atleast_1d(np.asarray(units, dtype=object)).ravel():
        if isinstance(u, (bytes, np.bytes_)):
            try:
                u = bytes(u).decode()
            except UnicodeDecodeError:
                raise DataError(path, f"`units` attribute holds bytes that are not UTF-8: {bytes(u)[:40]!r}",
                                field=FIELDS_DATASET) from None
        if not isinstance(u, str):
            raise DataError(path, f"`units` attribute holds {type(u).__name__} {u!r}, expected unit strings",
                            field=FIELDS_DATASET)
        decoded.append(u)
    if len(decoded) == 1:
        decoded *= len(names)
    if len(decoded) != len(names):
        raise DataError(path, f"`units` names {len(decoded)} units for {len(names)} channels", field=FIELDS_DATASET)
    return decoded


def hdf5_conversions(path, f, names: list[str]) -> list[tuple[float, float] | None]:
    """Per channel (scale, offset) from the recorded units to the canonical ones, None where none is needed;
    units that cannot be converted are an error naming the file and variable."""
    return [unit_conversion(path, n, u) for n, u in zip(names, hdf5_units(path, f, names))]


def climate_attrs(climate) -> dict:
    """The `climate` group's attributes (strings decoded), without the channel names and units.

    The items are read out first: h5py's `attrs.items()` is a generator that holds h5py's global lock while it is
    suspended, so a decode error raised inside the loop left it suspended in a reference cycle (the exception's
    traceback) with the lock held until the next garbage collection, and every other thread's h5py call (stage's
    copy threads, the pipeline's readers) waited for it (found by the fuzzer)."""
    items = list(climate.attrs.items())
    return {k: _decode(v) if isinstance(v, (bytes, str)) else v for k, v in items
            if k not in ("variables", UNITS_ATTRIBUTE)}


# ------------------------------------------------------------------------------------------- listing
def list_samples(directory: str | Path) -> list[Path]:
    """The `data-*.h5` samples of a directory, sorted (temporaries and stats.h5 are not samples)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(directory, "no such directory")
    found = sorted(p for p in directory.iterdir() if fnmatch.fnmatch(p.name, SAMPLE_GLOB) and not is_temp_name(p))
    check_dangling(found)
    return [p for p in found if p.is_file()]


def check_dangling(paths) -> None:
    """A symbolic link whose target is gone is an error naming it, not a sample silently left out."""
    for p in paths:
        if p.is_symlink() and not p.exists():
            raise DataError(p, f"dangling symbolic link (its target {os.readlink(p)} does not exist)")


def expand_inputs(inputs) -> list[Path]:
    """Files as given, and for each directory its data files (DATA_SUFFIXES, not stats.h5 or temporaries),
    sorted; a directory without any is an error naming it."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if not item.is_dir():
            files.append(item)
            continue
        found = sorted(p for p in item.iterdir() if p.suffix.lower() in DATA_SUFFIXES
                       and p.name != STATS_FILE and not is_temp_name(p))
        check_dangling(found)
        found = [p for p in found if p.is_file()]
        if not found:
            raise DataError(item, f"no data files ({', '.join(DATA_SUFFIXES)}) in the directory")
        files.extend(found)
    return files
