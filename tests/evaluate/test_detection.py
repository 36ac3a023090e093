"""mAP against a hand-computed case, box decoding, and the detector's evaluate on a sample without boxes."""
from __future__ import annotations

import numpy as np
import pytest

from exascale_climate.data.boxes import decode_predictions
from exascale_climate.evaluate.detection import average_precision, box_degrees, mean_average_precision


def test_map_hand_computed():
    """Class 1: truths A (sample 0) and B (sample 1); detections d1 0.9 = A, d2 0.8 far away, d3 0.7 on B
    shifted by 2 of 4 columns (IoU 8/24 = 1/3), d4 0.6 a duplicate of A. Class 2: one truth, no detection.

    IoU 0.1: TP FP TP FP -> precision 1, 1/2, 2/3, 1/2 at recall 1/2, 1/2, 1, 1 -> AP = 1/2*1 + 1/2*2/3 = 5/6.
    IoU 0.5: TP FP FP FP -> AP = 1/2 * 1 = 1/2. mAP over both classes: (5/6 + 0)/2 and (1/2 + 0)/2."""
    truths = [np.array([[1, 10, 10, 4, 4], [2, 30, 30, 5, 5]], float), np.array([[1, 10, 10, 4, 4]], float)]
    detections = [np.array([[1, 10, 10, 4, 4, 0.9], [1, 40, 60, 4, 4, 0.8], [1, 10, 10, 4, 4, 0.6]]),
                  np.array([[1, 10, 12, 4, 4, 0.7]])]
    assert average_precision(detections, truths, 1, 0.1) == pytest.approx(5 / 6)
    assert average_precision(detections, truths, 1, 0.5) == pytest.approx(1 / 2)
    assert average_precision(detections, truths, 2, 0.1) == 0.0
    result = mean_average_precision(detections, truths)
    assert result["iou_0.1"]["map"] == pytest.approx(5 / 12)
    assert result["iou_0.5"]["map"] == pytest.approx(1 / 4)
    assert result["iou_0.5"]["ap"] == {"tropical_cyclone": pytest.approx(0.5), "atmospheric_river": 0.0}


def test_map_matches_across_the_date_line_only_with_the_period():
    truths = [np.array([[2, 5, 0.5, 2, 4]], float)]  # cols [-1.5, 2.5) of a 20-wide grid
    detections = [np.array([[2, 5, 19.5, 2, 4, 0.9]])]  # one column west, across the seam
    assert average_precision(detections, truths, 2, 0.5, period=20) == 1.0  # IoU 3/5
    assert average_precision(detections, truths, 2, 0.5) == 0.0


def test_decode_by_hand():
    raw = np.full((2, 3, 7), -20.0)
    raw[1, 2] = [5.0, 0.0, 3.0, 0.0, 0.0, np.log(2.0), np.log(0.5)]  # confident AR, centre in the cell middle
    (box,) = decode_predictions(raw, cell=8, score_threshold=0.5)
    sig5 = 1 / (1 + np.exp(-5.0))
    p_ar = np.exp(3.0) / (1 + np.exp(3.0))
    np.testing.assert_allclose(box, [2, 12.0, 20.0, 16.0, 4.0, sig5 * p_ar], rtol=1e-5)


def test_box_degrees_across_the_date_line():
    """Row 4 of 9 (lat 0, cell edges +-11.25); columns [-1, 1) = the last cell (centre 330 E) and the first
    (centre 0 E), whose outer edges are 315 E and 15 E."""
    lat = np.linspace(-90, 90, 9)
    lon = np.arange(12) * 30.0
    lat_min, lat_max, lon_min, lon_max = box_degrees([2, 4.5, 0.0, 1, 2], lat, lon)
    assert (lat_min, lat_max) == (pytest.approx(-11.25), pytest.approx(11.25))
    assert lon_min == pytest.approx(315.0) and lon_max == pytest.approx(15.0)
