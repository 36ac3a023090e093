"""evaluate/errors.py on hand-built masks (counts known by construction) and the labeller's verdict map on
synthetic fields (each rule switched off in turn frees exactly the objects it had rejected)."""
import numpy as np
import pytest

from exascale_climate.config import LabellerConfig
from exascale_climate.data.labeller import ACCEPTED, AR_VERDICTS, find_rivers, river_verdicts
from exascale_climate.evaluate.errors import ERROR_KEYS, error_counts, format_errors, summarise

VERDICT = {v: i for i, v in enumerate(AR_VERDICTS)}


def test_counts_by_construction():
    """A 20x30 grid: a river 3 rows x 10 columns (rows 5-7), its interior the 8 cells of row 6 away from its ends;
    a cyclone 3x3. The prediction misses the river's first column (3 edge cells), draws it one row wider
    (10 cells next to it), paints a 2x2 blob in a region the labeller called too wide and a 1x3 line where
    nothing was a candidate, and draws the cyclone one column wider (3 cells) plus 1 stray cell."""
    labels = np.zeros((20, 30), np.int8)
    labels[5:8, 10:20] = 2
    labels[12:15, 3:6] = 1
    verdicts = np.zeros((20, 30), np.int8)
    verdicts[5:8, 10:20] = ACCEPTED
    verdicts[15:19, 20:28] = VERDICT["too wide"]
    pred = labels.copy()
    pred[5:8, 10] = 0          # missed: the river's first column, all edge cells
    pred[8, 10:20] = 2         # one row wider: 10 false cells, all within one cell
    pred[16:18, 22:24] = 2     # in the too-wide region: 4 false cells
    pred[1, 0:3] = 2           # no candidate: 3 false cells
    pred[12:15, 6] = 1         # cyclone one column wider: 3 false TC cells within one cell
    pred[0, 29] = 1            # one stray TC cell
    c = dict(zip(ERROR_KEYS, error_counts(labels, pred, verdicts, periodic_lon=False)))
    assert c["false_ar_accepted"] == 0 and c["false_ar_too_wide"] == 4
    assert c["false_ar_no_candidate"] == 10 + 3  # the widened row lies outside every candidate region too
    assert c["false_ar_within_1_cell"] == 10
    assert (c["missed_ar_edge"], c["missed_ar_interior"]) == (3, 0)
    assert (c["true_ar_edge"], c["true_ar_interior"]) == (22, 8)
    assert (c["false_tc"], c["false_tc_within_1_cell"]) == (4, 3)
    assert (c["missed_tc_edge"], c["missed_tc_interior"]) == (0, 0)
    s = summarise(np.array([c[k] for k in ERROR_KEYS]))
    assert s["false_ar"] == 17 and s["missed_ar"] == 3
    assert s["false_ar_in_rejected_regions"] == pytest.approx(4 / 17)
    assert s["ar_edge_share"] == pytest.approx(22 / 30)
    text = format_errors(s)
    assert "too wide 23.5%" in text and "no candidate 76.5%" in text


def test_edges_and_neighbours_wrap_across_the_date_line():
    """A river in columns 0-2 of a 10x30 grid. Wrapped, column 0's western neighbour is column 29 (background),
    so only (5, 1) is interior, and a false cell at column 29 is next to the river; on a regional grid beyond the
    edge counts as inside (the object may go on), so (5, 0) is interior too and column 29 is far away."""
    labels = np.zeros((10, 30), np.int8)
    labels[4:7, :3] = 2
    verdicts = np.where(labels == 2, ACCEPTED, 0).astype(np.int8)
    pred = labels.copy()
    pred[5, 29] = 2
    pred[5, 4] = 2  # two cells east of the river: not next to it either way
    wrapped = dict(zip(ERROR_KEYS, error_counts(labels, pred, verdicts, periodic_lon=True)))
    flat = dict(zip(ERROR_KEYS, error_counts(labels, pred, verdicts, periodic_lon=False)))
    assert (wrapped["true_ar_interior"], flat["true_ar_interior"]) == (1, 2)
    assert (wrapped["false_ar_within_1_cell"], flat["false_ar_within_1_cell"]) == (1, 0)
    assert wrapped["false_ar_no_candidate"] == flat["false_ar_no_candidate"] == 2


@pytest.fixture(scope="module")
def synthetic_fields():
    from exascale_climate.config import SynthConfig
    from exascale_climate.data.synthetic import Generator

    gen = Generator(SynthConfig(grid=(96, 144), seed=301, samples=8, hours_per_step=12.0))
    return gen.grid, [gen.fields(i) for i in range(0, 8, 2)]


def test_verdicts_accept_exactly_the_labeller_mask_and_each_rule_frees_only_its_objects(synthetic_fields):
    """Switching one whole-object rule off turns the pixels it had rejected into other verdicts (accepted or a
    later rule) and leaves every other pixel's verdict alone; the accepted pixels are find_rivers' mask."""
    grid, samples = synthetic_fields
    off = {"too small": {"ar_min_length_km": 0.0}, "tropical": {"ar_min_abs_lat": 0.0},
           "too wide": {"ar_max_width_km": 40075.0}, "aspect": {"ar_min_aspect": 1.0},
           "orientation": {"ar_max_orientation_deg": 90.0}}
    seen, aspect_reached = set(), False
    for fields in samples:
        base, _ = river_verdicts(fields, grid, LabellerConfig())
        mask, _ = find_rivers(fields, grid, LabellerConfig())
        np.testing.assert_array_equal(base == ACCEPTED, mask)
        seen |= set(np.unique(base).tolist())
        for rule, change in off.items():
            if rule == "too small":  # its threshold is the length's: switching it off frees "short" as well
                continue
            freed, _ = river_verdicts(fields, grid, LabellerConfig(**change))
            was = base == VERDICT[rule]
            assert not (freed == VERDICT[rule]).any(), rule
            np.testing.assert_array_equal(freed[~was], base[~was])
        # the aspect rule, which these samples never trip at its default: demanding an impossible aspect turns
        # exactly the objects that reached it (accepted, or rejected later by orientation) into "aspect"
        strict, _ = river_verdicts(fields, grid, LabellerConfig(ar_min_aspect=1e6))
        reached = (base == ACCEPTED) | (base == VERDICT["orientation"])
        assert (strict[reached] == VERDICT["aspect"]).all()
        np.testing.assert_array_equal(strict[~reached], base[~reached])
        aspect_reached |= bool(reached.any())
    assert {VERDICT["no candidate"], ACCEPTED, VERDICT["too wide"]} <= seen  # the test saw real rejections
    assert aspect_reached
