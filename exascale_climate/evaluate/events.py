"""Extreme-weather objects from a segmentation mask: connected TC/AR regions with their size on the sphere.

Areas use the exact area of a lat/lon cell on a sphere, R^2 * (sin(lat_top) - sin(lat_bottom)) * dlon, with
cell edges half-way between the coordinate centres (clipped at the poles), so a global grid sums to 4 pi R^2.
Objects are 8-connected (diagonal neighbours join, as a storm drawn at ~25 km often touches only by a corner) and
wrap around the date line when the grid spans the globe in longitude.
"""
from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from scipy import ndimage

from exascale_climate.data.grid import cell_areas_km2, label_objects, spans_globe
from exascale_climate.utils.io import atomic_write_text
from exascale_climate.variables import CLASS_NAMES

TC_CLASS, AR_CLASS = 1, 2


@dataclass
class Event:
    """One connected TC or AR object; TC-only fields are NaN for rivers or when the field is absent."""

    time: str
    event_class: str
    object_id: int
    centroid_lat: float
    centroid_lon: float
    area_km2: float
    pixels: int
    min_psl_pa: float = float("nan")
    max_wind_ms: float = float("nan")
    source: str = ""
    # Bounding box (the semisup detector's predictions): degrees, lon_min > lon_max across the date line.
    box_lat_min: float = float("nan")
    box_lat_max: float = float("nan")
    box_lon_min: float = float("nan")
    box_lon_max: float = float("nan")
    score: float = float("nan")


def spherical_centroid(lat_deg: np.ndarray, lon_deg: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """Area-weighted centroid on the sphere: the weighted mean of the cells' unit vectors, projected back to
    latitude/longitude. Unlike a latitude/longitude mean it stays in place across the date line and near the
    poles (a polar cap's centroid is the pole, not the mean of its latitudes)."""
    phi, lam = np.deg2rad(np.asarray(lat_deg, np.float64)), np.deg2rad(np.asarray(lon_deg, np.float64))
    w = np.asarray(weights, np.float64)
    x = (w * np.cos(phi) * np.cos(lam)).sum()
    y = (w * np.cos(phi) * np.sin(lam)).sum()
    z = (w * np.sin(phi)).sum()
    clat = float(np.rad2deg(np.arctan2(z, np.hypot(x, y))))
    clon = float(np.rad2deg(np.arctan2(y, x)))
    return clat, clon % 360.0


def find_events(mask: np.ndarray, lat: np.ndarray, lon: np.ndarray, *, time: str = "",
                psl: np.ndarray | None = None, wind: np.ndarray | None = None, source: str = "",
                classes: tuple[int, ...] = (TC_CLASS, AR_CLASS)) -> list[Event]:
    """One Event per connected object of each class in `mask` (H, W) on the grid (lat (H,), lon (W,)).

    `psl` (Pa) and `wind` (m/s) give the TC intensity measures (minimum PSL, maximum wind inside the object).
    """
    mask = np.asarray(mask)
    if mask.shape != (len(lat), len(lon)):
        raise ValueError(f"mask shape {mask.shape} does not match the grid ({len(lat)}, {len(lon)})")
    areas = cell_areas_km2(lat, lon)
    lat2d = np.broadcast_to(np.asarray(lat, dtype=np.float64)[:, None], mask.shape)
    lon2d = np.broadcast_to(np.asarray(lon, dtype=np.float64)[None, :], mask.shape)
    periodic = spans_globe(lon)
    events: list[Event] = []
    for cls in classes:
        objects, n = label_objects(mask == cls, periodic)
        if n == 0:
            continue
        index = np.arange(1, n + 1)
        object_areas = ndimage.sum_labels(areas, objects, index)
        pixels = ndimage.sum_labels(np.ones_like(areas), objects, index)
        is_tc = cls == TC_CLASS
        min_psl = ndimage.minimum(psl, objects, index) if (is_tc and psl is not None) else None
        max_wind = ndimage.maximum(wind, objects, index) if (is_tc and wind is not None) else None
        for k, obj in enumerate(index):
            inside = objects == obj
            clat, clon = spherical_centroid(lat2d[inside], lon2d[inside], areas[inside])
            events.append(Event(
                time=time, event_class=CLASS_NAMES[cls], object_id=int(obj), centroid_lat=round(clat, 4),
                centroid_lon=round(clon, 4), area_km2=float(object_areas[k]), pixels=int(pixels[k]),
                min_psl_pa=float(min_psl[k]) if min_psl is not None else float("nan"),
                max_wind_ms=float(max_wind[k]) if max_wind is not None else float("nan"),
                source=source))
    return events


def wind_speed(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.hypot(u, v)


EVENT_COLUMNS = [f.name for f in fields(Event)]


def events_to_csv(events: list[Event]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EVENT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for e in events:
        writer.writerow({k: ("" if isinstance(v, float) and np.isnan(v) else v) for k, v in asdict(e).items()})
    return buf.getvalue()


def write_event_table(path: str | Path, events: list[Event]) -> Path:
    """The event table as CSV (written atomically); empty TC-only cells for rivers."""
    atomic_write_text(path, events_to_csv(events))
    return Path(path)
