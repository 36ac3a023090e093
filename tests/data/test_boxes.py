"""Event boxes from hand-made label masks (one across the date line), IoU on the circle, storage and bad input."""
from __future__ import annotations

import subprocess

import h5py
import numpy as np
import pytest

from exascale_climate.data.boxes import (BOX_DATASET, box_iou, boxes_from_mask, boxes_to_mask, encode_targets,
                                         read_boxes, write_boxes)
from exascale_climate.data.synthetic import weather_like
from exascale_climate.data.writers import write_deepcam_sample
from exascale_climate.errors import DataError
from exascale_climate.utils.launch import exaclimate


def hand_mask() -> np.ndarray:
    """16 x 24 grid: a TC block rows 2-4, cols 5-8; an AR across the date line rows 10-12, cols 21-23 and 0-1;
    a single-pixel TC at (14, 12)."""
    m = np.zeros((16, 24), np.uint8)
    m[2:5, 5:9] = 1
    m[10:13, 21:24] = 2
    m[10:13, 0:2] = 2
    m[14, 12] = 1
    return m


def test_boxes_from_hand_made_mask_periodic():
    boxes = boxes_from_mask(hand_mask(), periodic=True)
    rows = sorted(map(tuple, boxes.tolist()))
    # (class, row centre, col centre, height, width), pixel (i, j) covering [i, i+1) x [j, j+1)
    assert rows == sorted([
        (1.0, 3.5, 7.0, 3.0, 4.0),  # rows 2..4 -> [2, 5): centre 3.5; cols 5..8 -> [5, 9): centre 7
        (1.0, 14.5, 12.5, 1.0, 1.0),
        (2.0, 11.5, 23.5, 3.0, 5.0),  # cols 21, 22, 23, 0, 1 -> [21, 26) mod 24: centre 23.5, width 5
    ])


def test_boxes_from_mask_not_periodic_splits_the_seam_object():
    boxes = boxes_from_mask(hand_mask(), periodic=False)
    ar = sorted(map(tuple, boxes[boxes[:, 0] == 2].tolist()))
    assert ar == [(2.0, 11.5, 1.0, 3.0, 2.0), (2.0, 11.5, 22.5, 3.0, 3.0)]


def test_object_spanning_all_longitudes():
    m = np.zeros((8, 12), np.uint8)
    m[3, :] = 2
    (box,) = boxes_from_mask(m, periodic=True)
    assert box[0] == 2 and box[3] == 1 and box[4] == 12


def test_iou_periodic_by_hand():
    w = 24.0
    a = np.array([[11.5, 23.5, 3.0, 5.0]])  # spans cols 21..26 (= 2)
    b = np.array([[11.5, 0.5, 3.0, 1.0]])  # col 0 -> inside a
    assert box_iou(a, b, period=w)[0, 0] == pytest.approx(3.0 / 15.0)
    assert box_iou(a, b)[0, 0] == 0.0  # without the period they do not touch
    c = np.array([[12.5, 22.5, 3.0, 5.0]])  # a shifted one row down and one column left: cols [20, 25)
    # overlap rows [11, 13) x cols [21, 25): 2 x 4 = 8; union 15 + 15 - 8
    assert box_iou(a, c, period=w)[0, 0] == pytest.approx(8.0 / 22.0)


def test_filled_mask_round_trip_across_seam():
    mask = hand_mask()
    boxes = boxes_from_mask(mask, periodic=True)
    filled = boxes_to_mask(boxes, mask.shape, periodic=True)
    np.testing.assert_array_equal(filled, mask)  # every object of the hand mask is a full rectangle


def test_encode_targets_by_hand():
    boxes = np.array([[2, 11.5, 23.5, 3.0, 5.0]], np.float32)
    t = encode_targets(boxes, (16, 24), cell=4)
    assert t.shape == (4, 6, 6)
    assert np.count_nonzero(t[..., 0]) == 1
    np.testing.assert_allclose(t[2, 5], [1, 1, 11.5 / 4 - 2, 23.5 / 4 - 5, np.log(3 / 4), np.log(5 / 4)], rtol=1e-6)


def _sample(path, labels):
    data = weather_like(np.random.default_rng(0).normal(size=(*labels.shape, 2)), ["TMQ", "PSL"])
    write_deepcam_sample(path, data, labels, ["TMQ", "PSL"])
    return path


def test_write_and_read_boxes_and_inspect(tmp_path):
    path = _sample(tmp_path / "data-0.h5", hand_mask())
    written = write_boxes(path, periodic=True)
    with h5py.File(path, "r") as f:  # observed in the file itself
        np.testing.assert_array_equal(f[BOX_DATASET][()], written)
    np.testing.assert_array_equal(read_boxes(path), written)
    # random fields are implausible weather: --report lists that and keeps exit 0 (issue 23)
    out = subprocess.run(exaclimate("data", "inspect", str(path), "--report"), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "boxes (stored" in out.stdout and "centre (11.5, 23.5) size 3x5" in out.stdout


@pytest.mark.parametrize("content, message", [
    (None, "no stored boxes"),
    (np.zeros((2, 4), np.float32), "expected (N, 5)"),
    (np.array([[7, 1, 1, 1, 1]], np.float32), "outside 1..2"),
    (np.array([[1, np.nan, 1, 1, 1]], np.float32), "NaN"),
    (np.array([[1, 3, 3, 0, 2]], np.float32), "no size"),
])
def test_missing_or_malformed_boxes_are_named(tmp_path, content, message):
    path = _sample(tmp_path / "data-bad.h5", hand_mask())
    if content is not None:
        with h5py.File(path, "r+") as f:
            f.create_dataset(BOX_DATASET, data=content)
    with pytest.raises(DataError) as err:
        read_boxes(path)
    assert str(path) in str(err.value) and BOX_DATASET in str(err.value) and message in str(err.value)


def test_cli_data_boxes_stores_every_sample(tmp_path):
    for i in range(2):
        _sample(tmp_path / f"data-{i}.h5", hand_mask())
    out = subprocess.run(exaclimate("data", "boxes", str(tmp_path)), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "6 box(es) stored in 2 sample(s)" in out.stdout
    for i in range(2):
        assert len(read_boxes(tmp_path / f"data-{i}.h5")) == 3
