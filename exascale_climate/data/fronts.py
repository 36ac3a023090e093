"""Weather fronts: drawn by the synthetic generator, found by the thermal front parameter (a patch class only).

Generator: every extratropical low trails a cold front -- a narrow band of strong near-surface temperature
gradient (warm air ahead, on the equatorward-east side; cold air behind), a pressure trough along it, and rain on
its cold side -- that grows and decays with its parent low.

Detector: the objective method of Renard & Clarke (1965) as used by Hewson (1998, "Objective fronts",
Meteorol. Appl. 5, 37-65) and in front climatologies (Berry, Reeder & Jakob 2011, GRL 38, L04809; Jenkner et
al. 2010, Meteorol. Z. 19, 121-130): on a smoothed temperature field tau (here TREFHT),
    TFP = -grad|grad tau| . grad tau / |grad tau|     (thermal front parameter, K per (100 km)^2)
and a frontal zone is where TFP exceeds K1 and |grad tau| exceeds the gradient threshold K2 (Hewson's two
masking criteria). As Hewson's fronts lie in troughs, a candidate must also sit in a sea-level-pressure trough
(positive Laplacian of smoothed PSL), which removes coastlines. Objects shorter than a minimum length are
dropped. A uniform gradient has TFP = 0 and is never a front.

Fronts do not enter the 3-class segmentation masks; `exaclimate patches extract` uses `front_mask` for its WF
patches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from exascale_climate.data.grid import KM_PER_DEG, Grid, great_circle_km, label_objects

REQUIRED = ("TREFHT", "PSL")
# gradients are reported per 100 km, as in the front literature (Grid.ddx/ddy give them per metre)
R_DRY, GRAVITY, LAPSE_RATE = 287.04, 9.80616, 0.0065  # J kg-1 K-1, m s-2, K m-1


# ---------------------------------------------------------------------------------------- generation
@dataclass
class Front:
    """A cold front trailing a low: its shape (km, local to the low centre) and its strength."""

    length_km: float
    angle_deg: float  # from due equatorward, toward the west
    bend_km: float
    width_km: float
    dt_k: float  # temperature contrast across the front
    trough_pa: float
    rain: float  # m/s on the cold side


def front_of(low, seed: int) -> Front:
    """The front of one LowTrack, a function of the seed and the low's genesis time only."""
    rng = np.random.default_rng([seed, 4, int(round(low.start_h * 1000)) + 2**40])
    return Front(rng.uniform(1400, 2600), rng.uniform(10, 40), rng.uniform(-300, 300), rng.uniform(90, 140),
                 rng.uniform(12, 18), rng.uniform(250, 500), rng.uniform(2e-7, 5e-7))


def _front_line(front: Front, hemi: float, n: int = 48) -> np.ndarray:
    """(n, 2) points (east km, north km) from the low centre equatorward, bent to one side."""
    s = np.linspace(0.0, 1.0, n)
    a = math.radians(front.angle_deg)
    east = -front.length_km * s * math.sin(a) + front.bend_km * np.sin(np.pi * s)
    north = -hemi * front.length_km * s * math.cos(a)
    return np.stack([east, north], axis=1)


def draw_fronts(fields: dict[str, np.ndarray], grid: Grid, lows, hours: float, seed: int) -> None:
    """Add the fronts of the lows alive at `hours` to TREFHT, TS, PSL, PS and PRECT (in place)."""
    for low in lows:
        state = low.at(hours)
        if state is None:
            continue
        clat, clon, dp, _ = state
        env = math.sqrt(dp / low.dp_pa)  # fronts form early in a low's life
        front = front_of(low, seed)
        hemi = 1.0 if clat >= 0 else -1.0
        width = max(front.width_km, 1.2 * grid.dy_km)  # a grid cannot hold a front narrower than its cells
        line = _front_line(front, hemi)
        rows, cols, x, y = grid.window(clat, clon, front.length_km + 5 * width)
        # the nearest line point of every pixel: a k-d tree query, not an (H, W, 48) distance array (that
        # took most of a 768 x 1152 step)
        nearest = cKDTree(line).query(np.stack([x.ravel(), y.ravel()], axis=1))[1].reshape(x.shape)
        tangent = np.gradient(line, axis=0)
        tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
        tx, ty = tangent[nearest, 0], tangent[nearest, 1]
        px, py = x - line[nearest, 0], y - line[nearest, 1]
        # signed distance, positive on the warm side (east of the line in both hemispheres)
        n = hemi * (px * -ty + py * tx)
        s = nearest / (len(line) - 1)
        along = (np.sin(0.5 * np.pi * np.clip(s / 0.1, 0, 1))
                 * np.sin(0.5 * np.pi * np.clip((1 - s) / 0.15, 0, 1))) ** 2  # tapered ends
        confined = np.exp(-((n / (5.0 * width)) ** 2))
        dt = env * along * 0.5 * front.dt_k * np.tanh(n / width) * confined
        trough = -env * along * front.trough_pa * np.exp(-((n / (1.5 * width)) ** 2))
        rain = env * along * front.rain * np.exp(-(((n + width) / width) ** 2))
        psl = fields["PSL"][rows, cols]
        fields["PS"][rows, cols] += (trough * fields["PS"][rows, cols] / psl).astype(np.float32)
        fields["PSL"][rows, cols] += trough.astype(np.float32)
        fields["TREFHT"][rows, cols] += dt.astype(np.float32)
        fields["TS"][rows, cols] += dt.astype(np.float32)
        fields["PRECT"][rows, cols] += rain.astype(np.float32)


# ----------------------------------------------------------------------------------------- detection
@dataclass
class FrontObject:
    lat: float  # a pixel of the object nearest to its centroid
    lon: float
    length_km: float
    pixels: int


def _smooth(field: np.ndarray, grid: Grid, km: float) -> np.ndarray:
    """Gaussian smoothing of about `km` (the scale the thresholds refer to); periodic in longitude."""
    sy = max(0.5, km / grid.dy_km)
    sx = max(0.5, km / (grid.dlon * KM_PER_DEG))
    return ndimage.gaussian_filter(field.astype(np.float64), (sy, sx),
                                   mode=("nearest", "wrap" if grid.periodic else "nearest"))


def gradient_per_100km(field: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """(east, north) components of the gradient, per 100 km, on the sphere (Grid's finite differences)."""
    return grid.ddx(field) * 1e5, grid.ddy(field) * 1e5


def thermal_front_parameter(temp: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """(TFP in K/(100 km)^2, |grad T| in K/100 km) of an already smoothed temperature field."""
    gx, gy = gradient_per_100km(temp, grid)
    mag = np.hypot(gx, gy)
    mx, my = gradient_per_100km(mag, grid)
    tfp = -(mx * gx + my * gy) / np.maximum(mag, 1e-9)
    return tfp, mag


def trough(psl: np.ndarray, grid: Grid, smooth_km: float) -> np.ndarray:
    """True where smoothed PSL curves upward (positive Laplacian): a trough or a low."""
    p = _smooth(psl, grid, smooth_km)
    gx, gy = gradient_per_100km(p, grid)
    return (gradient_per_100km(gx, grid)[0] + gradient_per_100km(gy, grid)[1]) > 0


def sea_level_temperature(fields: Mapping[str, np.ndarray]) -> np.ndarray:
    """TREFHT reduced to sea level with the standard lapse rate, the surface height from PS and PSL
    (hypsometric), so mountains are not read as fronts (fronts are analysed on sea-level-reduced values)."""
    t = fields["TREFHT"].astype(np.float64)
    if "PS" not in fields:
        return t
    zs = np.maximum(R_DRY * t / GRAVITY * np.log(fields["PSL"] / np.maximum(fields["PS"], 1.0)), 0.0)
    return t + LAPSE_RATE * zs


def front_mask(fields: Mapping[str, np.ndarray], grid: Grid, cfg) -> tuple[np.ndarray, list[FrontObject]]:
    """Boolean (H, W) mask of frontal zones and the accepted objects (cfg: a LabellerConfig's wf_* keys)."""
    from exascale_climate.errors import DataError

    missing = [n for n in REQUIRED if n not in fields]
    if missing:
        raise DataError("<fields>", f"the front detector needs variable(s) {missing}", field=missing[0])
    tau = _smooth(sea_level_temperature(fields), grid, cfg.wf_smooth_km)
    tfp, mag = thermal_front_parameter(tau, grid)
    alat = np.abs(grid.lat)[:, None]
    band = (alat >= cfg.wf_min_abs_lat) & (alat <= cfg.wf_max_abs_lat)
    candidate = (tfp >= cfg.wf_tfp_min) & (mag >= cfg.wf_gradient_min) & band
    candidate &= trough(fields["PSL"], grid, cfg.wf_smooth_km)
    objects, n = label_objects(candidate, grid.periodic)
    mask = np.zeros(grid.shape, bool)
    found: list[FrontObject] = []
    for k, slc in enumerate(ndimage.find_objects(objects), start=1):
        if slc is None:
            continue
        r, c = np.nonzero(objects[slc] == k)
        r, c = r + slc[0].start, c + slc[1].start
        lat, lon = grid.lat[r], grid.lon[c]
        pick = np.linspace(0, r.size - 1, min(r.size, 200)).astype(int)
        length = float(great_circle_km(lat[pick, None], lon[pick, None], lat[None, pick], lon[None, pick]).max())
        if length < cfg.wf_min_length_km:
            continue
        mask[r, c] = True
        found.append(FrontObject(*central_pixel(lat, lon), length, int(r.size)))
    return mask, found


def central_pixel(lat: np.ndarray, lon: np.ndarray) -> tuple[float, float]:
    """The object's own pixel nearest to its centroid (a curved object's centroid may lie outside it)."""
    x = np.cos(np.deg2rad(lat)) * np.cos(np.deg2rad(lon))
    y = np.cos(np.deg2rad(lat)) * np.sin(np.deg2rad(lon))
    z = np.sin(np.deg2rad(lat))
    cx, cy, cz = x.mean(), y.mean(), z.mean()
    clat = math.degrees(math.atan2(cz, math.hypot(cx, cy)))
    clon = math.degrees(math.atan2(cy, cx)) % 360.0
    i = int(great_circle_km(lat, lon, clat, clon).argmin())
    return float(lat[i]), float(lon[i])
