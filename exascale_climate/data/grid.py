"""Geometry of a regular global lat/lon grid: distances in km, pixel sizes, windows around a point.

Shared by the generator (to draw storms of a physical size, and its winds from pressure) and the labeller (to
apply thresholds in km, and its vorticity), so both work at any resolution, from the 96x144 test grid to the
paper's 768x1152, with the same finite differences.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from scipy import ndimage

if TYPE_CHECKING:
    from exascale_climate.data.layouts import Sample

# Mean Earth radius (km), as CESM/CAM5 uses (SHR_CONST_REARTH = 6.37122e6 m).
EARTH_RADIUS_KM = 6371.22
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def cell_edges(centres: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Edges (n+1,) half-way between centres; the outer edges extend half a step, clipped to [lo, hi]."""
    c = np.asarray(centres, dtype=np.float64)
    if c.size == 1:
        raise ValueError("a grid axis needs at least two points to define cell edges")
    mid = 0.5 * (c[1:] + c[:-1])
    edges = np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])
    if lo is not None or hi is not None:
        edges = np.clip(edges, lo, hi)
    return edges


def cell_areas_km2(lat: np.ndarray, lon: np.ndarray, radius_km: float = EARTH_RADIUS_KM) -> np.ndarray:
    """Area (km2) of each (lat, lon) cell of a regular grid on the sphere; shape (len(lat), len(lon))."""
    lat_edges = np.deg2rad(cell_edges(lat, -90.0, 90.0))
    lon_edges = np.deg2rad(cell_edges(lon))
    band = np.abs(np.diff(np.sin(lat_edges)))  # (H,)
    dlon = np.abs(np.diff(lon_edges))  # (W,)
    return radius_km**2 * np.outer(band, dlon)


def spans_globe(lon: np.ndarray) -> bool:
    """True when the longitude cells cover 360 degrees, so the first and last columns are neighbours."""
    edges = cell_edges(lon)
    return bool(abs(abs(edges[-1] - edges[0]) - 360.0) < 1e-6 * 360.0)


def label_objects(mask: np.ndarray, periodic_lon: bool) -> tuple[np.ndarray, int]:
    """Connected components of a boolean (H, W) mask; objects crossing the date line become one."""
    labels, n = ndimage.label(mask, structure=EIGHT_CONNECTED)
    if not periodic_lon or n == 0:
        return labels, n
    # Union the components that touch across the seam (column W-1 next to column 0, diagonals included).
    parent = np.arange(n + 1)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    left, right = labels[:, 0], labels[:, -1]
    height = mask.shape[0]
    for row in range(height):
        if not left[row]:
            continue
        for neighbour in (row - 1, row, row + 1):
            if 0 <= neighbour < height and right[neighbour]:
                a, b = find(left[row]), find(right[neighbour])
                if a != b:
                    parent[max(a, b)] = min(a, b)
    roots = np.array([find(i) for i in range(n + 1)])
    unique_roots, relabel = np.unique(roots, return_inverse=True)  # root 0 (background) stays 0
    return relabel[labels], len(unique_roots) - 1


def default_coordinates(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The CAM5 finite-volume grid convention: latitudes pole to pole inclusive, longitudes from 0 east."""
    return np.linspace(-90.0, 90.0, height), np.arange(width) * (360.0 / width)


def sample_coordinates(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """The sample's own lat/lon when the file has them, else the CAM5 grid convention for its shape."""
    h, w = sample.grid
    lat_default, lon_default = default_coordinates(h, w)
    lat = np.asarray(sample.lat, np.float64) if sample.lat is not None and len(sample.lat) == h else lat_default
    lon = np.asarray(sample.lon, np.float64) if sample.lon is not None and len(sample.lon) == w else lon_default
    return lat, lon


KM_PER_DEG = np.pi * EARTH_RADIUS_KM / 180.0
MIN_COS_LAT = 0.05  # keeps pixel widths finite at the poles


@dataclass
class Grid:
    lat: np.ndarray  # (H,) degrees north, ascending
    lon: np.ndarray  # (W,) degrees east
    dy_km: float = field(init=False)
    dx_km: np.ndarray = field(init=False)  # (H,) zonal pixel width per row

    def __post_init__(self):
        self.lat = np.asarray(self.lat, np.float64)
        self.lon = np.asarray(self.lon, np.float64)
        self.dlat = float(np.abs(np.diff(self.lat)).mean()) if len(self.lat) > 1 else 180.0
        self.dlon = float(np.abs(np.diff(self.lon)).mean()) if len(self.lon) > 1 else 360.0
        self.dy_km = self.dlat * KM_PER_DEG
        self.coslat = np.maximum(np.cos(np.deg2rad(self.lat)), MIN_COS_LAT)
        self.dx_km = self.dlon * KM_PER_DEG * self.coslat

    @classmethod
    def global_grid(cls, height: int, width: int) -> "Grid":
        return cls(*default_coordinates(height, width))

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.lat), len(self.lon)

    @property
    def periodic(self) -> bool:
        """The grid wraps round in longitude (one test for it: `spans_globe`)."""
        return spans_globe(self.lon)

    def ddx(self, f: np.ndarray) -> np.ndarray:
        """Eastward derivative (per metre) of an (H, W) field by centred differences: across the date line on
        a global grid, one-sided at the edges of a regional one."""
        if self.periodic:
            return (np.roll(f, -1, axis=1) - np.roll(f, 1, axis=1)) / (2e3 * self.dx_km[:, None])
        return np.gradient(f, axis=1) / (1e3 * self.dx_km[:, None])

    def ddy(self, f: np.ndarray) -> np.ndarray:
        """Northward derivative (per metre) by centred differences (one-sided at the first and last rows);
        rows may run south to north or north to south."""
        return np.gradient(f, axis=0) / (1e3 * self.dy_km) * np.sign(np.diff(self.lat).mean() or 1.0)

    def cell_areas(self) -> np.ndarray:
        return cell_areas_km2(self.lat, self.lon)

    def pixels(self, km: float, axis: str = "y") -> float:
        """How many pixels `km` spans, meridionally ("y") or zonally at the equator ("x")."""
        return km / (self.dy_km if axis == "y" else self.dlon * KM_PER_DEG)

    def row_of(self, lat: float) -> int:
        return int(np.abs(self.lat - lat).argmin())

    def col_of(self, lon: float) -> int:
        return int(np.round(((lon - self.lon[0]) % 360.0) / self.dlon)) % len(self.lon)

    def window(self, lat0: float, lon0: float, radius_km: float):
        """Rows (slice) and columns (wrapped index array) within `radius_km` of a point, with the local
        east/north offsets in km of each pixel from the point ((rows, cols) arrays)."""
        half_rows = int(np.ceil(radius_km / self.dy_km)) + 1
        r0 = self.row_of(lat0)
        rows = slice(max(0, r0 - half_rows), min(len(self.lat), r0 + half_rows + 1))
        lat_rows = self.lat[rows]
        min_cos = max(np.cos(np.deg2rad(min(abs(lat0) + radius_km / KM_PER_DEG, 89.0))), MIN_COS_LAT)
        half_cols = min(int(np.ceil(radius_km / (self.dlon * KM_PER_DEG * min_cos))) + 1, len(self.lon) // 2)
        c0 = self.col_of(lon0)
        cols = np.arange(c0 - half_cols, c0 + half_cols + 1) % len(self.lon)
        if half_cols * 2 + 1 >= len(self.lon):
            cols = np.arange(len(self.lon))
        dlon = (self.lon[cols] - lon0 + 180.0) % 360.0 - 180.0
        y = (lat_rows - lat0)[:, None] * KM_PER_DEG * np.ones((1, len(cols)))
        x = dlon[None, :] * KM_PER_DEG * np.maximum(np.cos(np.deg2rad(lat_rows)), MIN_COS_LAT)[:, None]
        return rows, cols, x, y


def great_circle_km(lat1, lon1, lat2, lon2):
    """Haversine distance (km); broadcasts."""
    p1, p2 = np.deg2rad(lat1), np.deg2rad(lat2)
    dphi = p2 - p1
    dlmb = np.deg2rad(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
