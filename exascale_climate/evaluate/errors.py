"""Where a segmentation's errors lie, traced to the heuristic labeller's rules (`exaclimate evaluate --errors`).

Why: a mean IoU says how much is wrong, not what. On labels made by the labeller, an AR is a region that passes a
local test (IVT, TMQ anomaly) *and* whole-object tests (length, width, aspect, latitude, orientation), so a false
AR pixel is either outside every candidate region or inside a region one rule rejected; and on a coarse grid
most river pixels are edge pixels, where one cell of error is a large share of the IoU. These counts are what
docs/TRAINING.md's plateau analysis rests on. Counts add up across files and ranks (one allreduce, like the
confusion matrix).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from exascale_climate.data.grid import EIGHT_CONNECTED
from exascale_climate.data.labeller import AR_CLASS, AR_VERDICTS, TC_CLASS

ERROR_KEYS = (*(f"false_ar_{v.replace(' ', '_')}" for v in AR_VERDICTS), "false_ar_within_1_cell",
              "missed_ar_edge", "missed_ar_interior", "true_ar_edge", "true_ar_interior",
              "false_tc", "false_tc_within_1_cell", "missed_tc_edge", "missed_tc_interior")


def _wrap(mask: np.ndarray, periodic_lon: bool) -> np.ndarray:
    return np.pad(mask, ((0, 0), (1, 1)), mode="wrap") if periodic_lon else mask


def _unwrap(mask: np.ndarray, periodic_lon: bool) -> np.ndarray:
    return mask[:, 1:-1] if periodic_lon else mask


def interior(mask: np.ndarray, periodic_lon: bool) -> np.ndarray:
    """Pixels of `mask` whose 8 neighbours are all in it; beyond the grid counts as inside (past the poles, or
    the edge of a regional grid, where the object may go on)."""
    out = ndimage.binary_erosion(_wrap(mask, periodic_lon), EIGHT_CONNECTED, border_value=1)
    return _unwrap(out, periodic_lon) & mask


def near(mask: np.ndarray, periodic_lon: bool) -> np.ndarray:
    """`mask` grown by one cell (8 neighbours), across the date line on a global grid."""
    return _unwrap(ndimage.binary_dilation(_wrap(mask, periodic_lon), EIGHT_CONNECTED), periodic_lon)


def error_counts(labels: np.ndarray, predictions: np.ndarray, verdicts: np.ndarray,
                 periodic_lon: bool = True) -> np.ndarray:
    """int64 counts in ERROR_KEYS order for one (H, W) sample; `verdicts` from `labeller.river_verdicts`."""
    counts = dict.fromkeys(ERROR_KEYS, 0)
    for cls, name in ((AR_CLASS, "ar"), (TC_CLASS, "tc")):
        true, pred = labels == cls, predictions == cls
        false, missed = pred & ~true, true & ~pred
        inner = interior(true, periodic_lon)
        counts[f"false_{name}_within_1_cell"] = int((false & near(true, periodic_lon)).sum())
        counts[f"missed_{name}_edge"] = int((missed & ~inner).sum())
        counts[f"missed_{name}_interior"] = int((missed & inner).sum())
        if name == "ar":
            counts["true_ar_edge"], counts["true_ar_interior"] = int((true & ~inner).sum()), int(inner.sum())
            by_verdict = np.bincount(verdicts[false].astype(np.int64), minlength=len(AR_VERDICTS))
            for v, n in zip(AR_VERDICTS, by_verdict):
                counts[f"false_ar_{v.replace(' ', '_')}"] = int(n)
        else:
            counts["false_tc"] = int(false.sum())
    return np.array([counts[k] for k in ERROR_KEYS], np.int64)


def summarise(counts: np.ndarray) -> dict:
    """The counts by name, and the shares a reader wants: which rule the false AR pixels' regions fail."""
    c = dict(zip(ERROR_KEYS, (int(v) for v in counts)))
    false_ar = sum(c[f"false_ar_{v.replace(' ', '_')}"] for v in AR_VERDICTS)
    rejected = sum(c[f"false_ar_{v.replace(' ', '_')}"] for v in AR_VERDICTS[2:])
    missed_ar = c["missed_ar_edge"] + c["missed_ar_interior"]
    share = (lambda a, b: a / b if b else None)
    return {"counts": c, "false_ar": false_ar, "missed_ar": missed_ar,
            "false_ar_share": {v: share(c[f"false_ar_{v.replace(' ', '_')}"], false_ar) for v in AR_VERDICTS},
            "false_ar_in_rejected_regions": share(rejected, false_ar),
            "false_ar_within_1_cell": share(c["false_ar_within_1_cell"], false_ar),
            "missed_ar_on_edges": share(c["missed_ar_edge"], missed_ar),
            "ar_edge_share": share(c["true_ar_edge"], c["true_ar_edge"] + c["true_ar_interior"]),
            "false_tc_within_1_cell": share(c["false_tc_within_1_cell"], c["false_tc"])}


def format_errors(summary: dict) -> str:
    pct = (lambda x: "n/a" if x is None else f"{100 * x:.1f}%")
    by = ", ".join(f"{v} {pct(s)}" for v, s in summary["false_ar_share"].items() if s)
    return "\n".join([
        f"false AR pixels: {summary['false_ar']:,}; their labeller verdict: {by}",
        f"  in candidate regions a whole-object test rejected: {pct(summary['false_ar_in_rejected_regions'])}; "
        f"within one cell of a true AR: {pct(summary['false_ar_within_1_cell'])}",
        f"missed AR pixels: {summary['missed_ar']:,}, on river edges: {pct(summary['missed_ar_on_edges'])} "
        f"(edge pixels are {pct(summary['ar_edge_share'])} of all AR pixels)",
        f"false TC pixels: {summary['counts']['false_tc']:,}, within one cell of a true TC: "
        f"{pct(summary['false_tc_within_1_cell'])}"])
