"""Event objects and their areas against a hand computation on a coarse global grid."""
import csv
import math

import numpy as np
import pytest

from exascale_climate.data.grid import EARTH_RADIUS_KM, cell_areas_km2, label_objects, spans_globe
from exascale_climate.evaluate.events import find_events, write_event_table

# 30-degree global grid: latitude centres pole to pole, longitudes 0..330 (cells -15..345 cover the globe).
LAT = np.arange(-90.0, 91.0, 30.0)  # 7 rows; edges -90,-75,-45,-15,15,45,75,90
LON = np.arange(0.0, 360.0, 30.0)  # 12 columns
R2 = EARTH_RADIUS_KM**2
S = math.sin
D = math.radians


def test_global_grid_sums_to_sphere_area():
    areas = cell_areas_km2(LAT, LON)
    assert areas.shape == (7, 12)
    assert areas.sum() == pytest.approx(4 * math.pi * R2, rel=1e-12)
    # the polar cap row: one 30-degree sector of the cap above 75N
    assert areas[-1, 0] == pytest.approx(R2 * (1 - S(D(75))) * D(30), rel=1e-12)


def test_object_areas_centroids_and_tc_intensity_match_hand_computation():
    mask = np.zeros((7, 12), np.uint8)
    mask[3, 1:3] = 1  # TC: equator row (edges -15..15), lon 30 and 60 (edges 15..75)
    mask[4:6, 6] = 2  # AR: rows 30N and 60N (edges 15..75), lon 180
    psl = np.full((7, 12), 101000.0)
    psl[3, 2] = 95000.0
    psl[3, 3] = 90000.0  # outside the TC: must not count
    wind = np.zeros((7, 12))
    wind[3, 1] = 42.0
    events = find_events(mask, LAT, LON, time="2000-01-01T00:00:00", psl=psl, wind=wind)
    tc = [e for e in events if e.event_class == "tropical_cyclone"]
    ar = [e for e in events if e.event_class == "atmospheric_river"]
    assert len(tc) == 1 and len(ar) == 1
    assert tc[0].area_km2 == pytest.approx(R2 * 2 * S(D(15)) * D(60), rel=1e-9)
    assert tc[0].pixels == 2
    assert (tc[0].centroid_lat, tc[0].centroid_lon) == pytest.approx((0.0, 45.0), abs=1e-6)
    assert tc[0].min_psl_pa == 95000.0 and tc[0].max_wind_ms == 42.0
    a30, a60 = S(D(45)) - S(D(15)), S(D(75)) - S(D(45))
    assert ar[0].area_km2 == pytest.approx(R2 * (a30 + a60) * D(30), rel=1e-9)
    # spherical centroid: the area-weighted mean of the unit vectors, not the mean latitude
    z = a30 * S(D(30)) + a60 * S(D(60))
    horizontal = a30 * math.cos(D(30)) + a60 * math.cos(D(60))
    assert ar[0].centroid_lat == pytest.approx(math.degrees(math.atan2(z, horizontal)), abs=1e-4)
    assert ar[0].centroid_lat != pytest.approx((30 * a30 + 60 * a60) / (a30 + a60), abs=1e-2)
    assert ar[0].centroid_lon == pytest.approx(180.0, abs=1e-6)
    assert math.isnan(ar[0].min_psl_pa) and math.isnan(ar[0].max_wind_ms)


def test_object_across_the_date_line_is_one_event_on_a_global_grid():
    mask = np.zeros((7, 12), np.uint8)
    mask[3, 0] = mask[3, 11] = 1  # neighbours across the seam (lon 0 and 330)
    mask[0, 0] = mask[1, 11] = 1  # diagonal neighbours across the seam
    assert spans_globe(LON)
    events = find_events(mask, LAT, LON)
    assert len(events) == 2
    seam = [e for e in events if e.centroid_lat == 0.0][0]
    assert seam.pixels == 2
    assert seam.centroid_lon == pytest.approx(345.0, abs=1e-6)  # not the naive mean 165


def test_regional_grid_does_not_wrap():
    lon = np.arange(0.0, 100.0, 10.0)
    assert not spans_globe(lon)
    mask = np.zeros((7, 10), bool)
    mask[2, 0] = mask[2, -1] = True
    _, n = label_objects(mask, periodic_lon=spans_globe(lon))
    assert n == 2


def test_separate_objects_and_csv(tmp_path):
    mask = np.zeros((7, 12), np.uint8)
    mask[1, 1] = 1
    mask[5, 5] = 1
    mask[3, 8] = 2
    events = find_events(mask, LAT, LON, time="t0", source="x.nc")
    assert sorted(e.event_class for e in events) == ["atmospheric_river", "tropical_cyclone", "tropical_cyclone"]
    path = write_event_table(tmp_path / "events.csv", events)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 3
    assert {"time", "event_class", "centroid_lat", "centroid_lon", "area_km2", "min_psl_pa", "max_wind_ms"} <= rows[0].keys()
    assert rows[0]["min_psl_pa"] == ""  # no PSL given: empty cell, not "nan"
    assert float(rows[0]["area_km2"]) == pytest.approx(events[0].area_km2)


def test_mask_grid_mismatch_is_an_error():
    with pytest.raises(ValueError, match="does not match"):
        find_events(np.zeros((3, 3)), LAT, LON)


def test_polar_cap_centroid_is_the_pole():
    """A ring of cells around the pole: the latitude/longitude mean would put it at 90N... only by luck of the
    weights in latitude and at a meaningless mean longitude; the unit-vector mean is the pole itself."""
    mask = np.zeros((7, 12), np.uint8)
    mask[5, :] = 2  # the whole 60N ring (every longitude)
    events = find_events(mask, LAT, LON)
    assert len(events) == 1
    assert events[0].centroid_lat == pytest.approx(90.0, abs=1e-6)
