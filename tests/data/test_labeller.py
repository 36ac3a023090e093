"""The labeller on hand-built fields: what must be found, and the look-alikes that must not."""
import numpy as np
import pytest

from exascale_climate.config import LabellerConfig
from exascale_climate.data.grid import Grid, great_circle_km
from exascale_climate.data.labeller import find_cyclones, find_rivers, label_fields
from exascale_climate.errors import DataError

GRID = Grid.global_grid(96, 144)


def quiet_fields():
    h, w = GRID.shape
    lat = GRID.lat[:, None] * np.ones((1, w))
    return {
        "PSL": np.full((h, w), 101300.0), "T200": np.full((h, w), 218.0), "T500": 265.0 - 20 * np.sin(np.deg2rad(lat)) ** 2,
        "TMQ": 45.0 * np.cos(np.deg2rad(lat)) ** 2 + 3.0, "U850": np.zeros((h, w)), "V850": np.zeros((h, w)),
        "UBOT": np.zeros((h, w)), "VBOT": np.zeros((h, w)),
    }


def add_vortex(f, lat0, lon0, dp=3000.0, vmax=35.0, rotation=+1, warm=4.0):
    """rotation +1 = counter-clockwise seen from above."""
    rows, cols, x, y = GRID.window(lat0, lon0, 1500.0)
    r = np.maximum(np.hypot(x, y), 1.0)
    f["PSL"][rows, cols] -= dp * np.exp(-((r / 350.0) ** 2))
    speed = vmax * (r / 250.0) * np.exp(1 - r / 250.0) * 0.5 * (1 + np.tanh((1200 - r) / 200))
    u, v = -rotation * speed * y / r, rotation * speed * x / r
    for a, b in (("U850", u), ("V850", v), ("UBOT", 0.8 * u), ("VBOT", 0.8 * v)):
        f[a][rows, cols] += b
    for name in ("T200", "T500"):
        f[name][rows, cols] += warm * np.exp(-((r / 250.0) ** 2))
    f["TMQ"][rows, cols] += 25.0 * np.exp(-((r / 400.0) ** 2))


def add_plume(f, start, end, width_km=250.0, tmq=22.0, jet=18.0, turn_deg=0.0):
    """A straight (lat, lon) band with a low-level jet along it (or turned by `turn_deg` counter-clockwise)."""
    n = 200
    lats = np.linspace(start[0], end[0], n)
    lons = start[1] + np.linspace(0.0, 1.0, n) * ((end[1] - start[1] + 180) % 360 - 180)
    lat2, lon2 = np.meshgrid(GRID.lat, GRID.lon, indexing="ij")
    best = np.full(GRID.shape, np.inf)
    for la, lo in zip(lats, lons):
        dlon = (lon2 - lo + 180) % 360 - 180
        d = np.hypot(dlon * 111.2 * np.cos(np.deg2rad(lat2)), (lat2 - la) * 111.2)
        best = np.minimum(best, d)
    prof = np.exp(-0.5 * (best / width_km) ** 2)
    dx = ((end[1] - start[1] + 180) % 360 - 180) * np.cos(np.deg2rad(0.5 * (start[0] + end[0])))
    dy = end[0] - start[0]
    norm = np.hypot(dx, dy)
    c, s = np.cos(np.deg2rad(turn_deg)), np.sin(np.deg2rad(turn_deg))
    ex, ey = dx / norm, dy / norm
    f["TMQ"] += tmq * prof
    f["U850"] += jet * prof * (c * ex - s * ey)
    f["V850"] += jet * prof * (s * ex + c * ey)


def test_tropical_cyclones_need_every_criterion():
    cfg = LabellerConfig()
    f = quiet_fields()
    add_vortex(f, 15.0, 140.0, rotation=+1)  # north, counter-clockwise: cyclonic
    add_vortex(f, -18.0, 60.0, rotation=-1)  # south, clockwise: cyclonic
    add_vortex(f, 20.0, 250.0, rotation=-1)  # north, clockwise: anticyclonic
    add_vortex(f, -20.0, 320.0, rotation=+1, warm=0.0)  # cold core
    add_vortex(f, 60.0, 200.0, rotation=+1)  # too far poleward
    add_vortex(f, 12.0, 30.0, rotation=+1, dp=200.0)  # too shallow
    found = sorted((round(c.lat), round(c.lon)) for c in find_cyclones(f, GRID, cfg))
    assert len(found) == 2
    assert abs(found[0][0] + 18) <= 2 and abs(found[0][1] - 60) <= 3
    assert abs(found[1][0] - 15) <= 2 and abs(found[1][1] - 140) <= 3
    labels = label_fields(f, GRID.lat, GRID.lon, cfg)
    assert labels[GRID.row_of(15), GRID.col_of(140)] == 1 and labels[GRID.row_of(-18), GRID.col_of(60)] == 1
    assert labels[GRID.row_of(20), GRID.col_of(250)] == 0 and labels[GRID.row_of(60), GRID.col_of(200)] == 0
    rows, cols = np.nonzero(labels == 1)
    dist = np.minimum(great_circle_km(GRID.lat[rows], GRID.lon[cols], 15.0, 140.0),
                      great_circle_km(GRID.lat[rows], GRID.lon[cols], -18.0, 60.0))
    assert dist.max() <= cfg.tc_radius_km + GRID.dy_km  # masks are disks around the centres
    strict = LabellerConfig(tc_wind_min=60.0)  # thresholds are configurable
    assert find_cyclones(f, GRID, strict) == []


def test_atmospheric_river_long_narrow_and_across_the_date_line():
    cfg = LabellerConfig()
    f = quiet_fields()
    add_plume(f, (18.0, 200.0), (50.0, 235.0))  # ~4500 km, poleward: a river
    add_plume(f, (-15.0, 340.0), (-45.0, 20.0))  # crosses lon 0
    add_plume(f, (25.0, 60.0), (31.0, 66.0))  # ~900 km: too short
    mask, rivers = find_rivers(f, GRID, cfg)
    assert len(rivers) == 2
    for r in rivers:
        assert r.length_km >= 2000 and r.width_km <= 1000 and r.length_km / r.width_km >= 3
    labels = label_fields(f, GRID.lat, GRID.lon, cfg)
    assert labels[GRID.row_of(35), GRID.col_of(218)] == 2
    assert labels[GRID.row_of(-30), GRID.col_of(0)] == 2  # both sides of the seam
    assert labels[GRID.row_of(28), GRID.col_of(63)] == 0
    assert (labels == 1).sum() == 0
    frac = (labels == 2).mean()
    assert 0.005 < frac < 0.06


def test_wide_moist_blob_is_not_a_river_and_tc_wins_overlap():
    cfg = LabellerConfig()
    f = quiet_fields()
    rows, cols, x, y = GRID.window(40.0, 180.0, 3000.0)
    blob = np.exp(-((np.hypot(x, y) / 1500.0) ** 2))
    f["TMQ"][rows, cols] += 25 * blob
    f["U850"][rows, cols] += 20 * blob
    _, rivers = find_rivers(f, GRID, cfg)
    assert rivers == []
    g = quiet_fields()
    add_plume(g, (12.0, 130.0), (45.0, 165.0))
    add_vortex(g, 15.0, 133.0)
    labels = label_fields(g, GRID.lat, GRID.lon, cfg)
    assert labels[GRID.row_of(15), GRID.col_of(133)] == 1
    assert (labels == 2).any()


def test_missing_variable_is_named():
    f = quiet_fields()
    del f["T200"]
    with pytest.raises(DataError, match=r"\[T200\]"):
        label_fields(f, GRID.lat, GRID.lon)


def test_resolution_independent_thresholds():
    """The same physical storm is found on the paper's 8x finer grid axis (here 4x, to stay fast)."""
    global GRID
    coarse = GRID
    try:
        GRID = Grid.global_grid(384, 576)
        f = quiet_fields()
        add_vortex(f, 15.0, 140.0)
        assert len(find_cyclones(f, GRID, LabellerConfig())) == 1
    finally:
        GRID = coarse


def test_river_must_carry_its_vapour_along_its_length():
    """Guan & Waliser's orientation criterion: the same moist band with its jet across it is no river."""
    along, across = quiet_fields(), quiet_fields()
    add_plume(along, (18.0, 200.0), (50.0, 235.0))
    add_plume(across, (18.0, 200.0), (50.0, 235.0), turn_deg=80.0)
    _, rivers = find_rivers(along, GRID, LabellerConfig())
    assert len(rivers) == 1 and rivers[0].orientation_deg < 15.0
    _, rivers = find_rivers(across, GRID, LabellerConfig())
    assert rivers == []
    _, rivers = find_rivers(across, GRID, LabellerConfig(ar_max_orientation_deg=90.0))
    assert len(rivers) == 1 and rivers[0].orientation_deg > 60.0


def test_km_windows_find_the_same_storm_at_10_and_50_degrees():
    """On a regular 1-degree grid, one storm drawn in km at 10N and at 50N: both found where they are, with the
    same pressure anomaly, warm core and labelled area (km2), although a pixel at 50N is 36% narrower."""
    global GRID
    saved = GRID
    try:
        GRID = Grid(np.linspace(-90.0, 90.0, 181), np.arange(360.0))
        cfg = LabellerConfig(tc_max_abs_lat=60.0)
        found, areas = {}, {}
        for lat0 in (10.0, 50.0):
            f = quiet_fields()
            add_vortex(f, lat0, 150.0)
            cyclones = find_cyclones(f, GRID, cfg)
            assert len(cyclones) == 1
            assert abs(cyclones[0].lat - lat0) <= 1.0 and abs(cyclones[0].lon - 150.0) <= 1.0
            found[lat0] = cyclones[0]
            labels = label_fields(f, GRID.lat, GRID.lon, cfg)
            areas[lat0] = GRID.cell_areas()[labels == 1].sum()
        assert found[50.0].psl_anomaly == pytest.approx(found[10.0].psl_anomaly, rel=0.02)
        assert found[50.0].warm_core == pytest.approx(found[10.0].warm_core, rel=0.05)
        disk = np.pi * cfg.tc_radius_km**2  # the labelled disk, quantised to ~110 km cells
        assert areas[10.0] == pytest.approx(disk, rel=0.1) and areas[50.0] == pytest.approx(disk, rel=0.1)
    finally:
        GRID = saved
