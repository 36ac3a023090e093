"""Reanalysis / forecast / model output -> the 16 CAM5 variables in the ClimateNet netCDF (`exaclimate data import`).

Reads CF netCDF (xarray) and GRIB1/2 (ecCodes, data/grib.py) with ERA5 / GFS (ecCodes or cfgrib short names),
MERRA-2 and CMIP names (or CF standard names), and for every CAM5 variable takes the first recipe the inputs allow:
- exact: the same quantity (ERA5 msl -> PSL, CMIP prw -> TMQ, ...), units converted;
- approximate: a close stand-in, said in the attributes (10 m wind for the lowest-model-level wind UBOT/VBOT,
  total column water with condensate for TMQ, skin for surface temperature ...);
- derived: computed from others (PRECT from accumulations, QREFHT from the 2 m dew point or relative humidity and
  PS, TMQ from a humidity profile on pressure levels, ZBOT and Z1000 from the hypsometric equation, PS/PSL from
  each other and the orography);
- filled (only when the user opts in with `--fill-from FILE`): what nothing above can make, from the nearest
  pressure level the input has, else the zonal mean of the variable in FILE; without the opt-in, an error names them.
Each output variable carries `provenance` (exact | approximate | derived | filled), `source_variables`,
`derivation` and `regridding`. Latitudes become ascending, longitudes 0..360. Regridding (`--grid HxW`, the CAM grid
convention; `--regrid auto|conservative|bilinear`): first-order conservative (written here, see `_conservative`
for why no library) for fluxes (PRECT) and wherever the output is no finer than the source, bilinear
(xarray.interp, scipy) when refining a state field; per variable in the `regridding` attribute.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from exascale_climate.data.grid import cell_edges, default_coordinates
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
    inferred_units: str = ""  # set when the file gives no units and they were inferred from the magnitude

    def units_note(self) -> str:
        if self.units:
            return self.units
        return f"no units; {self.inferred_units} inferred from the magnitude" if self.inferred_units else "no units"


def _find(names, candidates) -> str | None:
    return next((c for c in candidates if c in names), None)


def _normalise(da, name: str, path: str) -> Field | None:
    """A DataArray -> Field, or None when it is not a (time?, level?, lat, lon) field."""
    dims = list(da.dims)
    lat_name, lon_name = _find(dims, LAT_NAMES), _find(dims, LON_NAMES)
    if lat_name is None or lon_name is None:
        return None
    level_name = _find(dims, LEVEL_NAMES)
    if level_name is None:  # one pressure level named by a scalar coordinate or a `level` attribute (NCL's files)
        scalar = next((da.coords[n] for n in LEVEL_NAMES if n in da.coords and da.coords[n].ndim == 0), None)
        value = scalar.values if scalar is not None else da.attrs.get("level")
        if value is not None and np.size(value) == 1 and np.isfinite(float(value)):
            units = str(scalar.attrs.get("units", "")) if scalar is not None else ""
            level_units = {"units": units} if units else {}
            da = da.drop_vars([n for n in LEVEL_NAMES if n in da.coords]).expand_dims(
                {"level": [float(value)]}, axis=-3)
            da["level"].attrs.update(level_units)
            dims = list(da.dims)
            level_name = "level"
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
    other = sorted({str(m["gridType"] or "undefined (a predefined grid without its description)")
                    for m in meta if m["gridType"] not in ("regular_ll", "reduced_ll")})
    if other:
        raise DataError(path, f"grid type(s) {other} are not supported (regular or quasi-regular lat/lon only); "
                              "regrid first, e.g. with cdo remapbil", field="gridType")
    if any(m["gridType"] == "reduced_ll" for m in meta):
        log.info("%s: quasi-regular lat/lon rows expanded to the longest row by linear interpolation", path)
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

    def lowest_level(self, min_hpa: float, *names) -> tuple[Field, int] | None:
        """The highest-pressure level (at least `min_hpa`) of the first of `names` with levels."""
        for n in names:
            f = self.fields.get(n)
            if f is not None and f.levels_hpa is not None and f.levels_hpa.max() >= min_hpa:
                return f, int(np.argmax(f.levels_hpa))
        return None

    def nearest_level(self, hpa: float, *names) -> tuple[Field, int] | None:
        for n in names:
            f = self.fields.get(n)
            if f is not None and f.levels_hpa is not None:
                return f, int(np.argmin(np.abs(f.levels_hpa - hpa)))
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
    "PSL": ("msl", "psl", "SLP", "Psl", "prmsl", "mslp", "@air_pressure_at_mean_sea_level",
            "@air_pressure_at_sea_level"),
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
RELATIVE_HUMIDITY_2M = ("2r", "hurs", "r2", "RH2M", "rh2m")  # percent
SPECIFIC_HUMIDITY = ("q", "hus", "QV", "@specific_humidity")  # on pressure levels
RELATIVE_HUMIDITY = ("r", "hur", "RH", "@relative_humidity")  # on pressure levels, percent
TEMPERATURE = ("t", "ta", "T", "@air_temperature")
OROGRAPHY = ("orog", "PHIS", "z_sfc")  # surface height (m) or geopotential (m2 s-2)


def percent(field: Field, values: np.ndarray | None = None) -> np.ndarray:
    """Relative humidity in percent, 0..100 (files give % or a fraction)."""
    v = field.values if values is None else values
    key = (field.units or "").strip().lower().replace(" ", "")
    fraction = key in ("1", "fraction", "0-1") or (not key and np.nanmax(v) <= 1.5)
    if key and not fraction and key not in ("%", "percent"):
        raise DataError(field.path, f"units {field.units!r} are not a relative humidity (% or 1)", field=field.name)
    return np.clip(v * (100.0 if fraction else 1.0), 0.0, 100.0)


def saturation_vapour_pressure(t_kelvin: np.ndarray) -> np.ndarray:
    """Pa over water, Bolton (1980)."""
    return 611.2 * np.exp(17.67 * (t_kelvin - 273.15) / (t_kelvin - 29.65))


def _values(field: Field, target: str, name: str, level: int | None = None) -> np.ndarray:
    v = field.values[:, level] if level is not None else field.values
    if target == "m" and field.name in ("z", "@geopotential", "PHIS") and not field.units:
        return v / GRAVITY  # geopotential without units: m2 s-2 by definition
    units = field.units
    if not units and target == "Pa":  # pressure without units (NCL's 941110_P.cdf): hPa and Pa differ 100-fold
        units = field.inferred_units = "hPa" if np.nanmedian(np.abs(v)) < 2000.0 else "Pa"
        log.warning("%s: %s has no units; %s inferred from its magnitude", field.path, field.name, units)
    return convert_units(v, units, target, field.path, field.name, for_var=name,
                         via="geopotential" if target == "m" else None)  # heights: also orography as geopotential


def _exact(pool: Pool, var: str) -> Result | None:
    units = BY_NAME[var].units
    f = pool.single(*SINGLE.get(var, ()))
    if f is not None:
        values = _values(f, units, var)
        return Result(values, f, "exact", f.name, f"{f.name} [{f.units_note()}]")
    if var in LEVELS:
        hpa, names = LEVELS[var]
        hit = pool.level(hpa, *names)
        if hit is not None:
            f, k = hit
            values = _values(f, units, var, k)
            return Result(values, f, "exact", f.name, f"{f.name} at {hpa} hPa [{f.units_note()}]")
    return None


def _same_grid(a: Field, b: Field) -> bool:
    return a.values.shape[-2:] == b.values.shape[-2:] and np.allclose(a.lat, b.lat) and np.allclose(a.lon, b.lon)


def _paired(a: Result, b: Result, what: str) -> None:
    if not _same_grid(a.field, b.field) or not np.array_equal(a.field.times, b.field.times):
        raise DataError(a.field.path, f"{what}: {a.sources} and {b.sources} are on different grids or times; "
                                      "give them on one grid", field=a.sources)


BOTTOM_WIND = {"UBOT": ("u", "ua", "U", "@eastward_wind"), "VBOT": ("v", "va", "V", "@northward_wind")}
LOWEST_LEVEL_HPA = 925.0  # a pressure-level wind at or below this level may stand in for the lowest-level wind


class Recipes:
    """Resolves every CAM5 variable once (derivations reuse resolved ones); with a `Filler` (the user's opt-in,
    `data import --fill-from`), what no recipe can make is filled as the last resort."""

    def __init__(self, pool: Pool, filler: "Filler | None" = None):
        self.pool = pool
        self.filler = filler
        self.done: dict[str, Result | None] = {}

    def get(self, var: str) -> Result | None:
        if var not in self.done:
            self.done[var] = None  # breaks derivation cycles (PS <-> PSL)
            self.done[var] = (_exact(self.pool, var) or self._approximate(var) or self._derived(var)
                              or (self.filler.fill(var, self) if self.filler else None))
        return self.done[var]

    def _approximate(self, var: str) -> Result | None:
        if var in BOTTOM_WIND and var in APPROXIMATE and self.pool.single(*APPROXIMATE[var][0]) is None:
            hit = self.pool.lowest_level(LOWEST_LEVEL_HPA, *BOTTOM_WIND[var])
            if hit is not None:
                f, k = hit
                return Result(_values(f, BY_NAME[var].units, var, k), f, "approximate", f.name,
                              f"{f.name} at {f.levels_hpa[k]:g} hPa (the input's lowest pressure level) for the "
                              "lowest model level (~992 hPa) wind")
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
        if td is None and ps is not None:
            return self._qrefht_from_rh(ps)
        if td is None or ps is None:
            return None
        t = convert_units(td.values, td.units, "K", td.path, td.name)
        _paired(Result(t, td, "", td.name, ""), ps, "QREFHT")
        e = saturation_vapour_pressure(t)  # at the dew point: the vapour pressure
        q = EPSILON * e / (ps.values - (1 - EPSILON) * e)
        return Result(q, td, "derived", f"{td.name},{ps.sources}",
                      f"specific humidity from the 2 m dew point {td.name} (Bolton 1980) and PS")

    def _qrefht_from_rh(self, ps: Result) -> Result | None:
        rh, t = self.pool.single(*RELATIVE_HUMIDITY_2M), self.get("TREFHT")
        if rh is None or t is None:
            return None
        _paired(t, ps, "QREFHT")
        if not _same_grid(rh, t.field):
            raise DataError(rh.path, f"QREFHT: {rh.name} and {t.sources} are on different grids", field=rh.name)
        e = percent(rh) / 100.0 * saturation_vapour_pressure(t.values)
        q = EPSILON * e / (ps.values - (1 - EPSILON) * e)
        return Result(q, rh, "derived", f"{rh.name},{t.sources},{ps.sources}",
                      f"specific humidity from the 2 m relative humidity {rh.name}, TREFHT (Bolton 1980) and PS")

    def _derive_TMQ(self) -> Result | None:
        """Precipitable water from a humidity profile: q (or relative humidity and temperature) on pressure levels,
        integrated over pressure (trapezoids) from the surface pressure (else the lowest level) to the top level
        the input has, / g; levels below the surface are left out."""
        q_field = next((f for n in SPECIFIC_HUMIDITY if (f := self.pool.fields.get(n)) is not None
                        and f.levels_hpa is not None), None)
        if q_field is not None:
            q, levels, src = convert_units(q_field.values, q_field.units, "kg kg-1", q_field.path, q_field.name,
                                           for_var="TMQ"), q_field.levels_hpa, q_field
            names = q_field.name
        else:
            rh = next((f for n in RELATIVE_HUMIDITY if (f := self.pool.fields.get(n)) is not None
                       and f.levels_hpa is not None), None)
            t = next((f for n in TEMPERATURE if (f := self.pool.fields.get(n)) is not None
                      and f.levels_hpa is not None), None)
            if rh is None or t is None or not _same_grid(rh, t):
                return None
            shared = [lv for lv in rh.levels_hpa if np.any(np.abs(t.levels_hpa - lv) < 0.5)]
            if len(shared) < 2:
                return None
            ri = [int(np.argmin(np.abs(rh.levels_hpa - lv))) for lv in shared]
            ti = [int(np.argmin(np.abs(t.levels_hpa - lv))) for lv in shared]
            temp = convert_units(t.values[:, ti], t.units, "K", t.path, t.name, for_var="TMQ")
            levels = np.asarray(shared, np.float64)
            e = percent(rh, rh.values[:, ri]) / 100.0 * saturation_vapour_pressure(temp)
            p = levels[None, :, None, None] * 100.0
            q = EPSILON * e / (p - (1 - EPSILON) * np.minimum(e, 0.5 * p))
            src, names = rh, f"{rh.name},{t.name}"
        order = np.argsort(levels)[::-1]  # bottom (highest pressure) first
        q, p = q[:, order], levels[order] * 100.0
        ps = self.get("PS")
        surface = ps.values if ps is not None and _same_grid(ps.field, src) else np.full(q[:, 0].shape, p[0])
        total = np.zeros(q[:, 0].shape)
        for k in range(len(p) - 1):  # the layer p[k] .. p[k+1], cut at the surface
            dp = np.clip(np.minimum(p[k], surface) - p[k + 1], 0.0, None)
            total += 0.5 * (q[:, k] + q[:, k + 1]) * dp
        total += q[:, 0] * np.clip(surface - p[0], 0.0, None)  # surface .. lowest level, at the lowest level's q
        return Result(total / GRAVITY, src, "derived", names + (f",{ps.sources}" if ps is not None else ""),
                      f"precipitable water: humidity ({names}) on {len(p)} pressure levels "
                      f"({p[0] / 100:g}..{p[-1] / 100:g} hPa) integrated from the surface pressure / g")

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


FILLED = "filled"


class Filler:
    """The user's opt-in (`--fill-from FILE`) for variables the input lacks and nothing derives: first the same
    quantity at the nearest pressure level the input has (1000 hPa wind for the 850 hPa wind, ...), else the zonal
    mean of the variable in FILE (a ClimateNet/CAM5 netCDF: a climatological background, not data), on the input's
    grid and times. Every such variable says `provenance = filled` and what stood in; without the opt-in they
    remain an error that names them."""

    def __init__(self, reference: str | Path):
        self.reference = Path(reference)
        self._zonal: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    def _load(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if self._zonal is None:
            import netCDF4

            self._zonal = {}
            try:
                with netCDF4.Dataset(self.reference) as nc:
                    lat_name = _find(nc.variables, LAT_NAMES)
                    for var in VARIABLE_NAMES:
                        if var not in nc.variables:
                            continue
                        v = np.ma.filled(np.asarray(nc[var][:], np.float64), np.nan)
                        v = v.reshape((-1,) + v.shape[-2:])[0]
                        lat = (np.asarray(nc[lat_name][:], np.float64) if lat_name else
                               default_coordinates(*v.shape)[0])
                        order = np.argsort(lat)
                        self._zonal[var] = (lat[order], np.nanmean(v, axis=1)[order])
            except OSError as e:
                raise DataError(self.reference, f"--fill-from: unreadable as netCDF ({e})") from None
        return self._zonal

    def fill(self, var: str, recipes: "Recipes") -> Result | None:
        pool = recipes.pool
        if var in LEVELS:
            hpa, names = LEVELS[var]
            hit = pool.nearest_level(hpa, *names)
            if hit is not None:
                f, k = hit
                return Result(_values(f, BY_NAME[var].units, var, k), f, FILLED, f.name,
                              f"{f.name} at {f.levels_hpa[k]:g} hPa for {hpa} hPa (the nearest level the input has; "
                              "--fill-from)")
        zonal = self._load().get(var)
        if zonal is None:
            return None
        psl = recipes.done.get("PSL")
        grid = psl.field if psl is not None else max(pool.fields.values(), key=lambda f: f.times.size)
        row = np.interp(grid.lat, *zonal)
        values = np.broadcast_to(row[None, :, None], (max(grid.times.size, 1), grid.lat.size, grid.lon.size))
        return Result(values.copy(), grid, FILLED, f"fill:{var}",
                      f"zonal mean of {var} in {self.reference.name} (a stand-in chosen with --fill-from, not data)")


# ------------------------------------------------------------------------------------------ regridding
REGRID_METHODS = ("auto", "conservative", "bilinear")
CONSERVED = ("PRECT",)  # fluxes: their area integral must survive regridding, so always conservative


def choose_method(var: str, lat: np.ndarray, lon: np.ndarray, lat_out: np.ndarray, lon_out: np.ndarray,
                  method: str = "auto") -> str:
    """`auto`: conservative for fluxes and wherever the output cells are no finer than the source cells (an output
    cell averages the source cells it covers); bilinear when refining a state field (conservative remapping
    would copy each coarse cell into blocks)."""
    if method != "auto":
        return method
    if var in CONSERVED:
        return "conservative"
    spacing = lambda x: float(np.median(np.abs(np.diff(x)))) if len(x) > 1 else 360.0  # noqa: E731
    coarsening = (spacing(lat_out) >= spacing(lat) - 1e-9) and (spacing(lon_out) >= spacing(lon) - 1e-9)
    return "conservative" if coarsening else "bilinear"


def regrid(values: np.ndarray, lat: np.ndarray, lon: np.ndarray, lat_out: np.ndarray,
           lon_out: np.ndarray, method: str = "bilinear") -> np.ndarray:
    """From an ascending-lat, 0..360-lon grid to another; (..., lat, lon).

    conservative: first-order conservative remapping (`_conservative`: area-weighted overlaps of the cells on the
    sphere, periodic in longitude): a constant stays constant and the area-weighted global mean is kept
    (tests/data/test_importers.py); output cells outside a regional source are NaN.
    bilinear: xarray.interp (scipy); longitude is periodic when the source spans the globe (one column wrapped on
    each side); latitudes outside the source rows take the nearest row (no extrapolation beyond the data)."""
    import xarray as xr

    lat, lon = np.asarray(lat), np.asarray(lon)
    same = lat.size == len(lat_out) and lon.size == len(lon_out)
    if same and np.allclose(lat, lat_out) and np.allclose(lon, lon_out):
        return values
    if method == "conservative":
        return _conservative(values, lat, lon, np.asarray(lat_out, np.float64), np.asarray(lon_out, np.float64))
    if method != "bilinear":
        raise ExaclimateError(f"regridding method {method!r} is not one of {REGRID_METHODS[1:]}")
    step = np.median(np.diff(lon)) if lon.size > 1 else 360.0
    if abs(lon.size * step - 360.0) < 1e-3 * 360.0:
        values = np.concatenate([values[..., -1:], values, values[..., :1]], axis=-1)
        lon = np.concatenate([[lon[-1] - 360.0], lon, [lon[0] + 360.0]])
    dims = [f"d{i}" for i in range(values.ndim - 2)] + ["lat", "lon"]
    da = xr.DataArray(values, dims=dims, coords={"lat": lat, "lon": lon})
    out = da.interp(lat=np.clip(lat_out, lat[0], lat[-1]), lon=np.asarray(lon_out) % 360.0, method="linear")
    return out.values


def _overlaps(src_edges: np.ndarray, dst_edges: np.ndarray, period: float | None = None) -> np.ndarray:
    """(n_dst, n_src) lengths shared by each target and source interval (source shifted by +-period if periodic)."""
    shifts = (-period, 0.0, period) if period else (0.0,)
    out = np.zeros((dst_edges.size - 1, src_edges.size - 1))
    for shift in shifts:
        lo = np.maximum(dst_edges[:-1, None], src_edges[None, :-1] + shift)
        hi = np.minimum(dst_edges[1:, None], src_edges[None, 1:] + shift)
        out += np.clip(hi - lo, 0.0, None)
    return out


def _conservative(values: np.ndarray, lat: np.ndarray, lon: np.ndarray, lat_out: np.ndarray,
                  lon_out: np.ndarray) -> np.ndarray:
    """First-order conservative remapping between regular lat/lon grids, written here: each output cell is the
    area-weighted mean of the source cells it overlaps; on the sphere the area of a cell is separable
    (R^2 d(sin lat) d lon), so the weights are a product of 1-D overlaps in sin(latitude) and in longitude
    (periodic). Cell edges are data/grid.py's (half-way between centres, clipped at the poles), the same the
    toolkit's areas use. Why not a library: xESMF needs ESMF (no wheel), and xarray-regrid 0.4.2 (tried) weights
    a row by sin(lat + d/2) - sin(lat - d/2) without clipping at the poles, which is 0 for the pole-centred first
    and last rows of the CAM finite-volume grid, so output cells over them came out 0. A target cell only partly
    over a regional source averages the part covered; one not covered at all is NaN."""
    lat_w = _overlaps(np.sin(np.deg2rad(cell_edges(lat, -90.0, 90.0))),
                      np.sin(np.deg2rad(cell_edges(lat_out, -90.0, 90.0))))
    lon_w = _overlaps(cell_edges(lon), cell_edges(np.asarray(lon_out) % 360.0), 360.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        lat_w = lat_w / lat_w.sum(axis=1, keepdims=True)
        lon_w = lon_w / lon_w.sum(axis=1, keepdims=True)
    return lat_w @ np.asarray(values, np.float64) @ lon_w.T  # (..., H, W): rows then columns


# ------------------------------------------------------------------------------------------ driver
REGRID_NOTES = {
    "bilinear": "bilinear, xarray.interp (scipy), periodic in longitude; latitudes beyond the source rows take "
                "the nearest row",
    "conservative": "first-order conservative (area-weighted cell overlaps on the sphere, separable in sin(lat) and "
                    "lon), periodic in longitude",
}


def parse_grid_option(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    from exascale_climate.config import parse_grid

    return parse_grid(text)


def _stamp(t: np.datetime64) -> str:
    d = t.astype("datetime64[s]").item()
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}-{d.hour:02d}-{d.minute:02d}"


def resolve(fields: list[Field], inputs: list[str], filler: Filler | None = None) -> dict[str, Result]:
    """Every CAM5 variable from the pool, or one error naming all that cannot be made."""
    pool = Pool(fields)
    recipes = Recipes(pool, filler)
    results = {v: recipes.get(v) for v in ("PSL",) + tuple(VARIABLE_NAMES)}  # PSL first: the grid fills use
    results = {v: results[v] for v in VARIABLE_NAMES}
    missing = [v for v, r in results.items() if r is None]
    if missing:
        where = ", ".join(inputs)
        need_levels = [v for v in missing if v in LEVELS]
        hint = ""
        if need_levels and not pool.has_levels():
            hint = (f"; the input has no pressure levels, which {need_levels} need "
                    f"({sorted({LEVELS[v][0] for v in need_levels})} hPa)")
        if filler is None:
            hint += "; --fill-from FILE fills them (nearest pressure level, else FILE's zonal mean) if you accept that"
        else:
            hint += f"; {filler.reference.name} (--fill-from) lacks them too"
        found = sorted(n for n in pool.fields if not n.startswith("@"))
        raise DataError(where, f"cannot make CAM5 variable(s) {missing} from the variables found {found}{hint}",
                        field=missing[0])
    for r in results.values():  # a derivation that used a filled input says so
        if r is not None and r.provenance == "derived" and "fill:" in r.sources:
            r.derivation += " (with filled inputs: see their provenance)"
    return results  # type: ignore[return-value]


def parse_valid_time(text: str | None) -> np.datetime64 | None:
    if not text:
        return None
    try:
        return np.datetime64(text.replace(" ", "T"), "s")
    except ValueError:
        raise ExaclimateError(f"--time: {text!r} is not an ISO date-time like 1994-11-10T12:00") from None


def import_files(inputs: list[str | Path], out_dir: str | Path, grid: tuple[int, int] | None = None,
                 method: str = "auto", valid_time: np.datetime64 | None = None,
                 fill_from: str | Path | None = None) -> dict:
    """`exaclimate data import`: one ClimateNet netCDF per time step common to all the variables.

    `valid_time` dates inputs that carry no time at all (some example and archive files); `fill_from` is the
    opt-in for variables nothing can make (see `Filler`); `method` is the regridding (`choose_method`)."""
    from exascale_climate import __version__
    from exascale_climate.data.writers import write_netcdf_sample
    from exascale_climate.utils.io import atomic_path

    if method not in REGRID_METHODS:
        raise ExaclimateError(f"--regrid: {method!r} is not one of {list(REGRID_METHODS)}")
    paths = [str(p) for p in inputs]
    fields: list[Field] = []
    for p in paths:
        fields += open_fields(p)
    if valid_time is not None and not any(f.times.size for f in fields):
        for f in fields:
            if f.values.shape[0] == 1:
                f.times = np.array([valid_time], "datetime64[s]")
    filler = Filler(fill_from) if fill_from else None
    results = resolve(fields, paths, filler)
    timed = {v: r for v, r in results.items() if r.field.times.size}
    if not timed:
        raise DataError(", ".join(paths), "no time coordinate in any variable (give one with --time)",
                        field="time")
    common = sorted(set.intersection(*(set(r.field.times.tolist()) for r in timed.values())))
    if not common:
        raise DataError(", ".join(paths), "the variables share no time step", field="time")
    ref = results["PSL"].field
    lat_out, lon_out = default_coordinates(*grid) if grid else (ref.lat, ref.lon)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    epoch = np.datetime64("1970-01-01T00:00:00", "s")
    methods = {v: choose_method(v, r.field.lat, r.field.lon, lat_out, lon_out, method) if grid else "none"
               for v, r in results.items()}
    for t in common:
        data = np.empty((len(lat_out), len(lon_out), len(VARIABLE_NAMES)), np.float32)
        for i, var in enumerate(VARIABLE_NAMES):
            r = results[var]
            k = int(np.flatnonzero(r.field.times == t)[0]) if r.field.times.size else 0
            data[..., i] = regrid(r.values[k], r.field.lat, r.field.lon, lat_out, lon_out,
                                  methods[var] if grid else "bilinear")
            if not np.isfinite(data[..., i]).all():
                f = r.field
                if grid and np.isfinite(r.values[k]).all():  # finite source, NaN output: outside the source's domain
                    raise DataError(f.path, f"{var}: the {grid[0]}x{grid[1]} global grid reaches beyond the source's "
                                            f"domain ({f.lat.min():g}..{f.lat.max():g} N, {f.lon.min():g}.."
                                            f"{f.lon.max():g} E); import regional fields without --grid",
                                    field=r.sources)
                raise DataError(f.path, f"non-finite values in {var} at {t}", field=r.sources)
        target = out / f"data-{_stamp(np.datetime64(t, 's'))}.nc"
        hours = float((np.datetime64(t, "s") - epoch) / np.timedelta64(1, "s")) / 3600.0
        with atomic_path(target) as tmp:
            write_netcdf_sample(tmp, data, None, list(VARIABLE_NAMES), lat=lat_out, lon=lon_out, time_hours=hours,
                                time_units="hours since 1970-01-01 00:00:00", calendar="standard", attrs={
                                    "Conventions": "CF-1.8", "title": "CAM5 variables imported by exaclimate",
                                    "source_files": ", ".join(paths),
                                    "regridding": _regrid_summary(methods) if grid else
                                    "none (source grid, reordered)",
                                    "history": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ} exaclimate "
                                               f"{__version__} data import"})
            _annotate(tmp, results, methods)
        written.append(str(target))
    summary = {v: results[v].provenance for v in VARIABLE_NAMES}
    return {"written": written, "provenance": summary, "grid": (len(lat_out), len(lon_out)), "regridding": methods}


def _regrid_summary(methods: dict[str, str]) -> str:
    used = sorted(set(methods.values()))
    return "; ".join(f"{m} for {','.join(v for v in VARIABLE_NAMES if methods[v] == m)}: {REGRID_NOTES[m]}"
                     for m in used)


def _annotate(path, results: dict[str, Result], methods: dict[str, str]) -> None:
    import netCDF4

    with netCDF4.Dataset(path, "a") as nc:
        for var, r in results.items():
            v = nc[var]
            v.provenance = r.provenance
            v.source_variables = r.sources
            v.derivation = r.derivation
            v.source_file = r.field.path if r.provenance != FILLED or not r.sources.startswith("fill:") else \
                "(none: filled)"
            v.regridding = methods[var]


def import_command(inputs, out_dir, grid_text, method: str = "auto", time_text: str | None = None,
                   fill_from: str | None = None) -> dict:
    try:
        grid = parse_grid_option(grid_text)
    except ExaclimateError as e:
        raise ExaclimateError(f"--grid: {e}") from None
    return import_files(list(inputs), out_dir, grid, method, parse_valid_time(time_text), fill_from)
