"""A fixed, coarse Earth for the generator: continents as polygons, a land fraction, and orography.

Coarse on purpose (a few dozen vertices per continent): the maps should read as Earth (land-sea temperature
contrast, mountains lowering PS, dry subtropical deserts) without shipping a land-sea mask data file.
"""
from __future__ import annotations

import functools

import numpy as np
from matplotlib.path import Path as PolygonPath
from scipy import ndimage

from exascale_climate.data.grid import Grid

# (lon, lat) vertices, lon in -180..180.
CONTINENTS = {
    "north_america": [(-165, 68), (-140, 70), (-110, 72), (-85, 70), (-80, 62), (-65, 60), (-56, 52), (-66, 44),
                      (-76, 36), (-81, 30), (-80, 26), (-84, 30), (-97, 27), (-97, 21), (-92, 18), (-86, 15),
                      (-83, 10), (-78, 8), (-80, 7), (-86, 12), (-92, 14), (-105, 19), (-110, 24), (-117, 32),
                      (-124, 40), (-125, 48), (-133, 56), (-150, 60), (-165, 60)],
    "south_america": [(-80, 9), (-75, 11), (-62, 10), (-51, 4), (-35, -5), (-39, -14), (-48, -26), (-58, -35),
                      (-65, -41), (-68, -52), (-74, -53), (-72, -45), (-73, -37), (-71, -25), (-70, -18), (-76, -14),
                      (-81, -6), (-80, 0), (-78, 7)],
    "greenland": [(-55, 60), (-43, 60), (-20, 70), (-18, 78), (-30, 83), (-60, 82), (-70, 77), (-55, 68)],
    "africa": [(-17, 21), (-10, 30), (-5, 36), (10, 37), (11, 33), (20, 31), (32, 31), (34, 27), (43, 12), (51, 12),
               (51, 5), (40, -10), (40, -16), (35, -24), (32, -29), (20, -35), (18, -30), (12, -17), (13, -6),
               (9, 4), (4, 6), (-8, 4), (-13, 8), (-17, 14)],
    "eurasia": [(-10, 36), (-9, 43), (-2, 44), (-5, 48), (5, 52), (8, 57), (5, 62), (15, 68), (25, 71), (40, 68),
                (60, 69), (80, 73), (100, 77), (120, 73), (140, 72), (160, 70), (180, 68), (180, 62), (163, 59),
                (157, 51), (140, 47), (141, 42), (130, 42), (126, 37), (122, 40), (121, 31), (117, 24), (108, 21),
                (109, 12), (104, 9), (100, 14), (103, 1), (98, 8), (92, 21), (80, 15), (77, 8), (73, 19), (67, 25),
                (57, 26), (52, 28), (48, 30), (56, 24), (59, 22), (52, 16), (43, 13), (35, 28), (34, 31), (36, 36),
                (27, 36), (22, 36), (15, 38), (12, 44), (10, 44), (3, 43), (-1, 37)],
    "australia": [(114, -22), (122, -18), (130, -12), (137, -12), (142, -11), (146, -19), (153, -25), (151, -34),
                  (146, -39), (140, -38), (135, -35), (129, -32), (115, -34)],
    "antarctica": [(-180, -91), (180, -91), (180, -78), (120, -66), (60, -67), (0, -70), (-60, -64), (-80, -73),
                   (-150, -77), (-180, -78)],
    "borneo_sumatra": [(95, 5), (100, 0), (106, -6), (115, -8), (119, -4), (118, 5), (110, 2)],
    "madagascar": [(44, -25), (47, -25), (50, -15), (49, -12), (43, -17)],
    "japan": [(130, 31), (135, 34), (141, 36), (142, 43), (140, 41), (135, 35), (130, 34)],
    "britain": [(-5, 50), (2, 52), (-2, 57), (-5, 58), (-6, 55)],
}

# Mountain ranges: polyline (lon, lat), crest height (m), half-width (degrees).
RANGES = [
    ([(-123, 60), (-115, 48), (-110, 40), (-106, 32)], 2200.0, 4.0),  # Rockies
    ([(-75, 8), (-78, -2), (-70, -18), (-69, -33), (-71, -50)], 3800.0, 2.5),  # Andes
    ([(75, 36), (85, 32), (95, 32), (100, 34)], 4500.0, 5.0),  # Himalaya / Tibet
    ([(6, 46), (14, 47)], 2000.0, 1.5),  # Alps
    ([(30, -20), (36, -2), (40, 10)], 1500.0, 4.0),  # East African highlands
]


def _polyline_distance_deg(lon2d, lat2d, points) -> np.ndarray:
    """Approximate distance (degrees, zonal distances shrunk by cos(lat)) from each grid point to a polyline."""
    best = np.full(lon2d.shape, np.inf)
    coslat = np.cos(np.deg2rad(lat2d))
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((lon2d - x0) * dx + (lat2d - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
        ex = (lon2d - (x0 + t * dx)) * coslat
        ey = lat2d - (y0 + t * dy)
        best = np.minimum(best, np.hypot(ex, ey))
    return best


@functools.lru_cache(maxsize=4)
def geography(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(land fraction 0..1, surface height m) on the global grid of this shape; cached per process."""
    grid = Grid.global_grid(height, width)
    lon180 = (grid.lon + 180.0) % 360.0 - 180.0
    lon2d, lat2d = np.meshgrid(lon180, grid.lat)
    points = np.column_stack([lon2d.ravel(), lat2d.ravel()])
    land = np.zeros(height * width, bool)
    for vertices in CONTINENTS.values():
        land |= PolygonPath(vertices).contains_points(points)
    land = land.reshape(height, width).astype(np.float64)
    sigma = max(0.5, 0.6 * width / 1152)  # soften coasts to a fraction, like CAM's LANDFRAC
    landfrac = np.clip(ndimage.gaussian_filter(land, sigma, mode=("nearest", "wrap")), 0.0, 1.0)
    rng = np.random.default_rng(20180101)  # fixed: every dataset shares one planet
    hills = ndimage.gaussian_filter(rng.standard_normal((height, width)), 2.0 * width / 144, mode="wrap")
    hills = np.clip(hills / (hills.std() + 1e-12), 0.0, None)
    height_m = landfrac * (250.0 + 350.0 * hills)
    for polyline, crest, half_width in RANGES:
        d = _polyline_distance_deg(lon2d, lat2d, polyline)
        height_m += landfrac * crest * np.exp(-0.5 * (d / half_width) ** 2)
    ramp = np.clip((np.abs(lat2d) - 65.0) / 10.0, 0.0, 1.0)
    greenland = (lat2d > 0) & (lon2d > -75) & (lon2d < -15)
    height_m += landfrac * ramp * np.where(lat2d < 0, 2800.0, np.where(greenland, 2000.0, 0.0))  # ice domes
    return landfrac, height_m
