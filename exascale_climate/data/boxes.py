"""Event bounding boxes: derived from label masks, stored with the samples, compared by IoU.

A box is one row (class, row_centre, col_centre, height, width) in pixel units of the sample grid, where pixel
(i, j) covers [i, i+1) x [j, j+1): a one-pixel event at (5, 7) is (cls, 5.5, 7.5, 1, 1). One box per connected
object of each class (8-connected, the event table's objects). On a grid that spans the globe, an object across
the date line is ONE box whose centre column is taken modulo the width (it may sit near 0 or near W) and whose
width runs across the seam; IoU measures longitude periodically too.

Stored as `climate/boxes` (N, 5) float32 in the DeepCAM sample (`exaclimate data boxes DIR`), so evaluation
reads the same ground truth the user inspected; training derives them from the (augmented) labels on the fly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from exascale_climate.data.grid import label_objects
from exascale_climate.errors import DataError

BOX_DATASET = "climate/boxes"
BOX_COLUMNS = ("class", "row_centre", "col_centre", "height", "width")


def _column_extent(cols: np.ndarray, width: int, periodic: bool) -> tuple[float, float]:
    """(start, extent) of the occupied columns; periodically the complement of the largest empty gap."""
    cols = np.unique(cols)
    if not periodic or len(cols) == width:
        return float(cols[0]), float(cols[-1] - cols[0] + 1) if not periodic else float(width)
    gaps = np.diff(np.append(cols, cols[0] + width))  # distance to the next occupied column, circularly
    k = int(np.argmax(gaps))
    start = cols[(k + 1) % len(cols)]
    return float(start), float(width - (gaps[k] - 1))


def boxes_from_mask(mask: np.ndarray, periodic: bool = False, classes=(1, 2)) -> np.ndarray:
    """(N, 5) float32 boxes of every connected object of each class in the (H, W) label mask."""
    mask = np.asarray(mask)
    height, width = mask.shape
    rows = []
    for cls in classes:
        objects, n = label_objects(mask == cls, periodic)
        for obj in range(1, n + 1):
            r, c = np.nonzero(objects == obj)
            top, bottom = r.min(), r.max()
            start, extent = _column_extent(c, width, periodic)
            centre_col = start + extent / 2.0
            if periodic:
                centre_col %= width
            rows.append((cls, (top + bottom + 1) / 2.0, centre_col, float(bottom - top + 1), extent))
    return np.asarray(rows, np.float32).reshape(-1, 5)


def box_iou(a: np.ndarray, b: np.ndarray, period: float | None = None) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of boxes given as (..., row_centre, col_centre, height, width) in the last 4
    columns; with `period` (the grid width) columns are compared on the circle."""
    a = np.asarray(a, np.float64).reshape(-1, np.shape(a)[-1])[:, -4:]
    b = np.asarray(b, np.float64).reshape(-1, np.shape(b)[-1])[:, -4:]
    dr = a[:, None, 0] - b[None, :, 0]
    dc = a[:, None, 1] - b[None, :, 1]
    if period:
        dc = (dc + period / 2.0) % period - period / 2.0

    def overlap(d, size_a, size_b):  # interval [-sa/2, sa/2] against [d - sb/2, d + sb/2]
        return np.clip(np.minimum(size_a / 2.0, d + size_b / 2.0) - np.maximum(-size_a / 2.0, d - size_b / 2.0),
                       0.0, None)

    inter = overlap(dr, a[:, None, 2], b[None, :, 2]) * overlap(dc, a[:, None, 3], b[None, :, 3])
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def boxes_to_mask(boxes: np.ndarray, grid: tuple[int, int], periodic: bool = False) -> np.ndarray:
    """A label mask with every box filled with its class (larger boxes first, so small ones stay visible):
    the segmentation-style view of detections, comparable with label masks pixel by pixel."""
    height, width = grid
    mask = np.zeros(grid, np.int32)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 5)
    for cls, rc, cc, h, w in sorted(boxes, key=lambda b: -b[3] * b[4]):
        r0 = int(np.clip(np.floor(rc - h / 2 + 0.5), 0, height))
        r1 = int(np.clip(np.floor(rc + h / 2 + 0.5), 0, height))
        c0, c1 = int(np.floor(cc - w / 2 + 0.5)), int(np.floor(cc + w / 2 + 0.5))
        cols = np.arange(c0, c1)
        cols = cols % width if periodic else cols[(cols >= 0) & (cols < width)]
        mask[r0:r1][:, cols] = int(cls)
    return mask


# ------------------------------------------------------------------------------------------ detection grid
def encode_targets(boxes: np.ndarray, grid: tuple[int, int], cell: int) -> np.ndarray:
    """(H/cell, W/cell, 6) float32 targets: objectness, class index (label - 1), the centre's offset inside its
    cell (row, col in [0, 1)), log(height / cell), log(width / cell). A cell holding several centres keeps the
    largest box (one prediction per cell, as in ExtremeWeather's YOLO-style head)."""
    gh, gw = grid[0] // cell, grid[1] // cell
    out = np.zeros((gh, gw, 6), np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 5)
    for cls, rc, cc, h, w in sorted(boxes, key=lambda b: b[3] * b[4]):  # largest written last wins
        i, j = min(int(rc // cell), gh - 1), min(int(cc // cell), gw - 1)
        out[i, j] = (1.0, cls - 1, rc / cell - i, cc / cell - j, np.log(max(h, 1e-3) / cell),
                     np.log(max(w, 1e-3) / cell))
    return out


def decode_predictions(raw: np.ndarray, cell: int, score_threshold: float = 0.5, nms_iou: float = 0.3,
                       period: float | None = None) -> np.ndarray:
    """Boxes (N, 6): class label, row/col centre, height, width, score -- from one sample's raw head output
    (gh, gw, 1 + K + 4): confidence logit, K class logits, row/col offset logits, log height/width.

    score = sigmoid(confidence) x the class probability; per class, greedy non-maximum suppression."""
    raw = np.asarray(raw, np.float64)
    k = raw.shape[-1] - 5
    conf = 1.0 / (1.0 + np.exp(-raw[..., 0]))
    logits = raw[..., 1:1 + k]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    cls = probs.argmax(-1)
    score = conf * probs.max(-1)
    ii, jj = np.nonzero(score >= score_threshold)
    if not len(ii):
        return np.zeros((0, 6), np.float32)
    off = 1.0 / (1.0 + np.exp(-raw[ii, jj, 1 + k:3 + k]))
    size = np.exp(np.clip(raw[ii, jj, 3 + k:5 + k], -10, 10)) * cell
    boxes = np.column_stack([cls[ii, jj] + 1, (ii + off[:, 0]) * cell, (jj + off[:, 1]) * cell, size[:, 0],
                             size[:, 1], score[ii, jj]])
    if period:
        boxes[:, 2] %= period
    return non_max_suppression(boxes, nms_iou, period)


def non_max_suppression(boxes: np.ndarray, iou_threshold: float, period: float | None = None) -> np.ndarray:
    """Per class, keep the highest-scoring box and drop those overlapping a kept one by more than the threshold."""
    kept = []
    for cls in np.unique(boxes[:, 0]):
        group = boxes[boxes[:, 0] == cls]
        group = group[np.argsort(-group[:, 5], kind="stable")]
        while len(group):
            kept.append(group[0])
            iou = box_iou(group[:1, :5], group[1:, :5], period)[0]
            group = group[1:][iou <= iou_threshold]
    return np.asarray(kept, np.float32).reshape(-1, 6)


# ------------------------------------------------------------------------------------------ storage
def check_boxes(path, boxes, grid: tuple[int, int], num_classes: int = 3) -> np.ndarray:
    """The stored boxes as (N, 5) float32, or a DataError naming the file and dataset."""
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 5:
        raise DataError(path, f"boxes have shape {boxes.shape}; expected (N, 5) columns {', '.join(BOX_COLUMNS)}",
                        field=BOX_DATASET)
    if not np.issubdtype(boxes.dtype, np.number):
        raise DataError(path, f"boxes are {boxes.dtype}, not numbers", field=BOX_DATASET)
    boxes = boxes.astype(np.float32)
    if not np.all(np.isfinite(boxes)):
        raise DataError(path, "boxes contain NaN/Inf", field=BOX_DATASET)
    cls = boxes[:, 0]
    if np.any((cls < 1) | (cls >= num_classes) | (cls != np.round(cls))):
        raise DataError(path, f"box classes {sorted(set(cls.tolist()))} outside 1..{num_classes - 1}",
                        field=BOX_DATASET)
    h, w = grid
    bad = ((boxes[:, 3] <= 0) | (boxes[:, 4] <= 0) | (boxes[:, 1] < 0) | (boxes[:, 1] > h) | (boxes[:, 2] < 0)
           | (boxes[:, 2] > w) | (boxes[:, 3] > h) | (boxes[:, 4] > w))
    if np.any(bad):
        raise DataError(path, f"box {int(np.argmax(bad))} {boxes[np.argmax(bad)].tolist()} lies outside the "
                              f"{h}x{w} grid or has no size", field=BOX_DATASET)
    return boxes


def read_boxes(path: str | Path) -> np.ndarray:
    """The boxes stored in a DeepCAM sample, validated against its grid; a DataError names what is wrong."""
    from exascale_climate.data.layouts import open_hdf5
    from exascale_climate.data.samples import read_labels

    grid = tuple(read_labels(path).shape)
    try:
        with open_hdf5(Path(path)) as f:
            if BOX_DATASET not in f:
                raise DataError(path, "no stored boxes; run `exaclimate data boxes` on the directory",
                                field=BOX_DATASET)
            raw = f[BOX_DATASET][()]
    except (OSError, KeyError) as e:
        raise DataError(path, f"cannot read ({e})", field=BOX_DATASET) from None
    return check_boxes(path, raw, grid)


def write_boxes(path: str | Path, periodic: bool | None = None) -> np.ndarray:
    """Derive the boxes of a sample from its labels and store them in the file (a copy is written, then
    renamed, so a crash never leaves a half-written sample). Returns the boxes."""
    import shutil

    import h5py

    from exascale_climate.data.samples import read_sample
    from exascale_climate.data.grid import sample_coordinates, spans_globe
    from exascale_climate.utils.io import atomic_path

    path = Path(path)
    sample = read_sample(path, with_labels=True)
    if sample.labels is None:
        raise DataError(path, "no labels to derive boxes from", field="climate/labels_0")
    if periodic is None:
        periodic = spans_globe(sample_coordinates(sample)[1])
    boxes = boxes_from_mask(sample.labels, periodic)
    with atomic_path(path) as tmp:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "r+") as f:
            if BOX_DATASET in f:
                del f[BOX_DATASET]
            ds = f.create_dataset(BOX_DATASET, data=boxes)
            ds.attrs["columns"] = ",".join(BOX_COLUMNS)
            ds.attrs["units"] = "grid pixels"
            ds.attrs["periodic_longitude"] = bool(periodic)
    return boxes


def store_boxes(directory: str | Path) -> dict:
    """`exaclimate data boxes DIR`: derive and store the boxes of every sample of DIR."""
    from exascale_climate.data.layouts import list_samples

    files = list_samples(directory)
    if not files:
        raise DataError(directory, "no data-*.h5 samples")
    counts = {"files": len(files), "boxes": 0}
    for path in files:
        counts["boxes"] += len(write_boxes(path))
    return counts
