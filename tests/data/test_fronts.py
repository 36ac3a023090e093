"""Weather fronts: the thermal-front-parameter detector on hand-built fields, and the fronts the generator draws."""
import dataclasses

import numpy as np
import pytest

from exascale_climate.config import LabellerConfig, SynthConfig
from exascale_climate.data.fronts import front_mask
from exascale_climate.data.grid import KM_PER_DEG, Grid
from exascale_climate.data.labeller import label_fields, label_fronts
from exascale_climate.data.synthetic import Generator
from exascale_climate.errors import DataError

GRID = Grid.global_grid(192, 288)  # ~104 km rows: a 150 km front spans a few pixels


def _east_km(lon0):
    """East distance (km) of every pixel from the meridian lon0, on the sphere."""
    dlon = (GRID.lon[None, :] - lon0 + 180.0) % 360.0 - 180.0
    return dlon * KM_PER_DEG * np.cos(np.deg2rad(GRID.lat))[:, None]


def hand_made_front(lon0=200.0, lat_range=(35.0, 55.0)):
    """A meridional cold front at lon0: 12 K across ~150 km (warm to the east), in a 400 Pa trough."""
    h, w = GRID.shape
    lat = GRID.lat[:, None] * np.ones((1, w))
    x = _east_km(lon0)
    inside = ((lat >= lat_range[0]) & (lat <= lat_range[1])).astype(float)
    t = 288.0 - 10.0 * np.sin(np.deg2rad(lat)) ** 2 + 6.0 * np.tanh(x / 150.0) * inside
    psl = 101300.0 - 400.0 * np.exp(-((x / 300.0) ** 2)) * inside
    return {"TREFHT": t, "PSL": psl}, x, lat


def test_hand_made_front_is_found_along_its_line():
    fields, x, lat = hand_made_front()
    mask, objects = front_mask(fields, GRID, LabellerConfig())
    assert len(objects) == 1
    assert np.abs(x[mask]).max() < 400.0  # on the line, not elsewhere
    assert lat[mask].min() < 40.0 and lat[mask].max() > 50.0  # along most of its 20 degrees
    assert abs(objects[0].lon - 200.0) < 3.0 and objects[0].length_km > 1500.0
    # The same through the labeller's entry point; the 3-class labels know nothing of fronts.
    np.testing.assert_array_equal(label_fronts(fields, GRID.lat, GRID.lon), mask)


def test_uniform_gradient_is_not_a_front():
    """5 K per 100 km everywhere (far above the gradient threshold) in a trough everywhere: TFP is zero."""
    h, w = GRID.shape
    lat = GRID.lat[:, None] * np.ones((1, w))
    fields = {"TREFHT": 300.0 - 0.05 * lat * KM_PER_DEG, "PSL": 101000.0 + 2.0 * lat**2}
    mask, objects = front_mask(fields, GRID, LabellerConfig())
    assert not mask.any() and objects == []


def test_front_needs_gradient_and_length():
    fields, _, _ = hand_made_front()
    strict = dataclasses.replace(LabellerConfig(), wf_gradient_min=20.0)
    assert not front_mask(fields, GRID, strict)[0].any()
    short, _, _ = hand_made_front(lat_range=(44.0, 46.0))  # ~220 km long
    assert not front_mask(short, GRID, LabellerConfig())[0].any()


def test_missing_variable_is_named():
    with pytest.raises(DataError, match="TREFHT"):
        front_mask({"PSL": np.zeros(GRID.shape)}, GRID, LabellerConfig())


def test_generator_draws_fronts_at_lows_with_rain_on_the_cold_side():
    cfg = SynthConfig(samples=8, grid=(192, 288), seed=5)
    on = Generator(cfg)
    off = Generator(dataclasses.replace(cfg, fronts=False), on.catalogue)
    step = 4
    a, b = on.fields(step), off.fields(step)
    dt = a["TREFHT"] - b["TREFHT"]
    drawn = np.abs(dt) > 2.0
    assert drawn.any()
    # only near lows alive at this time
    lows = [low.at(step * cfg.hours_per_step) for low in on.catalogue.lows]
    lows = [s for s in lows if s is not None]
    from exascale_climate.data.grid import great_circle_km

    lat2, lon2 = np.meshgrid(on.grid.lat, on.grid.lon, indexing="ij")
    near = np.zeros(on.grid.shape, bool)
    for clat, clon, _, _ in lows:
        near |= great_circle_km(lat2, lon2, clat, clon) < 4000.0
    assert not (drawn & ~near).any()
    # rain is added where the air got colder (behind the front), not where it got warmer
    dp = a["PRECT"] - b["PRECT"]
    assert dp[dt < -1.0].mean() > 5 * max(dp[dt > 1.0].mean(), 1e-12)
    # the detector finds more front pixels where fronts were drawn than the same day without them
    found_on = front_mask(a, on.grid, LabellerConfig())[0]
    found_off = front_mask(b, off.grid, LabellerConfig())[0]
    assert (found_on & near).sum() > (found_off & near).sum()
    # fronts are a patch class only: the 3-class labels do not gain a class
    assert label_fields(a, on.grid.lat, on.grid.lon).max() <= 2
