"""In-place normalisation equals (x - offset) * scale for any height, including partial row blocks."""
import numpy as np
import pytest

from exascale_climate.pipeline.normalize import ROWS_PER_BLOCK, InPlaceNormalizer


@pytest.mark.parametrize("height", [1, ROWS_PER_BLOCK - 1, ROWS_PER_BLOCK, ROWS_PER_BLOCK + 1, 5 * ROWS_PER_BLOCK + 3])
def test_in_place_normalisation_equals_numpy(height):
    rng = np.random.default_rng(height)
    data = rng.normal(50, 20, (height, 7, 4)).astype(np.float32)
    offset = rng.normal(size=4).astype(np.float32)
    scale = rng.uniform(0.1, 2, 4).astype(np.float32)
    expected = (data - offset) * scale
    normalize = InPlaceNormalizer(offset, scale)
    result = normalize(data)
    assert result is data  # in place
    np.testing.assert_array_equal(data, expected)
    twice = normalize(expected.copy())  # the tiled constants are reused for the same width
    np.testing.assert_allclose(twice, (expected - offset) * scale, rtol=1e-6)


def test_in_place_normalisation_rejects_what_it_cannot_do_in_place():
    normalize = InPlaceNormalizer(np.zeros(4, np.float32), np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 4\)"):
        normalize(np.zeros((3, 5, 4), np.float32)[:, ::2])  # not contiguous
    with pytest.raises(ValueError, match=r"\(H, W, 4\)"):
        normalize(np.zeros((3, 5, 3), np.float32))  # wrong channel count
