"""Sphere geometry: the finite differences shared by the generator and the labeller against analytic
derivatives, and the one longitude periodicity test."""
import numpy as np
import pytest

from exascale_climate.data.grid import EARTH_RADIUS_KM, Grid, default_coordinates, spans_globe

R_M = EARTH_RADIUS_KM * 1e3


def _mid_latitudes(grid):
    return np.abs(grid.lat) < 75  # away from the poles, where pixel widths are clamped


def test_ddx_matches_the_analytic_derivative_across_the_date_line():
    """f = sin(lon) cos(lat): df/dx = cos(lon) / R everywhere, the seam columns included."""
    grid = Grid.global_grid(96, 144)
    lam, phi = np.deg2rad(grid.lon)[None, :], np.deg2rad(grid.lat)[:, None]
    got = grid.ddx(np.sin(lam) * np.cos(phi))
    want = np.cos(lam) / R_M * np.ones_like(phi)
    rows = _mid_latitudes(grid)
    np.testing.assert_allclose(got[rows], want[rows], rtol=0, atol=1e-3 / R_M)  # O(h^2): h = 2.5 deg
    assert abs(got[48, 0] - want[48, 0]) < 1e-3 / R_M and abs(got[48, -1] - want[48, -1]) < 1e-3 / R_M


@pytest.mark.parametrize("descending", [False, True])
def test_ddy_is_northward_whichever_way_the_rows_run(descending):
    lat, lon = default_coordinates(96, 144)
    if descending:
        lat = lat[::-1]
    grid = Grid(lat, lon)
    phi = np.deg2rad(grid.lat)[:, None] * np.ones((1, len(lon)))
    got = grid.ddy(np.sin(phi))
    want = np.cos(phi) / R_M
    np.testing.assert_allclose(got[1:-1], want[1:-1], rtol=0, atol=1e-3 / R_M)


def test_a_regional_grid_does_not_wrap():
    lat, lon = np.linspace(-30, 30, 25), np.linspace(0, 120, 49)
    grid = Grid(lat, lon)
    assert not grid.periodic
    f = np.tile(np.arange(49.0) ** 2, (25, 1))
    got = grid.ddx(f)
    dx_m = np.deg2rad(2.5) * R_M * np.cos(np.deg2rad(lat))  # the grid's own pixel width, computed by hand
    np.testing.assert_allclose(got[:, 0], (f[:, 1] - f[:, 0]) / dx_m, rtol=1e-9)  # one-sided, not wrapped
    np.testing.assert_allclose(got[:, 10], (f[:, 11] - f[:, 9]) / (2 * dx_m), rtol=1e-9)


@pytest.mark.parametrize("lon, periodic", [
    (default_coordinates(96, 144)[1], True),
    (default_coordinates(768, 1152)[1].astype(np.float32), True),  # coordinates as stored in files
    (np.arange(144) * 2.5 - 180.0, True),
    (np.arange(143) * 2.5, False),  # one column short of the globe
    (np.linspace(0, 120, 49), False),
])
def test_one_periodicity_test(lon, periodic):
    """The labeller's grid and the event finder ask the same question and get the same answer."""
    lat = np.linspace(-90, 90, 9)
    assert spans_globe(lon) is periodic
    assert Grid(lat, lon).periodic is periodic
