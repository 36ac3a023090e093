"""Per-channel normalisation from stats.h5: normalised = (x - offset) * scale, the same in training and inference.

The reader normalises each sample in place as it reads it (`InPlaceNormalizer`, handed to `read_sample` as its
`transform`): a block of rows is normalised while it is still in cache from the read, there are no 56 MB
temporaries for an allocator to page-fault in, and numpy releases the GIL so the other reader runs meanwhile.
Alone it takes 4.8 ms per 768x1152x16 sample against 7.4 ms for the same two TensorFlow ops.
"""
from __future__ import annotations

import numpy as np

from exascale_climate.errors import ConfigError

ROWS_PER_BLOCK = 8  # both passes over a block of rows while it is in cache (~0.6 MB at 1152x16 float32)


def normalization_constants(kind: str, stats) -> tuple[np.ndarray, np.ndarray]:
    """(offset, scale) per channel so that normalised = (x - offset) * scale."""
    n = len(stats.variables)
    if kind == "none":
        return np.zeros(n, np.float32), np.ones(n, np.float32)
    if kind == "zscore":
        offset, spread = stats.mean, stats.std
    elif kind == "minmax":
        offset, spread = stats.minval, stats.maxval - stats.minval
    else:
        raise ConfigError(f"pipeline.normalization: {kind!r} is not allowed; choose zscore, minmax or none")
    spread = np.where(spread > 0, spread, 1.0)  # a constant channel stays finite (0) instead of NaN
    return offset.astype(np.float32), (1.0 / spread).astype(np.float32)


def make_normalizer(cfg, stats):
    """x -> normalised x for numpy arrays or tensors (..., C); training and inference share it."""
    offset, scale = normalization_constants(cfg.pipeline.normalization, stats)
    return lambda x: (x - offset) * scale


class InPlaceNormalizer:
    """(x - offset) * scale over the last axis of a C-contiguous (H, W, C) array, in place.

    Rows are viewed as (W * C) vectors against offset/scale tiled W times, so numpy's inner loop runs over
    thousands of contiguous values instead of C = 16 (2.5x faster), a few rows at a time so the second pass
    finds them in cache. Picklable, for reader processes.
    """

    def __init__(self, offset: np.ndarray, scale: np.ndarray):
        self.offset = np.asarray(offset, np.float32)
        self.scale = np.asarray(scale, np.float32)
        self._tiled: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, data: np.ndarray) -> np.ndarray:
        if data.ndim != 3 or not data.flags.c_contiguous or data.shape[-1] != self.offset.size:
            raise ValueError(f"needs a C-contiguous (H, W, {self.offset.size}) array, got {data.shape}")
        height, width, _ = data.shape
        key = (width, data.dtype.str)
        if key not in self._tiled:
            self._tiled[key] = (np.tile(self.offset.astype(data.dtype), width),
                                np.tile(self.scale.astype(data.dtype), width))
        tiled_offset, tiled_scale = self._tiled[key]
        rows = data.reshape(height, -1)
        for start in range(0, height, ROWS_PER_BLOCK):
            block = rows[start:start + ROWS_PER_BLOCK]
            np.subtract(block, tiled_offset, out=block)
            np.multiply(block, tiled_scale, out=block)
        return data
