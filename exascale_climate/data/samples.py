"""Read one validated sample (fields and labels) from any of the three layouts.

HDF5 fields are read from their file offset where that is safe (data/rawread.py), else through h5py; netCDF
through netCDF4. Every read is validated (data/validate.py), so a bad file is named on read, not mid-epoch.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from exascale_climate.data import rawread
from exascale_climate.data.layouts import (
    FIELDS_DATASET,
    HDF5_LAYOUTS,
    Layout,
    Sample,
    check_hdf5,
    climate_attrs,
    detect_layout,
    hdf5_conversions,
    hdf5_errors,
    open_hdf5,
    open_netcdf,
)
from exascale_climate.data.validate import (
    GZIP_MAX_RATIO,
    check_channels,
    check_coordinates,
    check_finite,
    check_labels,
    check_ranges,
    check_values,
    dtype_problem,
    unit_conversion,
)
from exascale_climate.errors import DataError
from exascale_climate.utils.buffers import aligned_copy, aligned_empty
from exascale_climate.variables import BY_NAME, LABEL_VARIABLE, VARIABLE_NAMES


# ------------------------------------------------------------------------------------------ read HDF5
def _read_fields_checked(path, ds, layout: Layout, index: list[int], stored: list[str], file_size: int, empty,
                         transform, conversions) -> np.ndarray:
    """General path: any layout, channel subset, dtype or recorded units; values converted to the canonical
    units, then NaN/Inf and implausible values named by variable. With a transform or a conversion the fields
    come back as float32 (normalising float16 in float16 would lose precision)."""
    raw = rawread.read_h5_dataset(path, ds, FIELDS_DATASET, file_size, empty)
    data = HDF5_LAYOUTS[layout].channels_last(raw)
    if index != list(range(len(stored))):
        data = data[..., index]
    convert = [conversions[c] for c in index]
    float32 = transform is not None or any(convert)
    data = aligned_copy(data, np.float32 if float32 else None)  # copies only when it must
    for i, conversion in enumerate(convert):
        if conversion is not None:  # e.g. PSL recorded in hPa, temperatures in degC
            data[..., i] = data[..., i] * np.float32(conversion[0]) + np.float32(conversion[1])
    check_values(path, data, [stored[c] for c in index])
    if transform is not None:
        transform(data)
    return data


def _read_hdf5(path: Path, layout: Layout, channels, with_labels, empty, transform) -> Sample:
    with open_hdf5(path) as f, hdf5_errors(path):
        return _read_open_hdf5(path, f, layout, channels, with_labels, empty, transform)


def _read_open_hdf5(path: Path, f, layout: Layout, channels, with_labels, empty, transform) -> Sample:
    """The first read of a file checks its structure (check_hdf5), units and coordinates; later reads of the
    unchanged file (rawread.read_known) skip that. The values are checked on every read: finite and within
    each variable's plausible range (in the same pass over each block on the fast path)."""
    stat = os.stat(path)
    identity, size = rawread.identity(stat), stat.st_size
    where = HDF5_LAYOUTS[layout]
    stored = check_hdf5(path, f, layout, size)
    conversions = hdf5_conversions(path, f, stored)
    climate = f["climate"]
    ds = climate["data"]
    index = check_channels(path, stored, channels)
    data = None
    fields = None
    if not where.channels_first and index == list(range(len(stored))) and not any(conversions):
        fields = rawread.location(ds, size)
    if fields is not None:
        data = rawread.read_fields_in_one_pass(path, fields, FIELDS_DATASET, empty, transform, names=stored)
    if data is None:
        fields = None
        data = _read_fields_checked(path, ds, layout, index, stored, size, empty, transform, conversions)
    has_labels = where.labels in f
    label_where = rawread.location(f[where.labels], size) if has_labels else None
    labels = None
    if with_labels:
        if not has_labels:
            raise DataError(path, "no labels in the file", field=where.labels)
        raw_labels = rawread.read_h5_dataset(path, f[where.labels], where.labels, size, empty)
        labels = check_labels(path, where.labels, raw_labels, data.shape[:2])
    attrs = climate_attrs(climate)
    if where.channels_first and "stats" in climate:
        attrs["stats"] = rawread.read_h5_dataset(path, climate["stats"], "climate/stats", size)
    lat = climate["lat"][()] if "lat" in climate else None
    lon = climate["lon"][()] if "lon" in climate else None
    if not check_coordinates(path, lat, lon, data.shape[:2]):
        attrs["regional"] = True
    time = attrs.pop("time", None) or None
    if fields is not None:
        labels_known = (where.labels, label_where) if label_where else None
        rawread.remember(path, rawread.KnownFile(identity, fields, labels_known, tuple(stored), time,
                                                 rawread.shared_coordinate(lat), rawread.shared_coordinate(lon),
                                                 dict(attrs)))
    return Sample(data, labels, [stored[c] for c in index], str(path), time, lat, lon, attrs)


# ---------------------------------------------------------------------------------------- read netCDF
def _nc_dtype_problem(var) -> str | None:
    try:
        return dtype_problem(np.dtype(var.dtype))
    except TypeError:
        return f"unsupported netCDF type {var.dtype!r}; expected real numbers"


def _nc_field(path, nc, name: str, time_index: int, grid: tuple[int, int] | None) -> np.ndarray:
    var = nc.variables[name]
    dims = var.dimensions
    if problem := _nc_dtype_problem(var):
        raise DataError(path, problem, field=name)
    if 0 in var.shape:
        raise DataError(path, f"zero-size variable {var.shape} (no time records?)", field=name)
    step = int(np.prod(var.shape[-2:])) * np.dtype(var.dtype).itemsize  # what one read allocates
    if step > os.path.getsize(path) * GZIP_MAX_RATIO:
        raise DataError(path, f"declares {step:,} bytes per step {var.shape} but the file has "
                        f"{os.path.getsize(path):,} bytes (truncated or corrupt)", field=name)
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


def _time_string(path, nc, time_index: int) -> str | None:
    """The step's date; time metadata that does not decode is an error naming the file (a wrong date would
    mislabel every event found in it)."""
    if "time" in nc.dimensions and len(nc.dimensions["time"]) == 0:
        raise DataError(path, "zero time records", field="time")
    if "time" not in nc.variables:
        return None
    tvar = nc.variables["time"]
    try:
        value = tvar[time_index] if tvar.ndim else tvar[()]
        if np.ma.is_masked(value) or not np.isfinite(float(value)):
            raise ValueError(f"time value {value}")
        units = getattr(tvar, "units", None)
        if units:
            import cftime

            date = cftime.num2date(value, units, calendar=getattr(tvar, "calendar", "standard"))
            return date.isoformat()
        return str(value)
    except DataError:
        raise
    except Exception as e:
        raise DataError(path, f"time not decodable (units {getattr(tvar, 'units', None)!r}, calendar "
                        f"{getattr(tvar, 'calendar', 'standard')!r}: {e})", field="time") from None


def _nc_coordinate(path, nc, name: str) -> np.ndarray | None:
    if name not in nc.variables:
        return None
    var = nc.variables[name]
    if problem := _nc_dtype_problem(var):
        raise DataError(path, problem, field=name)
    try:
        values = var[:]
    except (OSError, RuntimeError, IndexError) as e:
        raise DataError(path, f"cannot read ({e}); the file is truncated or corrupt", field=name) from None
    return np.ma.filled(np.ma.asarray(values, np.float64), np.nan)


def _nc_labels(path, nc, time_index: int, grid) -> np.ndarray:
    if LABEL_VARIABLE not in nc.variables:
        raise DataError(path, "no labels in the file", field=LABEL_VARIABLE)
    raw = _nc_field(path, nc, LABEL_VARIABLE, time_index, grid)
    return check_labels(path, LABEL_VARIABLE, raw, raw.shape if grid is None else grid)


def _read_netcdf(path: Path, channels, with_labels, time_index: int) -> Sample:
    with open_netcdf(path) as nc:
        nc.set_auto_mask(True)
        names = list(channels) if channels else list(VARIABLE_NAMES)
        missing = [n for n in names if n not in nc.variables]
        if missing:
            raise DataError(path, f"missing variable(s) {missing}", field=missing[0])
        time = _time_string(path, nc, time_index)
        lat, lon = (_nc_coordinate(path, nc, c) for c in ("lat", "lon"))
        grid = (len(lat), len(lon)) if lat is not None and lon is not None else None
        first = _nc_field(path, nc, names[0], time_index, grid)
        if first.ndim != 2:
            raise DataError(path, f"expected a 2-D field per time step, got {first.shape}", field=names[0])
        grid = first.shape
        regional = not check_coordinates(path, lat, lon, grid)
        data = np.empty(grid + (len(names),), np.float32)
        for i, name in enumerate(names):
            values = first if i == 0 else _nc_field(path, nc, name, time_index, grid)
            check_finite(path, name, values)
            convert = unit_conversion(path, name, getattr(nc.variables[name], "units", None))
            if convert is not None:  # e.g. PSL in hPa, temperatures in degC, PRECT in mm/day
                values = np.asarray(values, np.float64) * convert[0] + convert[1]
            data[..., i] = values
        check_ranges(path, data, names)  # after the units conversion: hPa labelled Pa, TMQ 3e38, PS < 0
        labels = _nc_labels(path, nc, time_index, grid) if with_labels else None
        attrs = {k: nc.getncattr(k) for k in nc.ncattrs()}
        if regional:
            attrs["regional"] = True
        if "time" in nc.variables:  # the time axis's calendar matters to anyone writing dates back out
            for key in ("units", "calendar"):
                if hasattr(nc.variables["time"], key):
                    attrs.setdefault(f"time_{key}" if key == "units" else key, getattr(nc.variables["time"], key))
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
    known = rawread.read_known(path, channels, with_labels, empty, transform)
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
            return _nc_labels(path, nc, time_index, None)
    where = HDF5_LAYOUTS[layout]
    size = os.stat(path).st_size
    with open_hdf5(path) as f, hdf5_errors(path):
        check_hdf5(path, f, layout, size)
        if where.labels not in f:
            raise DataError(path, "no labels in the file", field=where.labels)
        grid = where.grid(f[FIELDS_DATASET].shape)
        raw = rawread.read_h5_dataset(path, f[where.labels], where.labels, size)
    return check_labels(path, where.labels, raw, grid)
