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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

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
    try:
        return opener(path, "r")
    except OSError as e:
        raise DataError(path, f"not a readable {kind} file (truncated or corrupt?): {e}") from None


def open_hdf5(path: Path):
    import h5py

    return _open(path, "HDF5", h5py.File)


def open_netcdf(path: Path):
    import netCDF4

    return _open(path, "netCDF", netCDF4.Dataset)


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


def netcdf_time_steps(path: str | Path) -> int:
    """How many time steps a ClimateNet/CAM5 netCDF file holds (1 when it has no time dimension)."""
    with open_netcdf(Path(path)) as nc:
        return len(nc.dimensions["time"]) if "time" in nc.dimensions else 1


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
    names = [_decode(n) for n in np.atleast_1d(names)]
    if len(names) != n_channels:
        raise DataError(path, f"`variables` names {len(names)} channels, the data has {n_channels}",
                        field=FIELDS_DATASET)
    return names


def hdf5_variables(path, f, layout: Layout) -> list[str]:
    """The channel names of an open HDF5 sample (attributes of `climate` or of its data)."""
    climate, ds = f["climate"], f[FIELDS_DATASET]
    return stored_variables(path, {**dict(climate.attrs), **dict(ds.attrs)}, HDF5_LAYOUTS[layout].n_channels(ds.shape))


def climate_attrs(climate) -> dict:
    """The `climate` group's attributes (strings decoded), without the channel names."""
    return {k: _decode(v) if isinstance(v, (bytes, str)) else v for k, v in climate.attrs.items()
            if k != "variables"}


# ------------------------------------------------------------------------------------------- listing
def list_samples(directory: str | Path) -> list[Path]:
    """The `data-*.h5` samples of a directory, sorted (temporaries and stats.h5 are not samples)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(directory, "no such directory")
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and fnmatch.fnmatch(p.name, SAMPLE_GLOB) and not is_temp_name(p))


def expand_inputs(inputs) -> list[Path]:
    """Files as given, and for each directory its data files (DATA_SUFFIXES, not stats.h5 or temporaries),
    sorted; a directory without any is an error naming it."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if not item.is_dir():
            files.append(item)
            continue
        found = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
                       and p.name != STATS_FILE and not is_temp_name(p))
        if not found:
            raise DataError(item, f"no data files ({', '.join(DATA_SUFFIXES)}) in the directory")
        files.extend(found)
    return files
