"""Heuristic TC/AR labeller from the physical fields alone, in the spirit of TECA's multivariate thresholds.

Tropical cyclones (Vitart/TECA-style): a sea-level-pressure minimum deeper than a threshold below its
surroundings, cyclonic 850 hPa relative vorticity (positive north, negative south of the equator), an upper-level
warm core, and a 10 m wind maximum within a search radius; each accepted centre labels the moist part of a disk.
Atmospheric rivers (TECA-BARD-style): connected regions of high integrated vapour transport and a precipitable-
water anomaly that are long, narrow, reach the mid-latitudes and carry their vapour along their length (the
long axis within `ar_max_orientation_deg` of the mean transport, as Guan & Waliser 2015 require). TC pixels
override AR pixels, as in the paper.

IVT is not among the 16 variables; TMQ x |850 hPa wind| stands in for it (a column-mean wind close to 850 hPa).
All thresholds are in physical units (km, Pa, K, m/s), and every search window and smoothing box is so many km
wide in both directions at every latitude (its zonal width in columns grows as 1/cos(latitude)), so the
labeller works on any regular lat/lon grid and finds the same storm at 10 and at 50 degrees.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy import ndimage

from exascale_climate.config import LabellerConfig
from exascale_climate.data.grid import Grid, great_circle_km
from exascale_climate.errors import DataError
from exascale_climate.data.grid import label_objects

REQUIRED = ("PSL", "U850", "V850", "UBOT", "VBOT", "T200", "T500", "TMQ")
TC_CLASS, AR_CLASS = 1, 2
BACKGROUND_KM = 1500.0  # scale of the environment a storm is compared with
MAX_CANDIDATES = 400


@dataclass
class Cyclone:
    lat: float
    lon: float
    psl_anomaly: float  # Pa
    vorticity: float  # 1/s, cyclonic sign
    warm_core: float  # K
    max_wind: float  # m/s


@dataclass
class River:
    length_km: float
    width_km: float
    area_km2: float
    max_abs_lat: float
    orientation_deg: float = 0.0  # angle between the long axis and the mean transport (0..90)


def zonal_pixels(grid: Grid, km: float) -> np.ndarray:
    """Half-width in columns of a `km` window on each row: the zonal pixel width shrinks with cos(latitude), so a
    window of fixed kilometres spans more columns poleward (capped at the whole circle)."""
    return np.minimum(np.maximum(1, np.round(km / grid.dx_km)).astype(int), len(grid.lon) // 2)


def _rowwise(filter1d, field: np.ndarray, widths: np.ndarray, mode: str) -> np.ndarray:
    """Apply a 1-D zonal filter with a row-dependent width (rows sharing a width go together)."""
    out = np.empty_like(field)
    for width in np.unique(widths):
        rows = widths == width
        out[rows] = filter1d(field[rows], size=int(width), axis=1, mode=mode)
    return out


def smooth(field: np.ndarray, grid: Grid, km: float) -> np.ndarray:
    """A ~`km` wide running mean (two box passes ~ a Gaussian; cost independent of the width), periodic in lon;
    `km` wide in both directions at every latitude."""
    sy = max(1, int(round(grid.pixels(km, "y"))))
    sx = 2 * zonal_pixels(grid, km / 2) + 1
    mode_x = "wrap" if grid.periodic else "nearest"
    out = field.astype(np.float64, copy=False)
    for _ in range(2):
        out = ndimage.uniform_filter1d(out, size=sy, axis=0, mode="nearest")
        out = _rowwise(ndimage.uniform_filter1d, out, sx, mode_x)
    return out


def local_minima(field: np.ndarray, grid: Grid, radius_km: float) -> np.ndarray:
    """Points that are the minimum of a box of +-radius_km in both directions (zonal half-width per row)."""
    sy = max(1, int(round(grid.pixels(radius_km, "y"))))
    mode_x = "wrap" if grid.periodic else "nearest"
    zonal = _rowwise(ndimage.minimum_filter1d, field, 2 * zonal_pixels(grid, radius_km) + 1, mode_x)
    return field == ndimage.minimum_filter1d(zonal, size=2 * sy + 1, axis=0, mode="nearest")


def relative_vorticity(u: np.ndarray, v: np.ndarray, grid: Grid) -> np.ndarray:
    """dv/dx - du/dy (1/s) by centred differences; periodic in longitude on a global grid."""
    return grid.ddx(v) - grid.ddy(u)


def _require(fields: Mapping[str, np.ndarray], names) -> None:
    missing = [n for n in names if n not in fields]
    if missing:
        raise DataError("<fields>", f"the labeller needs variable(s) {missing}", field=missing[0])


def find_cyclones(fields: Mapping[str, np.ndarray], grid: Grid, cfg: LabellerConfig) -> list[Cyclone]:
    """TC centres passing every criterion."""
    psl = fields["PSL"].astype(np.float64)
    psl_anom = psl - smooth(psl, grid, BACKGROUND_KM)
    local_min = local_minima(psl, grid, cfg.tc_search_radius_km)
    near_tropics = (np.abs(grid.lat) <= cfg.tc_max_abs_lat)[:, None]
    rows, cols = np.nonzero(local_min & near_tropics & (psl_anom <= cfg.tc_psl_anomaly_pa))
    if rows.size == 0:
        return []
    order = np.argsort(psl_anom[rows, cols])[:MAX_CANDIDATES]
    hemisphere = np.sign(grid.lat)[:, None]
    vort = relative_vorticity(fields["U850"].astype(np.float64), fields["V850"].astype(np.float64), grid)
    cyclonic = vort * np.where(hemisphere == 0, 1.0, hemisphere)
    temp = 0.5 * (fields["T200"].astype(np.float64) + fields["T500"].astype(np.float64))
    warm = temp - smooth(temp, grid, BACKGROUND_KM)
    wind = np.hypot(fields["UBOT"], fields["VBOT"])
    found: list[Cyclone] = []
    for i in order:
        r, c = int(rows[i]), int(cols[i])
        lat0, lon0 = float(grid.lat[r]), float(grid.lon[c])
        if any(great_circle_km(lat0, lon0, f.lat, f.lon) < cfg.tc_search_radius_km for f in found):
            continue
        wr, wc, x, y = grid.window(lat0, lon0, cfg.tc_search_radius_km)
        inside = np.hypot(x, y) <= cfg.tc_search_radius_km
        core = np.hypot(x, y) <= max(cfg.tc_search_radius_km / 2, 1.5 * grid.dy_km)
        vmax = float(cyclonic[wr][:, wc][inside].max())
        wcore = float(warm[wr][:, wc][core].max())
        wmax = float(wind[wr][:, wc][inside].max())
        if vmax >= cfg.tc_vorticity_min and wcore >= cfg.tc_warm_core_k and wmax >= cfg.tc_wind_min:
            found.append(Cyclone(lat0, lon0, float(psl_anom[r, c]), vmax, wcore, wmax))
    return found


def cyclone_mask(cyclones: list[Cyclone], fields: Mapping[str, np.ndarray], grid: Grid,
                 cfg: LabellerConfig) -> np.ndarray:
    """The moist part (TMQ above its zonal median) of a disk around each centre; the inner half always."""
    mask = np.zeros(grid.shape, bool)
    tmq = fields["TMQ"]
    moist = tmq > np.median(tmq, axis=1, keepdims=True)
    for tc in cyclones:
        rows, cols, x, y = grid.window(tc.lat, tc.lon, cfg.tc_radius_km)
        dist = np.hypot(x, y)
        inside = (dist <= cfg.tc_radius_km) & moist[rows][:, cols] | (dist <= cfg.tc_radius_km / 2)
        mask[rows, cols] |= inside
    return mask


def _feret_km(lat: np.ndarray, lon: np.ndarray, max_points: int = 300) -> float:
    """Largest great-circle distance between points of an object (its length, robust to curvature)."""
    if lat.size > max_points:
        pick = np.linspace(0, lat.size - 1, max_points).astype(int)
        lat, lon = lat[pick], lon[pick]
    d = great_circle_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    return float(d.max()) if d.size else 0.0


# The labeller's verdict on every pixel's AR candidate object, in the order its tests run (a rejected object gets
# the first test it fails). `river_verdicts` keeps them so errors can be traced to a rule (`evaluate --errors`).
AR_VERDICTS = ("no candidate", "accepted", "too small", "tropical", "short", "too wide", "aspect", "orientation")
NO_CANDIDATE, ACCEPTED = 0, 1


def river_verdicts(fields: Mapping[str, np.ndarray], grid: Grid, cfg: LabellerConfig
                   ) -> tuple[np.ndarray, list[River]]:
    """(H, W) int8 index into AR_VERDICTS per pixel, and the accepted objects' geometry.

    A candidate is a connected region passing the local test (IVT and TMQ anomaly); the rest are whole-object
    tests, so a pixel can pass every local threshold and still not be a river."""
    tmq = fields["TMQ"].astype(np.float64)
    anomaly = tmq - np.median(tmq, axis=1, keepdims=True)
    ivt_u, ivt_v = tmq * fields["U850"], tmq * fields["V850"]
    ivt = np.hypot(ivt_u, ivt_v)
    candidate = (ivt >= cfg.ar_ivt_threshold) & (anomaly >= cfg.ar_tmq_anomaly)
    objects, n = label_objects(candidate, grid.periodic)
    rivers: list[River] = []
    if n == 0:
        return np.zeros(grid.shape, np.int8), rivers
    codes = np.full(n + 1, NO_CANDIDATE, np.int8)  # codes[k]: the verdict on object k (0 is no object)
    areas = grid.cell_areas()
    area_per_object = ndimage.sum_labels(areas, objects, index=np.arange(1, n + 1))
    max_lat = ndimage.maximum(np.abs(grid.lat)[:, None] * np.ones(grid.shape[1]), objects, np.arange(1, n + 1))
    min_area = cfg.ar_min_length_km * grid.dy_km  # cheaper pre-filter: at least a one-pixel-wide line
    edges = candidate & ~ndimage.binary_erosion(candidate)
    slices = ndimage.find_objects(objects)
    verdict = AR_VERDICTS.index
    for k in range(1, n + 1):
        if area_per_object[k - 1] < min_area:
            codes[k] = verdict("too small")
            continue
        if max_lat[k - 1] < cfg.ar_min_abs_lat:
            codes[k] = verdict("tropical")
            continue
        rows, cols = _object_edges(objects, edges, k, slices[k - 1])
        length = _feret_km(grid.lat[rows], grid.lon[cols])
        width = area_per_object[k - 1] / max(length, 1.0)
        if length < cfg.ar_min_length_km:
            codes[k] = verdict("short")
        elif width > cfg.ar_max_width_km:
            codes[k] = verdict("too wide")
        elif length / width < cfg.ar_min_aspect:
            codes[k] = verdict("aspect")
        else:
            inside = objects == k
            r_all, c_all = np.nonzero(inside)
            angle = _axis_transport_angle(grid.lat[r_all], grid.lon[c_all], areas[inside],
                                          ivt_u[inside], ivt_v[inside])
            if angle > cfg.ar_max_orientation_deg:
                codes[k] = verdict("orientation")
                continue
            codes[k] = ACCEPTED
            rivers.append(River(length, width, float(area_per_object[k - 1]), float(max_lat[k - 1]), angle))
    return codes[objects], rivers


def find_rivers(fields: Mapping[str, np.ndarray], grid: Grid, cfg: LabellerConfig) -> tuple[np.ndarray, list[River]]:
    """AR mask and the accepted objects' geometry."""
    verdicts, rivers = river_verdicts(fields, grid, cfg)
    return verdicts == ACCEPTED, rivers


def _axis_transport_angle(lat: np.ndarray, lon: np.ndarray, weights: np.ndarray, ivt_u: np.ndarray,
                          ivt_v: np.ndarray) -> float:
    """Degrees (0..90) between an object's long axis -- the principal axis of its cells in km east/north of its
    centroid -- and the direction of its area-weighted mean vapour transport (a line has no sign, so the angle
    of two axes is at most 90)."""
    from exascale_climate.data.grid import KM_PER_DEG

    lat0 = np.average(lat, weights=weights)
    lon_rad = np.deg2rad(lon)
    lon0 = np.rad2deg(np.arctan2(np.average(np.sin(lon_rad), weights=weights),
                                 np.average(np.cos(lon_rad), weights=weights)))
    x = ((lon - lon0 + 180.0) % 360.0 - 180.0) * KM_PER_DEG * np.cos(np.deg2rad(lat))
    y = (lat - lat0) * KM_PER_DEG
    cov = np.cov(np.vstack([x, y]), aweights=weights)
    _, vectors = np.linalg.eigh(cov)
    ax, ay = vectors[:, -1]  # the largest eigenvalue's vector
    tu, tv = np.average(ivt_u, weights=weights), np.average(ivt_v, weights=weights)
    cos = abs(ax * tu + ay * tv) / max(np.hypot(tu, tv) * np.hypot(ax, ay), 1e-12)
    return float(np.rad2deg(np.arccos(np.clip(cos, 0.0, 1.0))))


def _object_edges(objects, edges, k, slc):
    """Edge pixels of object k, searched only in its bounding box (a wrapped object spans all columns)."""
    sub = (objects[slc] == k) & edges[slc]
    r, c = np.nonzero(sub)
    return r + slc[0].start, c + slc[1].start


def label_fields(fields: Mapping[str, np.ndarray], lat: np.ndarray, lon: np.ndarray,
                 cfg: LabellerConfig | None = None) -> np.ndarray:
    """(H, W) uint8 labels: 0 background, 1 TC, 2 AR (TC wins where both apply)."""
    cfg = cfg or LabellerConfig()
    _require(fields, REQUIRED)
    grid = Grid(lat, lon)
    labels = np.zeros(grid.shape, np.uint8)
    ar_mask, _ = find_rivers(fields, grid, cfg)
    labels[ar_mask] = AR_CLASS
    cyclones = find_cyclones(fields, grid, cfg)
    labels[cyclone_mask(cyclones, fields, grid, cfg)] = TC_CLASS
    return labels


def label_fronts(fields: Mapping[str, np.ndarray], lat: np.ndarray, lon: np.ndarray,
                 cfg: LabellerConfig | None = None) -> np.ndarray:
    """(H, W) bool weather-front mask (thermal front parameter, data/fronts.py): a patch class, not a label."""
    from exascale_climate.data.fronts import front_mask

    return front_mask(fields, Grid(lat, lon), cfg or LabellerConfig())[0]
