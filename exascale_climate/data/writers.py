"""Write samples in the three layouts, and (re)write the labels of an existing file; every new file is written
to a temporary name and renamed (utils/io.py), so an interrupted write leaves no half file."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from exascale_climate.data.layouts import FIELDS_DATASET, HDF5_LAYOUTS, UNITS_ATTRIBUTE, Layout
from exascale_climate.data.validate import check_labels
from exascale_climate.errors import DataError
from exascale_climate.utils.io import atomic_path
from exascale_climate.variables import BY_NAME, LABEL_VARIABLE, NUM_CLASSES

LABEL_MEANINGS = "background tropical_cyclone atmospheric_river"
LABEL_LONG_NAME = "0: background, 1: tropical cyclone, 2: atmospheric river"


def _name_channels(path, climate, variables: list[str], units: list[str] | None = None) -> None:
    """The channel names and, beside them, each channel's units: `units` when given (the data's own, e.g. PS in
    hPa to fit float16; checked here, converted by every reader), else the canonical ones of variables.py."""
    import h5py

    from exascale_climate.data.validate import unit_conversion

    climate.attrs["variables"] = np.array(variables, dtype=h5py.string_dtype())
    if units is None:
        units = [BY_NAME[v].units if v in BY_NAME else "" for v in variables]
    if len(units) != len(variables):
        raise DataError(path, f"{len(units)} units for {len(variables)} variables", field="units")
    for v, u in zip(variables, units):
        unit_conversion(path, v, u)  # an error naming the variable now, not on every later read
    climate.attrs[UNITS_ATTRIBUTE] = np.array(units, dtype=h5py.string_dtype())


def _create_label_variable(nc, dims, **kwargs):
    """The netCDF LABELS variable with its CF flag attributes."""
    var = nc.createVariable(LABEL_VARIABLE, "i1", dims, **kwargs)
    var.long_name = LABEL_LONG_NAME
    var.flag_values = np.arange(NUM_CLASSES, dtype=np.int8)
    var.flag_meanings = LABEL_MEANINGS
    return var


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


FLOAT16_UNITS = {"Pa": ("hPa", 0.01)}  # canonical units too small for float16 (65504) -> the units written


def _fit_float16(path, data: np.ndarray, variables: list[str], units: list[str] | None):
    """PS/PSL in Pa do not fit float16: such channels are written in hPa (and say so in `units`, which every
    reader converts back); others beyond 65504 are refused instead of silently written as Inf."""
    peak = np.abs(data.reshape(-1, data.shape[-1])).max(axis=0) if data.size else np.zeros(len(variables))
    too_big = [i for i, m in enumerate(peak) if m > np.finfo(np.float16).max]
    if not too_big:
        return data, units
    units = list(units) if units is not None else [BY_NAME[v].units if v in BY_NAME else "" for v in variables]
    data = np.array(data, np.float32)
    for i in too_big:
        smaller, scale = FLOAT16_UNITS.get(units[i], (None, None))
        if smaller is None or peak[i] * scale > np.finfo(np.float16).max:
            raise DataError(path, f"values of {variables[i]} exceed the float16 range (65504); use dtype float32 "
                                  "or leave this channel out", field=variables[i])
        data[..., i] *= np.float32(scale)
        units[i] = smaller
    return data, units


def write_deepcam_sample(path: str | Path, data: np.ndarray, labels: np.ndarray | None, variables: list[str], *,
                         source: str = "", time: str | None = None, lat: np.ndarray | None = None,
                         lon: np.ndarray | None = None, dtype: str = "float32", compression: str | None = None,
                         chunks=None, attrs: dict | None = None, units: list[str] | None = None) -> Path:
    """Write one DeepCAM-layout sample atomically: `climate/data` (H, W, C), `climate/labels_0` (H, W).

    `chunks`: None (contiguous unless compressed), True (h5py's guess), or a (h, w, c) tuple. `attrs`: extra
    string/number attributes of `climate` (e.g. label_source, so evaluation knows where labels came from).
    `units`: per channel, the units `data` are in (default: the canonical ones); recorded in the file.
    """
    import h5py

    path = Path(path)
    data = np.asarray(data)
    if data.ndim != 3 or data.shape[-1] != len(variables):
        raise DataError(path, f"data shape {data.shape} does not match {len(variables)} variables",
                        field=FIELDS_DATASET)
    if dtype not in ("float32", "float16"):
        raise DataError(path, f"dtype {dtype!r} not supported; use float32 or float16", field=FIELDS_DATASET)
    if dtype == "float16":
        data, units = _fit_float16(path, data, variables, units)
    comp = _compression_args(compression)
    if comp and chunks is None:
        chunks = True
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            climate = f.create_group("climate")
            climate.create_dataset("data", data=data.astype(dtype, copy=False), chunks=chunks, **comp)
            if labels is not None:
                name = HDF5_LAYOUTS["deepcam"].labels
                labels = check_labels(path, name, labels, data.shape[:2])
                lab_chunks = None if chunks in (None, True) else tuple(chunks[:2])
                f.create_dataset(name, data=labels, chunks=lab_chunks if comp else None, **comp)
            _name_channels(path, climate, variables, units)
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
            name = HDF5_LAYOUTS["gordonbell"].labels
            f.create_dataset(name, data=check_labels(path, name, labels, data.shape[:2]))
            climate.create_dataset("stats", data=stats)
            _name_channels(path, climate, variables)
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
                lab = _create_label_variable(nc, ("time", "lat", "lon"), zlib=compression)
                lab[0] = check_labels(path, LABEL_VARIABLE, labels, data.shape[:2])
            for key, value in (attrs or {}).items():
                nc.setncattr(key, value)
    return path


# ---------------------------------------------------------------------------------------------- labels
def write_labels(path: str | Path, layout: Layout, labels_per_step: list, source: str) -> None:
    """Replace (or add) the labels of an existing file in place, one (H, W) array per time step, and record
    where they came from (`label_source`). Callers work on a temporary copy and rename it."""
    path = Path(path)
    if layout == "netcdf":
        import netCDF4

        with netCDF4.Dataset(path, "a") as nc:
            if LABEL_VARIABLE in nc.variables:
                var = nc.variables[LABEL_VARIABLE]
                var.long_name = LABEL_LONG_NAME
            else:
                var = _create_label_variable(nc, ("time", "lat", "lon") if "time" in nc.dimensions else ("lat", "lon"))
            if var.ndim == 3:
                for t, labels in enumerate(labels_per_step):
                    var[t] = labels
            else:
                var[:] = labels_per_step[0]
            nc.setncattr("label_source", source)
        return
    import h5py

    name = HDF5_LAYOUTS[layout].labels
    with h5py.File(path, "a") as f:
        if name in f:
            del f[name]
        f.create_dataset(name, data=labels_per_step[0])
        f["climate"].attrs["label_source"] = source
