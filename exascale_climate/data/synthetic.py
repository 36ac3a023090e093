"""CAM5-like synthetic climate fields with tropical cyclones and atmospheric rivers (`exaclimate data synth`).

Real CAM5 output cannot be downloaded here, so the toolkit makes its own, physically consistent enough that the
maps read like a climate model's and the networks learn real structure:
- climatology by latitude (seasonal thermal equator, trades / westerlies, subtropical highs, subpolar lows),
  a fixed coarse Earth (land-sea contrast, diurnal cycle over land, mountains lowering PS and TMQ);
- spatially correlated weather noise (spectral Gaussian fields) advected by the zonal wind and blended between
  keyframes, so consecutive 3-hourly steps are coherent;
- balanced relations between variables: geostrophic winds from the pressure anomaly (turned toward low pressure
  near the ground), hydrostatic Z1000/Z200 from PSL and layer temperatures, PS from PSL and orography,
  QREFHT from relative humidity and saturation, PRECT from low-level moisture convergence;
- event tracks: warm-core tropical cyclones (Holland pressure/wind profile, cyclonic in each hemisphere, moisture
  and rain bands), atmospheric rivers (long narrow TMQ plumes from the subtropics poleward with a low-level jet
  along them and a parent extratropical low) and cold-core extratropical lows (which a TC detector must reject)
  trailing cold fronts (data/fronts.py; a patch class for the 2017 study, not a segmentation class).

The LABELS of every file come from `labeller.label_fields` run on the finished fields, never from the tracks.
Everything is a function of (seed, time index), so any number of worker processes writes identical files.
"""
from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from scipy import ndimage

from exascale_climate.config import LabellerConfig, SynthConfig
from exascale_climate.data.geography import geography
from exascale_climate.data.grid import KM_PER_DEG, Grid, great_circle_km
from exascale_climate.utils.io import remove_stale_temps
from exascale_climate.utils.log import get_logger
from exascale_climate.variables import NUM_CLASSES, VARIABLE_NAMES

log = get_logger("data.synth")

R_DRY = 287.04  # J kg-1 K-1
GRAVITY = 9.80616  # m s-2 (CESM)
OMEGA = 7.292e-5  # s-1
TIME_UNITS = "hours since 2000-01-01 00:00:00"
CALENDAR = "noleap"


# ------------------------------------------------------------------------------------------- tracks
# A typical value and a weather-sized spread per variable (a mid-latitude ocean point): `weather_like` maps
# standard-normal test and benchmark fields onto them, and any |z| < 10 stays within variables.py's ranges.
TYPICAL = {"TMQ": (25.0, 3.0), "U850": (0.0, 5.0), "V850": (0.0, 5.0), "UBOT": (0.0, 5.0), "VBOT": (0.0, 5.0),
           "QREFHT": (0.01, 0.001), "PS": (97000.0, 500.0), "PSL": (101000.0, 500.0), "T200": (220.0, 3.0),
           "T500": (255.0, 5.0), "PRECT": (1e-5, 1e-6), "TS": (288.0, 5.0), "TREFHT": (287.0, 5.0),
           "Z1000": (100.0, 50.0), "Z200": (11800.0, 100.0), "ZBOT": (60.0, 2.0)}


def weather_like(standard: np.ndarray, names=VARIABLE_NAMES, dtype=np.float32) -> np.ndarray:
    """(..., C) fields of order 1 (noise, blobs) as plausible weather of the variables `names`: per channel
    typical + spread * value. An affine map per channel, so anything normalised per channel is unchanged, and
    the read path's range checks (issue 23) accept the result."""
    mean, spread = (np.array([TYPICAL[n][k] for n in names], np.float64) for k in (0, 1))
    return (np.asarray(standard, np.float64) * spread + mean).astype(dtype)


def _envelope(tau: float) -> float:
    """Growth and decay over a lifetime (tau in 0..1)."""
    return float(np.sin(np.pi * np.clip(tau, 0.0, 1.0)) ** 0.6)


def _wrap_lon(lon):
    return np.mod(lon, 360.0)


@dataclass
class CycloneTrack:
    """A tropical cyclone: westward and poleward drift that recurves eastward, peak intensity mid-life."""

    start_h: float
    life_h: float
    lat0: float
    lon0: float
    dp_pa: float  # peak central pressure deficit
    rmax_km: float
    holland_b: float
    u_start: float  # zonal drift (m/s) at genesis and at the end of life
    u_end: float
    v_pole: float  # poleward drift (m/s)

    def at(self, hours: float):
        tau = (hours - self.start_h) / self.life_h
        if not 0.0 < tau < 1.0:
            return None
        s = (hours - self.start_h) * 3600.0
        life = self.life_h * 3600.0
        x_km = (self.u_start * s + (self.u_end - self.u_start) * s * s / (2 * life)) / 1e3
        y_km = self.v_pole * s / 1e3
        sign = 1.0 if self.lat0 >= 0 else -1.0
        lat = self.lat0 + sign * y_km / KM_PER_DEG
        lon = self.lon0 + x_km / (KM_PER_DEG * math.cos(math.radians(0.5 * (lat + self.lat0))))
        return lat, float(_wrap_lon(lon)), self.dp_pa * _envelope(tau)


@dataclass
class RiverTrack:
    """An atmospheric river: a curved plume from (lat0, lon0) in the subtropics to (lat1, lon0 + dlon)."""

    start_h: float
    life_h: float
    lat0: float
    lon0: float
    lat1: float
    dlon: float
    bend_deg: float
    sigma_km: float
    tmq_amp: float  # kg m-2
    jet: float  # m s-1 low-level jet along the axis
    drift: float  # eastward drift, m s-1

    def start_lon(self, hours: float) -> float:
        """Longitude of the tropical end after drifting east since genesis."""
        shift_km = self.drift * (hours - self.start_h) * 3.6
        return self.lon0 + shift_km / (KM_PER_DEG * math.cos(math.radians(0.5 * (self.lat0 + self.lat1))))

    def at(self, hours: float):
        tau = (hours - self.start_h) / self.life_h
        if not 0.0 < tau < 1.0:
            return None
        t = np.linspace(0.0, 1.0, 48)[:, None]
        p0 = np.array([self.start_lon(hours), self.lat0])
        p2 = np.array([self.start_lon(hours) + self.dlon, self.lat1])
        mid = 0.5 * (p0 + p2)
        normal = np.array([-(p2 - p0)[1], (p2 - p0)[0]])
        p1 = mid + self.bend_deg * normal / np.linalg.norm(normal)
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2  # quadratic Bezier (lon, lat)
        return curve, _envelope(tau)


@dataclass
class LowTrack:
    """An extratropical (cold-core) low: a broad Gaussian PSL depression moving east."""

    start_h: float
    life_h: float
    lat0: float
    lon0: float
    dp_pa: float
    sigma_km: float
    u: float
    v_pole: float

    def at(self, hours: float):
        tau = (hours - self.start_h) / self.life_h
        if not 0.0 < tau < 1.0:
            return None
        s = (hours - self.start_h) * 3.6  # km per (m/s)
        sign = 1.0 if self.lat0 >= 0 else -1.0
        lat = self.lat0 + sign * self.v_pole * s / KM_PER_DEG
        lon = self.lon0 + self.u * s / (KM_PER_DEG * math.cos(math.radians(lat)))
        return lat, float(_wrap_lon(lon)), self.dp_pa * _envelope(tau), self.sigma_km


@dataclass
class Catalogue:
    cyclones: list[CycloneTrack] = field(default_factory=list)
    rivers: list[RiverTrack] = field(default_factory=list)
    lows: list[LowTrack] = field(default_factory=list)


GENESIS_WINDOW_H = 240.0


def _geneses(seed: int, kind: int, mean_active: float, mean_life_h: float, max_life_h: float, end_h: float):
    """(time, rng) per genesis: a Poisson process with `mean_active` events alive on average.

    Drawn window by window (10 days each, own random stream), so the first N steps of a longer run are the
    same as a run of N steps with the same seed.
    """
    rate = mean_active / mean_life_h
    first = int(math.floor(-max_life_h / GENESIS_WINDOW_H))
    last = int(math.ceil(end_h / GENESIS_WINDOW_H))
    for w in range(first, last + 1):
        rng = np.random.default_rng([seed, kind, w + 2**16])
        times = np.sort(rng.uniform(w * GENESIS_WINDOW_H, (w + 1) * GENESIS_WINDOW_H,
                                    size=rng.poisson(rate * GENESIS_WINDOW_H)))
        for t0 in times:
            yield float(t0), rng


def _over_ocean(landfrac: np.ndarray, grid: Grid, lat: float, lon: float) -> bool:
    return landfrac[grid.row_of(lat), grid.col_of(lon)] < 0.3


def make_catalogue(cfg: SynthConfig) -> Catalogue:
    """All event tracks of a run, from the seed alone (the same in every worker)."""
    grid = Grid.global_grid(*cfg.grid)
    landfrac, _ = geography(*cfg.grid)
    end_h = cfg.samples * cfg.hours_per_step
    cat = Catalogue()
    for t0, rng in _geneses(cfg.seed, 1, cfg.cyclones_per_step, 6 * 24, 9 * 24, end_h):
        for _ in range(20):  # genesis over warm ocean
            sign = 1.0 if rng.random() < 0.65 else -1.0
            lat0, lon0 = sign * rng.uniform(8.0, 20.0), rng.uniform(0.0, 360.0)
            if _over_ocean(landfrac, grid, lat0, lon0):
                break
        cat.cyclones.append(CycloneTrack(
            t0, rng.uniform(3, 9) * 24, lat0, lon0, float(min(1500 + rng.exponential(3000), 9000)),
            rng.uniform(25, 70), rng.uniform(1.2, 1.7), rng.uniform(-7, -3), rng.uniform(2, 8), rng.uniform(1, 2.5)))
    for t0, rng in _geneses(cfg.seed, 2, cfg.rivers_per_step, 2.75 * 24, 4 * 24, end_h):
        life = rng.uniform(1.5, 4) * 24
        for _ in range(30):  # over the ocean, and not on top of a river of the same days (they would merge)
            sign = 1.0 if rng.random() < 0.55 else -1.0
            lat0, lon0 = sign * rng.uniform(10.0, 20.0), rng.uniform(0.0, 360.0)
            crowded = any(r.lat0 * sign > 0 and r.start_h < t0 + life and t0 < r.start_h + r.life_h
                          and abs((r.start_lon(t0) - lon0 + 180.0) % 360.0 - 180.0) < 50.0 for r in cat.rivers)
            if _over_ocean(landfrac, grid, lat0, lon0) and not crowded:
                break
        cat.rivers.append(RiverTrack(
            t0, life, lat0, lon0, sign * rng.uniform(38, 55), rng.uniform(20, 45),
            rng.choice([-1, 1]) * rng.uniform(2, 6), rng.uniform(220, 340), rng.uniform(18, 28), rng.uniform(12, 20),
            rng.uniform(4, 9)))
    for t0, rng in _geneses(cfg.seed, 3, 6.0, 3.5 * 24, 5 * 24, end_h):
        sign = 1.0 if rng.random() < 0.5 else -1.0
        cat.lows.append(LowTrack(t0, rng.uniform(2, 5) * 24, sign * rng.uniform(35, 62), rng.uniform(0, 360),
                                 rng.uniform(1000, 3200), rng.uniform(500, 900), rng.uniform(7, 14), rng.uniform(0.5, 2)))
    return cat


# -------------------------------------------------------------------------------------------- noise
NOISE_SPECS = {  # name: (correlation length km, keyframe spacing h)
    "pressure": (900.0, 48.0),
    "temperature": (1500.0, 72.0),
    "moisture": (450.0, 24.0),
    "convection": (220.0, 6.0),
    "land": (300.0, 12.0),
}


class AdvectedNoise:
    """Unit-variance Gaussian random fields, advected zonally and blended between seeded keyframes.

    Keyframe k is drawn from (seed, name, k) only, so a field at time t is the same in any process.
    """

    def __init__(self, seed: int, name: str, grid: Grid, corr_km: float, key_hours: float, u_row: np.ndarray):
        self.seed, self.name, self.grid, self.key_hours = seed, name, grid, key_hours
        h, w = grid.shape
        sy = grid.pixels(corr_km, "y") / 2.0
        sx = grid.pixels(corr_km, "x") / 2.0
        ky = np.fft.fftfreq(h)[:, None]
        self.kx = np.fft.rfftfreq(w)[None, :]
        self.filter = np.exp(-2 * np.pi**2 * ((ky * sy) ** 2 + (self.kx * sx) ** 2))
        # Rows toward the poles get extra zonal smoothing so the correlation length stays `corr_km` on the
        # sphere (not in pixels), rescaled per row to keep unit variance.
        sx_row = np.minimum(sx / grid.coslat, w / 4.0)[:, None]
        self.row_filter = np.exp(-2 * np.pi**2 * self.kx**2 * (sx_row**2 - sx**2))
        weight = np.where(self.kx == 0, 1.0, 2.0) * np.exp(-4 * np.pi**2 * self.kx**2 * sx**2)
        self.row_filter *= np.sqrt(weight.sum() / (weight * self.row_filter**2).sum(axis=1, keepdims=True))
        self.px_per_hour = u_row * 3.6 / grid.dx_km  # zonal advection, pixels per hour, per row
        self._cache: dict[int, tuple[np.ndarray, float]] = {}

    def _keyframe(self, k: int):
        if k not in self._cache:
            if len(self._cache) > 3:
                self._cache.pop(min(self._cache))
            tag = sum(ord(c) * 31**i for i, c in enumerate(self.name)) % 2**31
            rng = np.random.default_rng([self.seed, 2, tag, k + 2**20])
            h, w = self.grid.shape
            spec = np.fft.rfft2(rng.standard_normal((h, w))) * self.filter
            half = np.fft.ifft(spec, axis=0)  # rows in space, columns still spectral: cheap zonal shifts
            scale = float(np.fft.irfft(half, n=w, axis=1).std()) or 1.0
            self._cache[k] = (half, scale)
        return self._cache[k]

    def _shifted(self, k: int, hours_since_key: float) -> np.ndarray:
        half, scale = self._keyframe(k)
        shift = self.px_per_hour * hours_since_key
        phase = np.exp(-2j * np.pi * self.kx * shift[:, None]) * self.row_filter
        return np.fft.irfft(half * phase, n=self.grid.shape[1], axis=1) / scale

    def at(self, hours: float) -> np.ndarray:
        k = int(math.floor(hours / self.key_hours))
        frac = hours / self.key_hours - k
        w1 = frac * frac * (3 - 2 * frac)  # smoothstep
        w0 = 1.0 - w1
        out = w0 * self._shifted(k, hours - k * self.key_hours)
        if w1 > 0:
            out += w1 * self._shifted(k + 1, hours - (k + 1) * self.key_hours)
        return out / math.hypot(w0, w1)


# ------------------------------------------------------------------------------------------ physics
def saturation_specific_humidity(temp_k, pressure_pa):
    """Bolton's saturation vapour pressure over water, as specific humidity (kg/kg)."""
    es = 611.2 * np.exp(17.67 * (temp_k - 273.15) / (temp_k - 29.65))
    return 0.622 * es / np.maximum(pressure_pa - 0.378 * es, 1.0)


def _rotate(u, v, degrees):
    a = np.deg2rad(degrees)
    return u * np.cos(a) - v * np.sin(a), u * np.sin(a) + v * np.cos(a)


def _gauss(x, centre, width):
    return np.exp(-(((x - centre) / width) ** 2))


class Generator:
    """Fields of one run at any time index; holds the grid, geography, tracks and noise keyframes."""

    def __init__(self, cfg: SynthConfig, catalogue: Catalogue | None = None):
        self.cfg = cfg
        self.grid = Grid.global_grid(*cfg.grid)
        self.landfrac, self.zsurf = geography(*cfg.grid)
        self.catalogue = catalogue or make_catalogue(cfg)
        lat = self.grid.lat
        self.lat = lat[:, None]
        alat = np.abs(self.lat)
        self.hemi = np.where(self.lat >= 0, 1.0, -1.0)
        # Climatological low-level zonal wind: trades, mid-latitude westerlies, polar easterlies.
        self.u_clim = -7.0 * _gauss(self.lat, 0, 18) + 11.0 * _gauss(alat, 45, 13) - 3.0 * _gauss(alat, 75, 8)
        self.desert = _gauss(alat, 24, 8)
        self.noise = {name: AdvectedNoise(cfg.seed, name, self.grid, corr, key, np.clip(self.u_clim[:, 0], -8, 12))
                      for name, (corr, key) in NOISE_SPECS.items()}

    # -- helpers
    def _seasonal_equator(self, hours: float) -> float:
        day = (hours / 24.0) % 365.0
        return 6.0 * math.sin(2 * math.pi * (day - 80.0) / 365.0)

    # -- the fields
    def fields(self, index: int) -> dict[str, np.ndarray]:
        g, lat, alat, land, zs = self.grid, self.lat, np.abs(self.lat), self.landfrac, self.zsurf
        hours = index * self.cfg.hours_per_step
        eq = self._seasonal_equator(hours)
        n = {name: noise.at(hours) for name, noise in self.noise.items()}
        x = np.sin(np.deg2rad(lat - eq)) ** 2

        # temperatures
        local_hour = (hours + g.lon[None, :] / 15.0) % 24.0
        diurnal = np.cos(2 * np.pi * (local_hour - 14.0) / 24.0)
        t_noise = (0.8 + 2.7 * _gauss(alat, 50, 20)) * n["temperature"]
        ts_clim = 301.5 - 44.0 * x
        ts_sea = np.where(alat < 60, np.maximum(ts_clim, 271.4), ts_clim)
        ts = (1 - land) * ts_sea + land * (ts_clim - 2.0) - 0.0065 * zs + t_noise * (1 + land) \
            + land * (6.0 * diurnal + 1.5 * n["land"])

        # pressure: climatology + synoptic noise + extratropical lows (the balanced, large-scale part)
        psl_clim = (101325.0 + 900.0 * _gauss(alat, 32, 11) - 1300.0 * _gauss(alat, 62, 11)
                    - 300.0 * _gauss(lat, eq, 8))
        p_syn = (150.0 + 1000.0 * _gauss(alat, 50, 18)) * n["pressure"]
        lows = [low.at(hours) for low in self.catalogue.lows]
        rivers = [(r, r.at(hours)) for r in self.catalogue.rivers]
        for r, state in rivers:  # each river's parent low sits poleward-west of its tip
            if state is not None:
                curve, env = state
                lons, lats = curve[-1]
                lows.append((lats + math.copysign(4.0, r.lat1), float(_wrap_lon(lons - 8.0)), 2200.0 * env, 700.0))
        for state in lows:
            if state is None:
                continue
            clat, clon, dp, sigma = state
            rows, cols, dx, dy = g.window(clat, clon, 3.5 * sigma)
            p_syn[rows, cols] -= dp * np.exp(-0.5 * (dx * dx + dy * dy) / sigma**2)

        # geostrophic wind anomaly from the synoptic pressure (undefined at the equator: tapered there)
        f = 2 * OMEGA * np.sin(np.deg2rad(lat))
        f_eff = self.hemi * np.maximum(np.abs(f), 2 * OMEGA * math.sin(math.radians(12)))
        taper = 1.0 - np.exp(-((lat / 8.0) ** 2))
        ug = -g.ddy(p_syn) / (1.2 * f_eff) * taper
        vg = g.ddx(p_syn) / (1.2 * f_eff) * taper
        dl = np.abs(lat - eq)
        v_clim = -np.sign(lat - eq) * 2.5 * np.sin(np.pi * np.clip(dl / 30.0, 0, 1)) \
            + self.hemi * 1.0 * np.sin(np.pi * np.clip((alat - 30) / 30.0, 0, 1))
        u850 = self.u_clim + 1.15 * ug
        v850 = v_clim + 1.15 * vg
        ubot, vbot = _rotate(self.u_clim + ug, v_clim + vg, 25.0 * np.clip(lat / 10.0, -1, 1))  # friction: toward low
        ubot, vbot = 0.72 * ubot, 0.72 * vbot

        psl = psl_clim + p_syn
        t500 = 269.0 - 26.0 * x + 0.7 * t_noise + 0.0015 * p_syn  # warm ridges, cold troughs (cold-core lows)
        t200 = 217.0 + 6.0 * np.sin(np.deg2rad(lat)) ** 2 - 0.4 * t_noise
        moist_amp = 0.08 + 0.08 * (1 - _gauss(alat, 0, 20))
        tmq_ref = (55.0 * np.exp(0.065 * (ts_clim - 302.0)) * np.exp(-zs / 2200.0)
                   * (1 - 0.45 * land * self.desert) + 6.0 * _gauss(lat, eq, 6))
        tmq = tmq_ref * np.exp(moist_amp * n["moisture"] + 0.03 * t_noise)
        prect_extra = np.zeros(g.shape)
        warm = np.zeros(g.shape)  # TC warm cores (strongest aloft)
        warm_low = np.zeros(g.shape)

        for tc in self.catalogue.cyclones:
            state = tc.at(hours)
            if state is None:
                continue
            clat, clon, dp = state
            if land[g.row_of(clat), g.col_of(clon)] > 0.5:
                dp *= 0.4  # landfall: the storm loses its energy source
            rows, cols, dx, dy = g.window(clat, clon, 1200.0)
            r = np.maximum(np.hypot(dx, dy), 1.0)
            # A model grid cannot resolve an eye smaller than its cells: coarse grids get broader storms,
            # as coarse climate models do (the peak wind of the Holland profile does not depend on rmax).
            rmax = max(tc.rmax_km, 0.8 * g.dy_km)
            a = (rmax / r) ** tc.holland_b
            psl[rows, cols] += -dp * (1.0 - np.exp(-a)) * np.exp(-((r / 1100.0) ** 4))
            vt = np.sqrt(tc.holland_b * dp / 1.15 * a * np.exp(-a)) * np.exp(-((r / 900.0) ** 2))
            sign = 1.0 if clat >= 0 else -1.0  # counter-clockwise in the north, clockwise in the south
            et_x, et_y = -sign * dy / r, sign * dx / r
            er_x, er_y = dx / r, dy / r
            u850[rows, cols] += 0.9 * vt * et_x
            v850[rows, cols] += 0.9 * vt * et_y
            ubot[rows, cols] += 0.85 * vt * (et_x - 0.35 * er_x)
            vbot[rows, cols] += 0.85 * vt * (et_y - 0.35 * er_y)
            core = np.exp(-((r / 250.0) ** 2))
            d_t = 1.5 + dp / 700.0
            warm[rows, cols] += d_t * core
            tmq[rows, cols] += (12.0 + dp / 300.0) * np.exp(-((r / 380.0) ** 2))
            theta = np.arctan2(dy, dx)
            bands = np.maximum(0.0, np.cos(2 * (theta - sign * 1.3 * np.log(r / rmax))))
            prect_extra[rows, cols] += ((4e-7 + dp * 1.5e-10) * np.exp(-((r / (3 * rmax + 80.0)) ** 2))
                                        + 3e-7 * bands * np.exp(-((r / 450.0) ** 2)))

        for river, state in rivers:
            if state is None:
                continue
            curve, env = state
            self._draw_river(river, curve, env, tmq, u850, v850, ubot, vbot, warm_low, prect_extra)

        t200 += warm
        t500 += 0.5 * warm + warm_low
        ts = ts + 0.5 * warm_low
        trefht = ts - 0.8 - 2.5 * land * diurnal
        tbar = 0.25 * trefht + 0.5 * t500 + 0.25 * t200
        z1000 = R_DRY * trefht / GRAVITY * np.log(psl / 1e5)
        z200 = z1000 + R_DRY * tbar / GRAVITY * math.log(5.0)
        ps = psl * np.exp(-GRAVITY * zs / (R_DRY * (trefht + 0.00325 * zs)))
        rh = np.clip(0.8 * (tmq / tmq_ref) ** 0.5, 0.05, 0.97)
        qrefht = rh * saturation_specific_humidity(trefht, ps)
        convergence = -(g.ddx(ubot) + g.ddy(vbot))
        trigger = (0.4e-5 + 1.2e-5 * _gauss(lat, eq, 12)) * n["convection"] + 0.8e-5 * _gauss(lat, eq, 5)
        prect = np.maximum(0.0, convergence + trigger) * tmq * 0.5 / 1000.0 + prect_extra
        zbot = R_DRY * trefht / GRAVITY * math.log(1.0 / 0.9925)
        out = {"TMQ": tmq, "U850": u850, "V850": v850, "UBOT": ubot, "VBOT": vbot, "QREFHT": qrefht, "PS": ps,
               "PSL": psl, "T200": t200, "T500": t500, "PRECT": prect, "TS": ts, "TREFHT": trefht,
               "Z1000": z1000, "Z200": z200, "ZBOT": zbot}
        h, w = g.shape
        out = {k: np.ascontiguousarray(np.broadcast_to(v, (h, w)), dtype=np.float32) for k, v in out.items()}
        if self.cfg.fronts:  # cold fronts trailing the lows: a patch class only (data/fronts.py)
            from exascale_climate.data.fronts import draw_fronts

            draw_fronts(out, g, self.catalogue.lows, hours, self.cfg.seed)
        return out

    def _draw_river(self, river: RiverTrack, curve, env, tmq, u850, v850, ubot, vbot, warm_low, prect_extra):
        """Add one plume: TMQ, a jet along its axis, a warm sector, and rain where it meets land."""
        g = self.grid
        mid = curve[len(curve) // 2]
        reach = float(great_circle_km(mid[1], mid[0], curve[:, 1], curve[:, 0]).max())
        rows, cols, _, _ = g.window(float(mid[1]), float(_wrap_lon(mid[0])), reach + 4.0 * river.sigma_km)
        # The plume is smooth (sigma >= ~200 km): evaluate it every `step` pixels and interpolate, which keeps
        # the paper's 768x1152 grid fast without visible error.
        step = max(1, int(river.sigma_km / (2.5 * g.dy_km)))
        sub_rows = np.arange(rows.start, rows.stop, step)
        sub_cols = cols[::step]
        plat = g.lat[sub_rows][:, None, None].astype(np.float32)
        plon = g.lon[sub_cols][None, :, None].astype(np.float32)
        c32 = curve.astype(np.float32)
        dlon = (plon - c32[None, None, :, 0] + 180.0) % 360.0 - 180.0
        ex = dlon * np.float32(KM_PER_DEG) * np.cos(np.deg2rad(plat))
        ey = (plat - c32[None, None, :, 1]) * np.float32(KM_PER_DEG)
        d2 = ex * ex + ey * ey
        nearest = d2.argmin(axis=2)
        dist2 = np.take_along_axis(d2, nearest[..., None], axis=2)[..., 0]
        s = nearest / (len(curve) - 1)
        ends = np.clip(s / 0.12, 0, 1) * np.clip((1 - s) / 0.2, 0, 1)
        profile = env * np.sin(0.5 * np.pi * ends) ** 2 * np.exp(-0.5 * dist2 / river.sigma_km**2)
        tangent = np.gradient(curve, axis=0)
        tx = tangent[:, 0] * np.cos(np.deg2rad(curve[:, 1]))
        ty = tangent[:, 1]
        norm = np.hypot(tx, ty)
        tx, ty = (tx / norm)[nearest], (ty / norm)[nearest]
        if step > 1:
            n_rows, n_cols = rows.stop - rows.start, len(cols)
            coords = np.meshgrid(np.arange(n_rows) / step, np.arange(n_cols) / step, indexing="ij")
            profile, tx, ty = (ndimage.map_coordinates(a, coords, order=1, mode="nearest") for a in (profile, tx, ty))
        tmq[rows, cols] += river.tmq_amp * profile
        # The river is its low-level jet: cancel background flow against the axis inside the plume, then add it.
        against = np.minimum(u850[rows, cols] * tx + v850[rows, cols] * ty, 0.0)
        speed = profile * (river.jet - against)
        u850[rows, cols] += speed * tx
        v850[rows, cols] += speed * ty
        against_bot = np.minimum(ubot[rows, cols] * tx + vbot[rows, cols] * ty, 0.0)
        speed_bot = profile * (0.6 * river.jet - against_bot)
        ubot[rows, cols] += speed_bot * tx
        vbot[rows, cols] += speed_bot * ty
        warm_low[rows, cols] += 1.5 * profile  # a lower-tropospheric warm sector, not a warm core
        prect_extra[rows, cols] += profile * (1e-7 + 5e-7 * self.landfrac[rows][:, cols])


# ------------------------------------------------------------------------------------------ writing
def sample_time(index: int, hours_per_step: float) -> tuple[float, str]:
    """(hours since the origin, file-name stamp YYYY-MM-DD-HH-MM) of a step in the noleap calendar."""
    import cftime

    hours = index * hours_per_step
    date = cftime.num2date(hours, TIME_UNITS, calendar=CALENDAR)
    return hours, f"{date.year:04d}-{date.month:02d}-{date.day:02d}-{date.hour:02d}-{date.minute:02d}"


def sample_name(index: int, hours_per_step: float) -> str:
    return f"data-{sample_time(index, hours_per_step)[1]}.nc"


def _generate_block(cfg: SynthConfig, labeller_cfg: LabellerConfig, catalogue: Catalogue, out_dir: str,
                    indices: list[int]) -> list[tuple[str, list[int]]]:
    """Worker: make, label and write the given time steps; returns (file, class pixel counts) each."""
    from exascale_climate.data.writers import write_netcdf_sample
    from exascale_climate.data.labeller import label_fields

    gen = Generator(cfg, catalogue)
    done = []
    for index in indices:
        fields = gen.fields(index)
        labels = label_fields(fields, gen.grid.lat, gen.grid.lon, labeller_cfg)
        hours, _ = sample_time(index, cfg.hours_per_step)
        path = Path(out_dir) / sample_name(index, cfg.hours_per_step)
        data = np.stack([fields[v] for v in VARIABLE_NAMES], axis=-1)
        write_netcdf_sample(path, data, labels, list(VARIABLE_NAMES), lat=gen.grid.lat, lon=gen.grid.lon,
                            time_hours=hours, time_units=TIME_UNITS, calendar=CALENDAR,
                            attrs={"source": "exascale_climate CAM5-like synthetic generator",
                                   "label_source": "heuristic labeller (exascale_climate.data.labeller)",
                                   "seed": cfg.seed, "grid": f"{cfg.grid[0]}x{cfg.grid[1]}",
                                   "Conventions": "CF-1.7"})
        done.append((path.name, np.bincount(labels.ravel(), minlength=NUM_CLASSES).tolist()))
    return done


def synthesize(out_dir: str | Path, cfg: SynthConfig, labeller_cfg: LabellerConfig | None = None,
               progress: bool = True) -> dict:
    """Write cfg.samples labelled netCDF files (one time step each) to `out_dir`; files already there are kept.

    Returns a summary: files written/skipped and the class pixel fractions of the written files.
    """
    from exascale_climate.utils.progress import progress_bar

    labeller_cfg = labeller_cfg or LabellerConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    todo = [i for i in range(cfg.samples) if not (out / sample_name(i, cfg.hours_per_step)).exists()]
    skipped = cfg.samples - len(todo)
    if skipped:
        log.info("%d of %d samples already in %s; generating the other %d", skipped, cfg.samples, out, len(todo))
    catalogue = make_catalogue(cfg)
    counts = np.zeros(NUM_CLASSES, np.int64)
    written: list[str] = []
    workers = max(1, min(cfg.workers, len(todo)))
    # Contiguous blocks share noise keyframes; several blocks per worker keep the progress bar moving.
    n_blocks = min(len(todo), workers * 4) if todo else 0
    blocks = [list(b) for b in np.array_split(np.array(todo, int), n_blocks)] if n_blocks else []
    blocks = [[int(i) for i in b] for b in blocks if len(b)]
    with progress_bar("synth", len(todo) if progress else None) as advance:
        if workers == 1:
            results = (_generate_block(cfg, labeller_cfg, catalogue, str(out), b) for b in blocks)
            for result in results:
                written += [name for name, _ in result]
                counts += np.array([c for _, c in result]).sum(0) if result else 0
                advance(len(result))
        else:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(_generate_block, cfg, labeller_cfg, catalogue, str(out), b) for b in blocks]
                for future in as_completed(futures):
                    result = future.result()
                    written += [name for name, _ in result]
                    counts += np.array([c for _, c in result]).sum(0)
                    advance(len(result))
    fractions = (counts / counts.sum()).tolist() if counts.sum() else [0.0] * NUM_CLASSES
    summary = {"out_dir": str(out), "written": len(written), "skipped": skipped,
               "class_fractions": dict(zip(("background", "tropical_cyclone", "atmospheric_river"), fractions))}
    log.info("wrote %d samples to %s (class fractions: %s)", len(written), out,
             ", ".join(f"{k} {v:.4f}" for k, v in summary["class_fractions"].items()))
    return summary
