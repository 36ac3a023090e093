"""Reanalysis / forecast / model output -> the 16 CAM5 variables in the ClimateNet netCDF (`exaclimate data import`).

Reads CF netCDF (xarray) and GRIB1/2 (ecCodes, data/grib.py) with ERA5 / GFS (ecCodes or cfgrib short names),
MERRA-2 and CMIP names (or CF standard names), and for every CAM5 variable takes the first recipe the inputs allow:
- exact: the same quantity (ERA5 msl -> PSL, CMIP prw -> TMQ, ...), units converted;
- approximate: a close stand-in, said in the attributes (10 m wind for the lowest-model-level wind UBOT/VBOT,
  total column water with condensate for TMQ, skin for surface temperature ...);
- derived: computed from others (PRECT from accumulations, QREFHT from the 2 m dew point and PS, ZBOT and Z1000
  from the hypsometric equation, PS/PSL from each other and the orography).
Each output variable carries `provenance` (exact | approximate | derived), `source_variables` and `derivation`.
Latitudes become ascending, longitudes 0..360; regridding (`--grid HxW`, the CAM grid convention) is bilinear with
xarray's `interp` (scipy), periodic in longitude, latitudes beyond the source rows held at the nearest row:
bilinear keeps a constant field exactly and the global mean of a smooth field closely (tests/data/test_importers.py).
xESMF's conservative remapping needs ESMF, which has no wheel, so it is not used.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from exascale_climate.data.grid import default_coordinates
from exascale_climate.data.validate import VARIABLE_EQUIVALENCE, linear_conversion
from exascale_climate.errors import DataError, ExaclimateError
from exascale_climate.utils.log import get_logger
from exascale_climate.variables import BY_NAME, VARIABLE_NAMES

log = get_logger("data.import")

GRAVITY = 9.80665  # m s-2, WMO standard (geopotential -> geopotential height)
R_DRY = 287.04  # J kg-1 K-1
EPSILON = 0.622  # Rd / Rv
CAM5_BOTTOM_SIGMA = 0.99250  # CAM5 L30 lowest mid-level: hyam = 0, hybm = 0.99250 (p = 0.9925 PS)

LAT_NAMES = ("lat", "latitude", "y")
LON_NAMES = ("lon", "longitude", "x")
TIME_NAMES = ("valid_time", "time")
LEVEL_NAMES = ("pressure_level", "isobaricInhPa", "level", "plev", "lev", "pressure")
MEMBER_NAMES = ("number", "member", "realization", "ensemble")  # ensembles: the first member is imported
GRIB_SUFFIXES = (".grib", ".grib1", ".grib2", ".grb", ".grb2", ".gb2")


# ------------------------------------------------------------------------------------------ units
def convert_units(values: np.ndarray, units: str | None, target: str, where: str, name: str,
                  for_var: str = "", via: str | None = None) -> np.ndarray:
    """`values` of source variable `name` in `units` -> `target` units, with the read path's one units
    conversion (data/validate.py: Pint, and the water or geopotential equivalence of the CAM5 variable `for_var`
    or `via`); units that do not convert are an error naming the file and variable."""
    if not units or str(units).strip() == target:
        return values
    try:
        scale, offset = linear_conversion(str(units).strip(), target, via or VARIABLE_EQUIVALENCE.get(for_var))
    except ValueError as e:
        raise DataError(where, f"units {units!r} cannot be converted to {target!r} ({e})"
                               + (f" (for {for_var})" if for_var else ""), field=name) from None
    return values * scale + offset if (scale, offset) != (1.0, 0.0) else values


# ------------------------------------------------------------------------------------------ sources
@dataclass
class Field:
    """One source variable normalised: (time, [level,] lat, lon) with ascending lat, 0..360 lon."""

    name: str
    values: np.ndarray
    units: str | None
    times: np.ndarray  # datetime64[s]
    lat: np.ndarray
    lon: np.ndarray
    levels_hpa: np.ndarray | None
    path: str
    step_seconds: float | None = None  # accumulation length when the source says (GRIB step)
    standard_name: str = ""


def _find(names, candidates) -> str | None:
    return next((c for c in candidates if c in names), None)


def _normalise(da, name: str, path: str) -> Field | None:
    """A DataArray -> Field, or None when it is not a (time?, level?, lat, lon) field."""
    dims = list(da.dims)
    lat_name, lon_name = _find(dims, LAT_NAMES), _find(dims, LON_NAMES)
    if lat_name is None or lon_name is None:
        return None
    level_name = _find(dims, LEVEL_NAMES)
    time_name = _find(dims, TIME_NAMES)
    member = _find(dims, MEMBER_NAMES)
    if member is not None and da.sizes[member] > 1:
        log.info("%s: %s has %d ensemble members along %r; importing the first", path, name, da.sizes[member],
                 member)
        da = da.isel({member: 0})
        dims = list(da.dims)
    extra = [d for d in dims if d not in (lat_name, lon_name, level_name, time_name)]
    if any(da.sizes[d] != 1 for d in extra):
        return None
    da = da.squeeze(extra, drop=True) if extra else da
    if time_name is None:  # a single time as a scalar coordinate (cfgrib) or none at all (invariant fields)
        scalar = next((da.coords[t] for t in TIME_NAMES if t in da.coords and da.coords[t].ndim == 0), None)
        times = np.array([scalar.values], "datetime64[s]") if scalar is not None else np.array([], "datetime64[s]")
        da = da.expand_dims("time_", 0)
        time_name = "time_"
    else:
        times = np.asarray(da[time_name].values).astype("datetime64[s]")
    order = [time_name] + ([level_name] if level_name else []) + [lat_name, lon_name]
    da = da.transpose(*order)
    lat = np.asarray(da[lat_name].values, np.float64)
    lon = np.asarray(da[lon_name].values, np.float64) % 360.0
    values = np.asarray(da.values, np.float64)
    lat_order = np.argsort(lat)
    lon_order = np.argsort(lon, kind="stable")
    lon_sorted = lon[lon_order]
    keep = np.r_[True, np.diff(lon_sorted) > 1e-9]  # a repeated 0/360 column
    values = values[..., lat_order, :][..., lon_order[keep]]
    levels = None
    if level_name:
        raw = np.asarray(da[level_name].values, np.float64)
        units = str(da[level_name].attrs.get("units", "")).lower()
        levels = raw / 100.0 if units == "pa" or (not units and raw.max() > 2000) else raw
    step = None
    if "step" in da.coords and da.coords["step"].ndim == 0 and np.issubdtype(da.coords["step"].dtype, np.timedelta64):
        seconds = da.coords["step"].values / np.timedelta64(1, "s")
        step = float(seconds) if seconds > 0 else None
    return Field(name, values, da.attrs.get("units") or da.attrs.get("GRIB_units"), times, lat[lat_order],
                 lon_sorted[keep], levels, path, step, str(da.attrs.get("standard_name", "")))


def open_fields(path: str | Path) -> list[Field]:
    """The gridded variables of one netCDF or GRIB file."""
    import xarray as xr

    path = Path(path)
    datasets = []
    try:
        if path.suffix.lower() in GRIB_SUFFIXES or _is_grib(path):
            return grib_fields(path)
        else:
            datasets = [xr.open_dataset(path, decode_timedelta=True)]
    except DataError:
        raise
    except Exception as e:  # netCDF4/cfgrib raise many types for a corrupt file
        raise DataError(path, f"unreadable as netCDF or GRIB ({type(e).__name__}: {e})") from None
    fields = []
    for ds in datasets:
        with ds:
            for name, da in ds.data_vars.items():
                f = _normalise(da, str(name), str(path))
                if f is not None:
                    fields.append(f)
    if not fields:
        raise DataError(path, "no gridded (lat, lon) variables")
    return fields


def grib_fields(path: Path) -> list[Field]:
    """Fields of a GRIB file (ecCodes in a child process, data/grib.py): messages grouped by short name and level
    type, stacked over valid times and (pressure) levels; regular lat/lon grids only."""
    from exascale_climate.data.grib import read_grib

    meta, arrays = read_grib(path)
    if not meta:
        raise DataError(path, "no GRIB messages")
    other = sorted({m["gridType"] for m in meta if m["gridType"] != "regular_ll"})
    if other:
        raise DataError(path, f"grid type(s) {other} are not supported (regular lat/lon only); regrid first, "
                              "e.g. with cdo remapbil", field="gridType")
    groups: dict[tuple[str, str], list[int]] = {}
    for i, m in enumerate(meta):
        groups.setdefault((m["shortName"], m["typeOfLevel"]), []).append(i)
    fields = []
    for (name, level_type), idx in groups.items():
        pressure = level_type in ("isobaricInhPa", "isobaricInPa")
        times = sorted({_valid_time(meta[i]) for i in idx})
        levels = sorted({float(meta[i]["level"]) / (100.0 if level_type == "isobaricInPa" else 1.0) for i in idx},
                        reverse=True) if pressure else [None]
        first = idx[0]
        lat, lon = arrays[f"lat{first}"], arrays[f"lon{first}"] % 360.0
        values = np.full((len(times), len(levels)) + arrays[f"v{first}"].shape, np.nan)
        for i in idx:
            lev = float(meta[i]["level"]) / (100.0 if level_type == "isobaricInPa" else 1.0) if pressure else None
            values[times.index(_valid_time(meta[i])), levels.index(lev)] = arrays[f"v{i}"]
        lat_order, lon_order = np.argsort(lat), np.argsort(lon)
        values = values[..., lat_order, :][..., lon_order]
        if not pressure:
            values = values[:, 0]
        step = None
        if meta[first]["stepType"] == "accum" and meta[first]["endStep"] is not None:
            step = (float(meta[first]["endStep"]) - float(meta[first]["startStep"] or 0)) * 3600.0 or None
        units = meta[first]["units"] if meta[first]["units"] not in (None, "unknown", "~") else None
        fields.append(Field(name, values, units, np.array(times, "datetime64[s]"), lat[lat_order], lon[lon_order],
                            np.array(levels, np.float64) if pressure else None, str(path), step))
    return fields


def _valid_time(m: dict) -> np.datetime64:
    d, t = m["validityDate"], int(m["validityTime"])
    return np.datetime64(f"{d[:4]}-{d[4:6]}-{d[6:8]}T{t // 100:02d}:{t % 100:02d}:00", "s")


def _is_grib(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GRIB"


# ------------------------------------------------------------------------------------------ recipes
class Pool:
    """All source fields by name (and CF standard name), with lookups that say what they used."""

    def __init__(self, fields: list[Field]):
        self.fields: dict[str, Field] = {}
        for f in fields:
            self.fields.setdefault(f.name, f)
            if f.standard_name:
                self.fields.setdefault("@" + f.standard_name, f)

    def single(self, *names) -> Field | None:
        return next((self.fields[n] for n in names if n in self.fields and self.fields[n].levels_hpa is None), None)

    def level(self, hpa: float, *names) -> tuple[Field, int] | None:
        for n in names:
            f = self.fields.get(n)
            if f is not None and f.levels_hpa is not None:
                hit = np.flatnonzero(np.abs(f.levels_hpa - hpa) < 0.5)
                if hit.size:
                    return f, int(hit[0])
        return None

    def has_levels(self) -> bool:
        return any(f.levels_hpa is not None for f in self.fields.values())


@dataclass
class Result:
    values: np.ndarray  # (time, lat, lon) in CAM5 units, on the field's grid
    field: Field  # grid and times
    provenance: str
    sources: str
    derivation: str


SINGLE = {  # exact single-level sources: ERA5 / cfgrib, CMIP, MERRA-2, GFS (cfgrib), CF standard names
    "PSL": ("msl", "psl", "SLP", "prmsl", "mslp", "@air_pressure_at_mean_sea_level", "@air_pressure_at_sea_level"),
    "PS": ("sp", "ps", "PS", "@surface_air_pressure"),
    "TREFHT": ("t2m", "tas", "T2M", "2t"),
    "TS": ("skt", "ts", "TS", "@surface_temperature"),
    "QREFHT": ("huss", "QV2M", "sh2", "q2m"),
    "TMQ": ("tcwv", "prw", "TQV", "pwat", "@atmosphere_mass_content_of_water_vapor"),
    "U850": ("U850",), "V850": ("V850",), "T200": ("T200",), "T500": ("T500",),
    "Z1000": ("Z1000", "H1000"), "Z200": ("Z200", "H200"), "ZBOT": ("ZBOT",), "UBOT": ("UBOT",), "VBOT": ("VBOT",),
}
LEVELS = {  # pressure-level sources
    "U850": (850, ("u", "ua", "U", "@eastward_wind")), "V850": (850, ("v", "va", "V", "@northward_wind")),
    "T200": (200, ("t", "ta", "T", "@air_temperature")), "T500": (500, ("t", "ta", "T", "@air_temperature")),
    "Z1000": (1000, ("zg", "gh", "H", "hgt", "z", "@geopotential_height", "@geopotential")),
    "Z200": (200, ("zg", "gh", "H", "hgt", "z", "@geopotential_height", "@geopotential")),
}
APPROXIMATE = {
    "UBOT": (("u10", "uas", "U10M", "10u"), "10 m wind for the lowest model level (~60 m) wind"),
    "VBOT": (("v10", "vas", "V10M", "10v"), "10 m wind for the lowest model level (~60 m) wind"),
    "TMQ": (("tcw",), "total column water (vapour + cloud liquid + ice) for the vapour column"),
    "TS": (("t2m", "tas", "T2M", "2t"), "2 m air temperature for the radiative surface temperature"),
}
RATES = ("pr", "PRECTOT", "PRECTOTCORR", "prate", "mtpr", "tprate", "@precipitation_flux")
ACCUMULATIONS = ("tp", "apcp", "tp_accum")
DEWPOINT = ("d2m", "2d", "dpt2m")
OROGRAPHY = ("orog", "PHIS", "z_sfc")  # surface height (m) or geopotential (m2 s-2)


def _values(field: Field, target: str, name: str, level: int | None = None) -> np.ndarray:
    v = field.values[:, level] if level is not None else field.values
    if target == "m" and field.name in ("z", "@geopotential", "PHIS") and not field.units:
        return v / GRAVITY  # geopotential without units: m2 s-2 by definition
    return convert_units(v, field.units, target, field.path, field.name, for_var=name,
                         via="geopotential" if target == "m" else None)  # heights: also orography as geopotential


def _exact(pool: Pool, var: str) -> Result | None:
    units = BY_NAME[var].units
    f = pool.single(*SINGLE.get(var, ()))
    if f is not None:
        return Result(_values(f, units, var), f, "exact", f.name, f"{f.name} [{f.units or 'no units'}]")
    if var in LEVELS:
        hpa, names = LEVELS[var]
        hit = pool.level(hpa, *names)
        if hit is not None:
            f, k = hit
            return Result(_values(f, units, var, k), f, "exact", f.name,
                          f"{f.name} at {hpa} hPa [{f.units or 'no units'}]")
    return None


def _same_grid(a: Field, b: Field) -> bool:
    return a.values.shape[-2:] == b.values.shape[-2:] and np.allclose(a.lat, b.lat) and np.allclose(a.lon, b.lon)


def _paired(a: Result, b: Result, what: str) -> None:
    if not _same_grid(a.field, b.field) or not np.array_equal(a.field.times, b.field.times):
        raise DataError(a.field.path, f"{what}: {a.sources} and {b.sources} are on different grids or times; "
                                      "give them on one grid", field=a.sources)


class Recipes:
    """Resolves every CAM5 variable once (derivations reuse resolved ones)."""

    def __init__(self, pool: Pool):
        self.pool = pool
        self.done: dict[str, Result | None] = {}

    def get(self, var: str) -> Result | None:
        if var not in self.done:
            self.done[var] = None  # breaks derivation cycles (PS <-> PSL)
            self.done[var] = _exact(self.pool, var) or self._approximate(var) or self._derived(var)
        return self.done[var]

    def _approximate(self, var: str) -> Result | None:
        if var not in APPROXIMATE:
            return None
        names, why = APPROXIMATE[var]
        f = self.pool.single(*names)
        if f is None:
            return None
        return Result(_values(f, BY_NAME[var].units, var), f, "approximate", f.name, why)

    def _derived(self, var: str) -> Result | None:
        method: Callable[[], Result | None] | None = getattr(self, f"_derive_{var}", None)
        return method() if method else None

    def _derive_PRECT(self) -> Result | None:
        f = self.pool.single(*RATES)
        if f is not None:  # a mass flux of water (CF's default) or a depth rate
            rate = convert_units(f.values, f.units or "kg m-2 s-1", "m s-1", f.path, f.name, "PRECT")
            return Result(rate, f, "exact", f.name, f"{f.name} [{f.units}] / 1000 kg m-3")
        f = self.pool.single(*ACCUMULATIONS)
        if f is None:
            return None
        seconds = f.step_seconds or 3600.0
        depth = convert_units(f.values, f.units or "m", "m", f.path, f.name, "PRECT", via="water")
        period = f"its {seconds / 3600:g} h forecast step" if f.step_seconds else "1 h (ERA5 hourly accumulation)"
        return Result(depth / seconds, f, "derived", f.name,
                      f"accumulated {f.name} [{f.units or 'm'}] / {period}")

    def _derive_QREFHT(self) -> Result | None:
        td, ps = self.pool.single(*DEWPOINT), self.get("PS")
        if td is None or ps is None:
            return None
        t = convert_units(td.values, td.units, "K", td.path, td.name)
        _paired(Result(t, td, "", td.name, ""), ps, "QREFHT")
        e = 611.2 * np.exp(17.67 * (t - 273.15) / (t - 29.65))  # Bolton (1980) saturation vapour pressure at Td
        q = EPSILON * e / (ps.values - (1 - EPSILON) * e)
        return Result(q, td, "derived", f"{td.name},{ps.sources}",
                      f"specific humidity from the 2 m dew point {td.name} (Bolton 1980) and PS")

    def _derive_ZBOT(self) -> Result | None:
        t, q = self.get("TREFHT"), self.get("QREFHT")
        if t is None:
            return None
        tv = t.values * (1 + 0.608 * q.values) if q is not None else t.values
        z = R_DRY * tv / GRAVITY * np.log(1.0 / CAM5_BOTTOM_SIGMA)
        return Result(z, t.field, "derived", t.sources + (f",{q.sources}" if q else ""),
                      f"hypsometric height of CAM5's lowest level (p = {CAM5_BOTTOM_SIGMA} PS) with the virtual "
                      "temperature of TREFHT" + (" and QREFHT" if q else ""))

    def _derive_Z1000(self) -> Result | None:
        psl, t = self.get("PSL"), self.get("TREFHT")
        if psl is None or t is None:
            return None
        _paired(psl, t, "Z1000")
        z = R_DRY * t.values / GRAVITY * np.log(psl.values / 1e5)
        return Result(z, psl.field, "derived", f"{psl.sources},{t.sources}",
                      "hypsometric height of 1000 hPa above sea level from PSL and TREFHT")

    def _orography(self) -> Field | None:
        return self.pool.single(*OROGRAPHY)

    def _derive_PS(self) -> Result | None:
        psl, t, oro = self.get("PSL"), self.get("TREFHT"), self._orography()
        if psl is None or t is None or oro is None:
            return None
        zs = _values(oro, "m", "PS")[0]
        tmean = t.values + 0.0065 * zs / 2  # mean temperature of the layer below the surface
        return Result(psl.values * np.exp(-GRAVITY * zs / (R_DRY * tmean)), psl.field, "derived",
                      f"{psl.sources},{t.sources},{oro.name}", "PSL reduced to the surface height (hypsometric)")

    def _derive_PSL(self) -> Result | None:
        ps, t, oro = self.get("PS"), self.get("TREFHT"), self._orography()
        if ps is None or t is None or oro is None:
            return None
        zs = _values(oro, "m", "PSL")[0]
        tmean = t.values + 0.0065 * zs / 2
        return Result(ps.values * np.exp(GRAVITY * zs / (R_DRY * tmean)), ps.field, "derived",
                      f"{ps.sources},{t.sources},{oro.name}", "PS raised to sea level (hypsometric)")


# ------------------------------------------------------------------------------------------ regridding
def regrid(values: np.ndarray, lat: np.ndarray, lon: np.ndarray, lat_out: np.ndarray,
           lon_out: np.ndarray) -> np.ndarray:
    """Bilinear (xarray.interp, scipy) from an ascending-lat, 0..360-lon grid to another; (..., lat, lon).

    Longitude is periodic when the source spans the globe (one column wrapped on each side); latitudes outside the
    source rows take the nearest row (no extrapolation beyond the data)."""
    import xarray as xr

    lat, lon = np.asarray(lat), np.asarray(lon)
    same = lat.size == len(lat_out) and lon.size == len(lon_out)
    if same and np.allclose(lat, lat_out) and np.allclose(lon, lon_out):
        return values
    step = np.median(np.diff(lon)) if lon.size > 1 else 360.0
    if abs(lon.size * step - 360.0) < 1e-3 * 360.0:
        values = np.concatenate([values[..., -1:], values, values[..., :1]], axis=-1)
        lon = np.concatenate([[lon[-1] - 360.0], lon, [lon[0] + 360.0]])
    dims = [f"d{i}" for i in range(values.ndim - 2)] + ["lat", "lon"]
    da = xr.DataArray(values, dims=dims, coords={"lat": lat, "lon": lon})
    out = da.interp(lat=np.clip(lat_out, lat[0], lat[-1]), lon=np.asarray(lon_out) % 360.0, method="linear")
    return out.values


# ------------------------------------------------------------------------------------------ driver
REGRID_NOTE = ("bilinear, xarray.interp (scipy), periodic in longitude; latitudes beyond the source rows take "
               "the nearest row")


def parse_grid_option(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    from exascale_climate.config import parse_grid

    return parse_grid(text)


def _stamp(t: np.datetime64) -> str:
    d = t.astype("datetime64[s]").item()
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}-{d.hour:02d}-{d.minute:02d}"


def resolve(fields: list[Field], inputs: list[str]) -> dict[str, Result]:
    """Every CAM5 variable from the pool, or one error naming all that cannot be made."""
    pool = Pool(fields)
    recipes = Recipes(pool)
    results = {v: recipes.get(v) for v in VARIABLE_NAMES}
    missing = [v for v, r in results.items() if r is None]
    if missing:
        where = ", ".join(inputs)
        need_levels = [v for v in missing if v in LEVELS]
        hint = ""
        if need_levels and not pool.has_levels():
            hint = (f"; the input has no pressure levels, which {need_levels} need "
                    f"({sorted({LEVELS[v][0] for v in need_levels})} hPa)")
        found = sorted(n for n in pool.fields if not n.startswith("@"))
        raise DataError(where, f"cannot make CAM5 variable(s) {missing} from the variables found {found}{hint}",
                        field=missing[0])
    return results  # type: ignore[return-value]


def import_files(inputs: list[str | Path], out_dir: str | Path, grid: tuple[int, int] | None = None) -> dict:
    """`exaclimate data import`: one ClimateNet netCDF per time step common to all the variables."""
    from exascale_climate import __version__
    from exascale_climate.data.writers import write_netcdf_sample
    from exascale_climate.utils.io import atomic_path

    paths = [str(p) for p in inputs]
    fields: list[Field] = []
    for p in paths:
        fields += open_fields(p)
    results = resolve(fields, paths)
    timed = {v: r for v, r in results.items() if r.field.times.size}
    if not timed:
        raise DataError(", ".join(paths), "no time coordinate in any variable", field="time")
    common = sorted(set.intersection(*(set(r.field.times.tolist()) for r in timed.values())))
    if not common:
        raise DataError(", ".join(paths), "the variables share no time step", field="time")
    ref = results["PSL"].field
    lat_out, lon_out = default_coordinates(*grid) if grid else (ref.lat, ref.lon)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    epoch = np.datetime64("1970-01-01T00:00:00", "s")
    for t in common:
        data = np.empty((len(lat_out), len(lon_out), len(VARIABLE_NAMES)), np.float32)
        for i, var in enumerate(VARIABLE_NAMES):
            r = results[var]
            k = int(np.flatnonzero(r.field.times == t)[0]) if r.field.times.size else 0
            data[..., i] = regrid(r.values[k], r.field.lat, r.field.lon, lat_out, lon_out)
            if not np.isfinite(data[..., i]).all():
                raise DataError(r.field.path, f"non-finite values in {var} at {t}", field=r.sources)
        target = out / f"data-{_stamp(np.datetime64(t, 's'))}.nc"
        hours = float((np.datetime64(t, "s") - epoch) / np.timedelta64(1, "s")) / 3600.0
        with atomic_path(target) as tmp:
            write_netcdf_sample(tmp, data, None, list(VARIABLE_NAMES), lat=lat_out, lon=lon_out, time_hours=hours,
                                time_units="hours since 1970-01-01 00:00:00", calendar="standard", attrs={
                                    "Conventions": "CF-1.8", "title": "CAM5 variables imported by exaclimate",
                                    "source_files": ", ".join(paths),
                                    "regridding": REGRID_NOTE if grid else "none (source grid, reordered)",
                                    "history": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ} exaclimate "
                                               f"{__version__} data import"})
            _annotate(tmp, results)
        written.append(str(target))
    summary = {v: results[v].provenance for v in VARIABLE_NAMES}
    return {"written": written, "provenance": summary, "grid": (len(lat_out), len(lon_out))}


def _annotate(path, results: dict[str, Result]) -> None:
    import netCDF4

    with netCDF4.Dataset(path, "a") as nc:
        for var, r in results.items():
            v = nc[var]
            v.provenance = r.provenance
            v.source_variables = r.sources
            v.derivation = r.derivation
            v.source_file = r.field.path


def import_command(inputs, out_dir, grid_text) -> dict:
    try:
        grid = parse_grid_option(grid_text)
    except ExaclimateError as e:
        raise ExaclimateError(f"--grid: {e}") from None
    return import_files(list(inputs), out_dir, grid)
