"""What the patch tests check extracted patches against, written independently of classify/patches.py: the
table's variables, a centred window with longitude wrapping, and the label masks of the source files."""
import functools

import numpy as np

from exascale_climate.config import LabellerConfig
from exascale_climate.data.samples import read_labels, read_sample

SIZES = {"tc": (8, 8), "ar": (24, 36), "wf": (8, 16)}  # the 96x144 test grid holds none of the paper's sizes
VARIABLES = {"tc": ["PSL", "UBOT", "VBOT", "TMQ", "U850", "V850", "T200", "T500"], "ar": ["TMQ", "LANDMASK"],
             "wf": ["TREFHT", "PRECT", "PSL"]}  # transcribed from the table


def crop(array, row, col, size):
    """The window with centre pixel (size//2) at (row, col), longitude wrapping: written independently."""
    h, w = size
    rows = np.arange(row - h // 2, row - h // 2 + h)
    assert rows.min() >= 0 and rows.max() < array.shape[0]
    cols = np.mod(np.arange(col - w // 2, col - w // 2 + w), array.shape[1])
    return array[np.ix_(rows, cols)]


@functools.lru_cache(maxsize=None)
def class_mask(key, path):
    if key == "wf":
        from exascale_climate.data.labeller import label_fronts

        s = read_sample(path, channels=["TREFHT", "PSL", "PS"], with_labels=False)
        return label_fronts({v: s.data[..., i] for i, v in enumerate(s.variables)}, s.lat, s.lon, LabellerConfig())
    return read_labels(path) == {"tc": 1, "ar": 2}[key]


@functools.lru_cache(maxsize=None)
def source_fields(key, path):
    return read_sample(path, channels=[v for v in VARIABLES[key] if v != "LANDMASK"], with_labels=False).data
