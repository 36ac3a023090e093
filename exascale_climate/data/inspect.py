"""`exaclimate data inspect FILE`: what a file holds, including what is wrong with it.

Unlike read_sample this never rejects a file for NaNs or bad labels: it reports them, so a user can see the
problem that convert or training refused.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from exascale_climate.data.layouts import (
    FIELDS_DATASET,
    HDF5_LAYOUTS,
    check_hdf5,
    detect_layout,
    hdf5_errors,
    hdf5_units,
    open_hdf5,
    open_netcdf,
)
from exascale_climate.data.validate import (
    check_coordinates,
    check_labels,
    check_ranges,
    unit_conversion,
)
from exascale_climate.errors import DataError, one_line
from exascale_climate.variables import BY_NAME, CLASS_NAMES, LABEL_VARIABLE, VARIABLE_NAMES


def _problem(problems: list, check, *args):
    """Run one check; a DataError becomes a listed problem (inspect reports every problem, it rejects none)."""
    try:
        return check(*args)
    except DataError as e:
        problems.append(str(e))
        return None


def _value_problems(path, problems, name, values, grid):
    """Non-finite values and values outside the plausible range of variable `name` (already in its units)."""
    info = _describe(values)
    if info["nan"] or info["inf"]:
        problems.append(str(DataError(path, f"{info['nan']} NaN and {info['inf']} Inf values", field=name)))
    if name in BY_NAME and info["min"] is not None:
        _problem(problems, check_ranges, path, np.array([[info["min"], info["max"]]]).reshape(1, 2, 1), [name])
    return info


def _describe(values: np.ndarray) -> dict:
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)
    good = values[finite]
    return {"min": float(good.min()) if good.size else None, "max": float(good.max()) if good.size else None,
            "mean": float(good.mean()) if good.size else None,
            "nan": int(np.isnan(values).sum()), "inf": int(np.isinf(values).sum())}


def _label_summary(labels: np.ndarray) -> dict:
    labels = np.asarray(labels)
    total = labels.size or 1
    fractions = {name: float((labels == c).sum()) / total for c, name in enumerate(CLASS_NAMES)}
    outside = int(((labels < 0) | (labels >= len(CLASS_NAMES))).sum()) if labels.size else 0
    return {"fractions": fractions, "outside_range": outside}


def _box_summary(path, climate, labels: np.ndarray) -> dict:
    """The stored event boxes (`exaclimate data boxes`), else those derived from the labels; a malformed
    stored set is reported, not raised."""
    from exascale_climate.data.boxes import BOX_COLUMNS, boxes_from_mask, check_boxes
    from exascale_climate.data.grid import default_coordinates, spans_globe

    labels = np.asarray(labels)
    if "boxes" in climate:
        try:
            boxes = check_boxes(path, climate["boxes"][()], labels.shape)
        except DataError as e:
            return {"source": "stored", "error": str(e), "rows": []}
        source = "stored"
    else:
        lon = climate["lon"][()] if "lon" in climate else default_coordinates(*labels.shape)[1]
        boxes, source = boxes_from_mask(labels, spans_globe(np.asarray(lon, np.float64))), "derived from labels"
    return {"source": source, "columns": list(BOX_COLUMNS),
            "rows": [[int(b[0])] + [round(float(v), 2) for v in b[1:]] for b in boxes]}


def inspect_file(path) -> dict:
    """Layout, shapes, per-variable ranges and non-finite counts, class fractions, and `problems`: every
    check of the read path that fails, one line each (never raises for content)."""
    path = Path(path)
    layout = detect_layout(path)
    info: dict = {"file": str(path), "layout": layout, "size_bytes": path.stat().st_size, "variables": {}}
    problems: list[str] = []
    info["problems"] = problems
    if layout == "netcdf":
        with open_netcdf(path) as nc:
            try:
                _inspect_netcdf(path, nc, info, problems)
            except (RuntimeError, OSError) as e:  # the netCDF library on corrupt data ("NetCDF: HDF error")
                raise DataError(path, f"corrupt netCDF file ({type(e).__name__}: {e})") from None
        return info
    with open_hdf5(path) as f, hdf5_errors(path):
        where = HDF5_LAYOUTS[layout]
        names = _problem(problems, check_hdf5, path, f, layout, info["size_bytes"])
        if names is None:
            return info  # the structure is broken: reading arrays could allocate or crash
        ds = f[FIELDS_DATASET]
        info["data"] = {"shape": list(ds.shape), "dtype": str(ds.dtype), "chunks": ds.chunks,
                        "compression": ds.compression}
        data = where.channels_last(ds[()])
        grid = data.shape[:2]
        units = _problem(problems, hdf5_units, path, f, names) or [""] * len(names)
        for i, name in enumerate(names):
            values = data[..., i]
            convert = _problem(problems, unit_conversion, path, name, units[i])
            if convert is not None:  # recorded units (e.g. hPa in a float16 file): figures in canonical units
                values = values.astype(np.float64) * convert[0] + convert[1]
            info["variables"][name] = _value_problems(path, problems, name, values, grid)
            info["variables"][name]["units"] = units[i] or f"{BY_NAME[name].units} (none recorded)"
        climate = f["climate"]
        info["attributes"] = {k: str(v) for k, v in list(climate.attrs.items()) if k != "variables"}  # layouts.climate_attrs
        lat = climate["lat"][()] if "lat" in climate else None
        lon = climate["lon"][()] if "lon" in climate else None
        _problem(problems, check_coordinates, path, lat, lon, grid)
        if where.labels in f:
            labels = f[where.labels][()]
            info["labels"] = _label_summary(labels)
            _problem(problems, check_labels, path, where.labels, labels, grid)
            info["boxes"] = _box_summary(path, climate, labels)
    return info


def _inspect_netcdf(path, nc, info, problems) -> None:
    from exascale_climate.data.samples import _nc_coordinate, _nc_dtype_problem, _time_string

    info["dimensions"] = {k: len(v) for k, v in nc.dimensions.items()}
    info["attributes"] = {k: str(nc.getncattr(k)) for k in nc.ncattrs()}
    _problem(problems, _time_string, path, nc, 0)
    lat = _problem(problems, _nc_coordinate, path, nc, "lat")
    lon = _problem(problems, _nc_coordinate, path, nc, "lon")
    grid = (len(lat) if lat is not None else 0, len(lon) if lon is not None else 0)
    for name in VARIABLE_NAMES:
        if name not in nc.variables:
            continue
        var = nc.variables[name]
        entry = {"shape": list(var.shape), "dtype": str(var.dtype), "units": getattr(var, "units", "")}
        info["variables"][name] = entry
        if problem := _nc_dtype_problem(var):
            problems.append(str(DataError(path, problem, field=name)))
            continue
        if lat is not None and lon is not None and tuple(var.shape[-2:]) != grid:
            problems.append(str(DataError(path, f"shape {var.shape} does not match (lat, lon) {grid} "
                                          "(transposed?)", field=name)))
        convert = _problem(problems, unit_conversion, path, name, entry["units"])
        data = np.ma.filled(var[:].astype(np.float64), np.nan)
        if convert is not None:
            data = data * convert[0] + convert[1]
        entry.update(_value_problems(path, problems, name, data, grid))
    info["missing_variables"] = [n for n in VARIABLE_NAMES if n not in nc.variables]
    if lat is not None and lon is not None:
        _problem(problems, check_coordinates, path, lat, lon, grid)
    if LABEL_VARIABLE in nc.variables:
        var = nc.variables[LABEL_VARIABLE]
        if problem := _nc_dtype_problem(var):
            problems.append(str(DataError(path, problem, field=LABEL_VARIABLE)))
            return
        labels = np.ma.filled(var[:], -1)
        info["labels"] = _label_summary(labels)
        for step in (labels if labels.ndim == 3 else [labels]):
            if _problem(problems, check_labels, path, LABEL_VARIABLE, step, grid if lat is not None else step.shape) \
                    is None:
                break


def format_inspection(info: dict) -> str:
    lines = [f"{one_line(info['file'])}: layout {info['layout']}, {info['size_bytes'] / 2**20:.1f} MiB"]
    if "dimensions" in info:
        lines.append("dimensions: " + ", ".join(f"{k}={v}" for k, v in info["dimensions"].items()))
    if "data" in info:
        d = info["data"]
        lines.append(f"climate/data: shape {tuple(d['shape'])} {d['dtype']}, chunks {d['chunks']}, "
                     f"compression {d['compression']}")
    if info.get("missing_variables"):
        lines.append(f"MISSING variables: {', '.join(info['missing_variables'])}")
    lines.append(f"{'variable':<8} {'min':>12} {'mean':>12} {'max':>12} {'NaN':>6} {'Inf':>6}")
    for name, v in info["variables"].items():
        fmt = (lambda x: f"{x:12.5g}" if x is not None else f"{'-':>12}")
        nan, inf = v.get("nan", 0), v.get("inf", 0)  # a variable of the wrong dtype has no values to count
        flag = "  <- non-finite" if nan or inf else ""
        lines.append(f"{name:<8} {fmt(v.get('min'))} {fmt(v.get('mean'))} {fmt(v.get('max'))} {nan:6d} {inf:6d}{flag}")
    if "labels" in info:
        lab = info["labels"]
        lines.append("classes: " + ", ".join(f"{k} {v:.4%}" for k, v in lab["fractions"].items())
                     + (f"; {lab['outside_range']} label values OUTSIDE 0..2" if lab["outside_range"] else ""))
    else:
        lines.append("classes: no labels in the file")
    if "boxes" in info:
        b = info["boxes"]
        if b.get("error"):
            lines.append(f"boxes: MALFORMED ({b['error']})")
        else:
            lines.append(f"boxes ({b['source']}; class, row/col centre, height, width in pixels): {len(b['rows'])}")
            lines += [f"  {CLASS_NAMES[r[0]]:<4} centre ({r[1]:.1f}, {r[2]:.1f}) size {r[3]:.0f}x{r[4]:.0f}"
                      for r in b["rows"]]
    problems = info.get("problems") or []
    lines.append(f"problems: {len(problems)}" if problems else "problems: none")
    lines += [f"PROBLEM {one_line(p)}" for p in problems]
    return "\n".join(lines)
