"""Scoring and running the semi-supervised box detector (model semisup).

mAP is ExtremeWeather's metric (Racah et al. 2017): per class, detections of all samples sorted by score, each
matched greedily to the best still-unmatched true box of its sample with IoU >= the threshold (0.1 and 0.5);
average precision is the area under the precision-recall curve with precision made monotone (the PASCAL VOC
all-point rule). Longitude is periodic in IoU on a global grid.

The segmentation-style comparison fills every box with its class and scores the filled masks against the label
masks pixel by pixel (the confusion matrix and IoU of evaluate.py): the detector, the heuristic labeller's
objects boxed the same way, and the true boxes themselves (what box-shaped masks can reach at best).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from exascale_climate.data.boxes import box_iou, boxes_from_mask, boxes_to_mask, decode_predictions
from exascale_climate.errors import DataError
from exascale_climate.utils.io import atomic_write_text, printable
from exascale_climate.utils.log import get_logger
from exascale_climate.variables import CLASS_NAMES, NUM_CLASSES

log = get_logger("evaluate")
IOU_THRESHOLDS = (0.1, 0.5)


# ------------------------------------------------------------------------------------------------ mAP
def average_precision(detections: list[np.ndarray], truths: list[np.ndarray], cls: int, iou_threshold: float,
                      period: float | None = None) -> float | None:
    """AP of one class. detections[i]: (N, 6) boxes with scores of sample i; truths[i]: (M, 5) true boxes.
    None when the class has no true box anywhere (AP undefined)."""
    scored = []  # (score, sample, box)
    n_true = 0
    for i, (det, tru) in enumerate(zip(detections, truths)):
        det = np.asarray(det, np.float64).reshape(-1, 6)
        n_true += int(np.sum(np.asarray(tru).reshape(-1, 5)[:, 0] == cls))
        scored += [(float(d[5]), i, d[:5]) for d in det if int(d[0]) == cls]
    if n_true == 0:
        return None
    scored.sort(key=lambda s: -s[0])
    used = [np.zeros(int(np.sum(np.asarray(t).reshape(-1, 5)[:, 0] == cls)), bool) for t in truths]
    tp = np.zeros(len(scored))
    for k, (_, i, box) in enumerate(scored):
        tru = np.asarray(truths[i], np.float64).reshape(-1, 5)
        tru = tru[tru[:, 0] == cls]
        if not len(tru):
            continue
        iou = box_iou(box[None], tru, period)[0]
        iou[used[i]] = -1.0
        j = int(np.argmax(iou))
        if iou[j] >= iou_threshold:
            used[i][j] = True
            tp[k] = 1.0
    if not len(scored):
        return 0.0
    ctp = np.cumsum(tp)
    recall = ctp / n_true
    precision = ctp / np.arange(1, len(scored) + 1)
    # All-point interpolation: precision at recall r is the best precision at any recall >= r.
    r = np.concatenate([[0.0], recall])
    p = np.concatenate([[0.0], precision])
    p = np.maximum.accumulate(p[::-1])[::-1]
    return float(np.sum((r[1:] - r[:-1]) * p[1:]))


def mean_average_precision(detections, truths, period: float | None = None,
                           thresholds=IOU_THRESHOLDS, classes=range(1, NUM_CLASSES)) -> dict:
    """{"iou_0.1": {"ap": {class: AP or None}, "map": mean over defined classes}, "iou_0.5": ...}."""
    out = {}
    for thr in thresholds:
        ap = {CLASS_NAMES[c]: average_precision(detections, truths, c, thr, period) for c in classes}
        defined = [v for v in ap.values() if v is not None]
        out[f"iou_{thr:g}"] = {"ap": ap, "map": float(np.mean(defined)) if defined else None}
    return out


# --------------------------------------------------------------------------------------- the detector
def _segmenter_class():
    from exascale_climate.evaluate.predict import Segmenter

    class Detector(Segmenter):
        """A trained semisup model with the training input treatment: boxes and reconstructions of samples."""

        def _forward_for(self, grid):
            if grid not in self._forward:
                import tensorflow as tf

                model = self.model
                if tuple(model.input_shape[1:3]) != grid:
                    from exascale_climate.models import build_model

                    model = build_model(self.cfg.model, grid + (len(self.channels),), self.cfg.train.precision)
                    model.set_weights(self.model.get_weights())
                self._forward[grid] = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
            return self._forward[grid]

        def raw(self, fields: np.ndarray, periodic_lon: bool):
            """(normalised input, reconstruction, detection head output, (row, col) padding offsets)."""
            from exascale_climate.evaluate.predict import pad_for_model

            x = self.normalize(np.asarray(fields, np.float32)[None])
            padded, (rows, cols) = pad_for_model(x, self.divisor, periodic_lon)
            recon, det = self._forward_for(tuple(padded.shape[1:3]))(padded)
            return x[0], recon.numpy()[0, rows, cols], det.numpy()[0], (rows.start, cols.start)

        def detect(self, fields: np.ndarray, periodic_lon: bool = True) -> np.ndarray:
            """(N, 6) boxes (class, row/col centre, height, width, score) on the sample's own grid."""
            _, _, det, (top, left) = self.raw(fields, periodic_lon)
            scfg = self.cfg.model.semisup
            boxes = decode_predictions(det, self.divisor, scfg.score_threshold, scfg.nms_iou)
            boxes[:, 1] -= top
            boxes[:, 2] -= left
            height, width = fields.shape[:2]
            if periodic_lon:
                boxes[:, 2] %= width
            return boxes[(boxes[:, 1] >= 0) & (boxes[:, 1] < height) & (boxes[:, 2] >= 0) & (boxes[:, 2] < width)]

    return Detector


def load_detector(checkpoint, stats_file=None, precision=None):
    from exascale_climate.errors import ExaclimateError

    detector = _segmenter_class().from_checkpoint(checkpoint, stats_file, precision)
    if detector.cfg.model.name != "semisup":
        raise ExaclimateError(f"{checkpoint}: model {detector.cfg.model.name!r} is not the box detector (semisup)")
    return detector


# --------------------------------------------------------------------------------------- evaluation
def evaluate_detector(checkpoint, data_dir, *, json_path=None, labeller: str = "auto", stats_file=None,
                      show: bool = False, precision: str | None = None) -> dict:
    """`exaclimate evaluate` for a semisup run: mAP per class at IoU 0.1 / 0.5 against the boxes stored with
    the samples (`exaclimate data boxes`), and box-filled masks scored against the label masks."""
    from exascale_climate.data.boxes import read_boxes
    from exascale_climate.data.layouts import list_samples
    from exascale_climate.data.grid import sample_coordinates, spans_globe
    from exascale_climate.data.labeller import REQUIRED as labeller_inputs
    from exascale_climate.evaluate.evaluate import (_labeller_mask, confusion, labels_are_independent, scores)
    from exascale_climate.utils.progress import track
    from exascale_climate.variables import VARIABLE_NAMES

    files = list_samples(data_dir)
    if not files:
        raise DataError(data_dir, "no data-*.h5 samples to evaluate")
    truths = [read_boxes(p) for p in files]  # all first: a missing/malformed box set stops before any work
    detector = load_detector(checkpoint, stats_file, precision)
    detections, lab_boxes, lab_truths, period = [], [], [], None
    cms = {k: np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64) for k in ("model", "labeller", "true_boxes")}
    labeller_samples = 0
    for path, tru in track(list(zip(files, truths)), "evaluate", total=len(files)):
        sample, fields = detector.read(path, with_labels=True,
                                       extra=tuple(VARIABLE_NAMES) if labeller != "off" else ())
        lat, lon = sample_coordinates(sample)
        periodic = spans_globe(lon)
        period = sample.grid[1] if periodic else None
        boxes = detector.detect(fields, periodic)
        detections.append(boxes)
        cms["model"] += confusion(sample.labels, boxes_to_mask(boxes[:, :5], sample.grid, periodic))
        cms["true_boxes"] += confusion(sample.labels, boxes_to_mask(tru, sample.grid, periodic))
        if labeller == "on" or (labeller == "auto" and labels_are_independent(sample.attrs)
                                and set(labeller_inputs) <= set(sample.variables)):
            lb = boxes_from_mask(_labeller_mask(sample, lat, lon, detector.cfg), periodic)
            lab_boxes.append(np.column_stack([lb, np.ones(len(lb))]))  # every labeller object scores 1
            lab_truths.append(tru)
            cms["labeller"] += confusion(sample.labels, boxes_to_mask(lb, sample.grid, periodic))
            labeller_samples += 1
    report = {
        "checkpoint": str(checkpoint), "data": str(data_dir), "samples": len(files), "model_name": "semisup",
        "true_boxes": int(sum(len(t) for t in truths)), "detections": int(sum(len(d) for d in detections)),
        "map": mean_average_precision(detections, truths, period),
        "box_masks": {"model": scores(cms["model"]), "true_boxes": scores(cms["true_boxes"])},
        "labeller_samples": labeller_samples,
    }
    if labeller_samples:
        report["labeller_map"] = mean_average_precision(lab_boxes, lab_truths, period)
        report["box_masks"]["labeller"] = scores(cms["labeller"])
    log.info("evaluated %d samples: mAP@0.1 %s, mAP@0.5 %s", len(files), report["map"]["iou_0.1"]["map"],
             report["map"]["iou_0.5"]["map"])
    if json_path == "-":
        print(json.dumps(report, indent=2))
    elif json_path:
        atomic_write_text(json_path, json.dumps(report, indent=2) + "\n")
    if show and json_path != "-":
        print(format_report(report))
    return report


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def format_report(report: dict) -> str:
    lines = [f"{report['samples']} samples, {report['true_boxes']} true boxes, {report['detections']} detections"]
    classes = list(next(iter(report["map"].values()))["ap"])
    lines.append(f"{'AP':<18}" + "".join(f"{c:>19}" for c in classes) + f"{'mAP':>9}")
    for who, key in (("model", "map"), ("labeller", "labeller_map")):
        for thr, row in (report.get(key) or {}).items():
            lines.append(f"{who + ' ' + thr:<18}" + "".join(f"{_fmt(row['ap'][c]):>19}" for c in classes)
                         + f"{_fmt(row['map']):>9}")
    lines.append("box-filled masks against the label masks (mean IoU / per class):")
    for who, s in report["box_masks"].items():
        lines.append(f"  {who:<11} {_fmt(s['mean_iou'])}  " + ", ".join(f"{c} {_fmt(v)}" for c, v in s["iou"].items()))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ geography
def box_degrees(box, lat: np.ndarray, lon: np.ndarray) -> tuple[float, float, float, float]:
    """(lat_min, lat_max, lon_min, lon_max) of a pixel box on the sample's grid; longitudes in [0, 360) and
    lon_min > lon_max when the box crosses the date line."""
    _, rc, cc, h, w = (float(v) for v in box[:5])
    rows = np.arange(len(lat))
    lat_a = float(np.interp(rc - h / 2 - 0.5, rows, lat))
    lat_b = float(np.interp(rc + h / 2 - 0.5, rows, lat))
    step = 360.0 / len(lon)
    lon_min = (float(lon[0]) + (cc - w / 2 - 0.5) * step) % 360.0
    lon_max = (float(lon[0]) + (cc + w / 2 - 0.5) * step) % 360.0
    return min(lat_a, lat_b), max(lat_a, lat_b), lon_min, lon_max




def is_detector_checkpoint(checkpoint) -> bool:
    """True when the run's config says model semisup (read from the checkpoint without building the model)."""
    import yaml

    from exascale_climate.train.checkpoints import CONFIG, resolve_checkpoint

    try:
        tree = yaml.safe_load((resolve_checkpoint(checkpoint) / CONFIG).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False  # load_for_inference reports the problem with its own message
    return isinstance(tree, dict) and (tree.get("model") or {}).get("name") == "semisup"


# ------------------------------------------------------------------------------------------ predict
def detection_events(sample, boxes: np.ndarray, source: str = "") -> list:
    """One event-table row per detected box: class, box centre as the centroid, box extent in degrees,
    the box's area on the sphere and its score."""
    from exascale_climate.data.grid import cell_areas_km2, sample_coordinates, spans_globe
    from exascale_climate.evaluate.events import Event

    lat, lon = sample_coordinates(sample)
    periodic = spans_globe(lon)
    areas = cell_areas_km2(lat, lon)
    events = []
    for k, box in enumerate(boxes):
        filled = boxes_to_mask(box[None, :5], sample.grid, periodic) > 0
        lat_min, lat_max, lon_min, lon_max = box_degrees(box, lat, lon)
        centre_lat = float(np.interp(float(box[1]) - 0.5, np.arange(len(lat)), lat))
        centre_lon = (float(lon[0]) + (float(box[2]) - 0.5) * 360.0 / len(lon)) % 360.0
        events.append(Event(
            time=sample.time or "", event_class=CLASS_NAMES[int(box[0])], object_id=k + 1,
            centroid_lat=round(centre_lat, 4), centroid_lon=round(centre_lon, 4),
            area_km2=float(areas[filled].sum()), pixels=int(filled.sum()), source=source,
            box_lat_min=round(lat_min, 4), box_lat_max=round(lat_max, 4), box_lon_min=round(lon_min, 4),
            box_lon_max=round(lon_max, 4), score=round(float(box[5]), 4)))
    return events


def predict_boxes_file(detector, path: Path):
    """All time steps of one file: box-filled masks (T, H, W), the events (one per box), the first sample."""
    from exascale_climate.data.layouts import detect_layout, netcdf_time_steps
    from exascale_climate.data.grid import sample_coordinates, spans_globe
    from exascale_climate.evaluate.predict import FilePrediction

    steps = netcdf_time_steps(path) if detect_layout(path) == "netcdf" else 1
    masks, events, first = [], [], None
    for t in range(steps):
        sample, fields = detector.read(path, time_index=t)
        periodic = spans_globe(sample_coordinates(sample)[1])
        boxes = detector.detect(fields, periodic)
        masks.append(boxes_to_mask(boxes[:, :5], sample.grid, periodic).astype(np.int8))
        events += detection_events(sample, boxes, source=printable(path.name))
        first = first or sample
    return FilePrediction(np.stack(masks), None, events, first)
