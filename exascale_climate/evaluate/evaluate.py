"""Score a trained model on a directory of labelled samples: IoU per class, mean IoU, precision/recall, the
confusion matrix, a per-sample table to find the worst cases, and the heuristic labeller scored the same way.

Runs alone or under horovodrun: each rank takes every size-th file, and the confusion matrices are summed with
one Horovod allreduce (a confusion matrix is additive, so the result equals a single-rank run exactly).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from exascale_climate.data.layouts import list_samples
from exascale_climate.errors import DataError, ExaclimateError
from exascale_climate.utils.io import atomic_write_text
from exascale_climate.utils.log import get_logger
from exascale_climate.utils.progress import track
from exascale_climate.variables import CLASS_NAMES, NUM_CLASSES, VARIABLE_NAMES

log = get_logger("evaluate")
LABELLER_MODES = ("auto", "on", "off")
# Attribute values a file's labels carry when the heuristic labeller made them (then scoring it is circular).
LABELLER_SOURCES = ("labeller", "heuristic")


# ------------------------------------------------------------------------------------------- scores
def confusion(labels: np.ndarray, predictions: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(C, C) int64 counts, rows = truth, via the training metric (one definition for train and evaluate)."""
    from exascale_climate.train.metrics import confusion_matrix

    cm = confusion_matrix(np.asarray(labels, np.int32).ravel(), np.asarray(predictions, np.int32).ravel(),
                          num_classes)
    return np.asarray(cm.numpy() if hasattr(cm, "numpy") else cm).astype(np.int64)


def scores(cm: np.ndarray) -> dict:
    """Everything derived from one confusion matrix, as plain JSON-ready values keyed by class name."""
    from exascale_climate.train.metrics import iou_from_confusion, precision_recall

    cm = np.asarray(cm, dtype=np.int64)
    per_class, mean_iou = iou_from_confusion(cm)
    precision, recall = precision_recall(cm)
    total = cm.sum()
    return {
        "mean_iou": float(mean_iou),
        "iou": _by_class(per_class),
        "precision": _by_class(precision),
        "recall": _by_class(recall),
        "pixel_accuracy": float(np.trace(cm) / total) if total else None,
        "pixels": int(total),
        "confusion_matrix": cm.tolist(),
    }


def _by_class(values) -> dict:
    return {name: _number(v) for name, v in zip(CLASS_NAMES, values)}


def _number(value) -> float | None:
    """JSON has no NaN: an undefined score (no predicted/true pixels of a class) becomes null."""
    value = float(value)
    return None if np.isnan(value) else value


def labels_are_independent(attrs: dict) -> bool:
    """False when the file says its labels came from the heuristic labeller (scoring it would be circular)."""
    for key in ("label_source", "labels_source", "labels"):
        value = str(attrs.get(key, "")).lower()
        if any(s in value for s in LABELLER_SOURCES):
            return False
    return True


def _labeller_mask(sample, lat, lon, cfg) -> np.ndarray:
    from exascale_climate.data.labeller import label_fields

    fields = {name: sample.data[..., i] for i, name in enumerate(sample.variables)}
    return label_fields(fields, lat, lon, cfg.data.labeller)


# ------------------------------------------------------------------------------------------- per sample
SAMPLE_COLUMNS = ["file", "time", "mean_iou", "pixel_accuracy"] + [f"iou_{c}" for c in CLASS_NAMES] + \
                 [f"true_pixels_{c}" for c in CLASS_NAMES[1:]] + [f"pred_pixels_{c}" for c in CLASS_NAMES[1:]] + \
                 ["labeller_mean_iou"]


def sample_row(path: Path, time: str | None, cm: np.ndarray, labeller_cm: np.ndarray | None) -> dict:
    s = scores(cm)
    row = {"file": path.name, "time": time or "", "mean_iou": s["mean_iou"], "pixel_accuracy": s["pixel_accuracy"]}
    row.update({f"iou_{c}": s["iou"][c] for c in CLASS_NAMES})
    row.update({f"true_pixels_{c}": int(cm[k].sum()) for k, c in enumerate(CLASS_NAMES) if k})
    row.update({f"pred_pixels_{c}": int(cm[:, k].sum()) for k, c in enumerate(CLASS_NAMES) if k})
    row["labeller_mean_iou"] = scores(labeller_cm)["mean_iou"] if labeller_cm is not None else ""
    return row


def rows_to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SAMPLE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- driver
def _error_counts(path: Path, sample, predictions: np.ndarray, cfg) -> np.ndarray:
    """`errors.error_counts` of one sample, with the labeller's AR verdicts on its own fields."""
    from exascale_climate.data.grid import Grid, sample_coordinates, spans_globe
    from exascale_climate.data.labeller import river_verdicts
    from exascale_climate.evaluate.errors import error_counts

    for name in ("TMQ", "U850", "V850"):  # what the AR tests read
        if name not in sample.variables:
            raise DataError(path, "--errors needs the labeller's AR inputs (TMQ, U850, V850)", field=name)
    lat, lon = sample_coordinates(sample)
    fields = {name: sample.data[..., sample.variables.index(name)] for name in ("TMQ", "U850", "V850")}
    verdicts, _ = river_verdicts(fields, Grid(lat, lon), cfg.data.labeller)
    return error_counts(sample.labels, predictions, verdicts, spans_globe(lon))


def _evaluate_file(segmenter, path: Path, labeller: str, errors: bool = False, prior: float = 0.0,
                   sweep: tuple[float, ...] = ()
                   ) -> tuple[np.ndarray, np.ndarray | None, dict, np.ndarray | None, np.ndarray]:
    """Confusion matrices of the model (and of the labeller when it applies) on one file, its CSV row, its
    error counts when asked, and one confusion matrix per prior-correction exponent of `sweep`."""
    from exascale_climate.data.labeller import REQUIRED as labeller_inputs
    from exascale_climate.data.grid import sample_coordinates
    from exascale_climate.evaluate.prior import corrected_classes

    sample, fields = segmenter.read(path, with_labels=True,
                                    extra=tuple(VARIABLE_NAMES) if labeller != "off" or errors else ())
    probabilities = segmenter.segment(sample, fields)
    predictions = corrected_classes(probabilities, segmenter.class_weights, prior)
    cm = confusion(sample.labels, predictions)
    swept = np.stack([confusion(sample.labels, corrected_classes(probabilities, segmenter.class_weights, a))
                      for a in sweep]) if sweep else np.zeros((0, NUM_CLASSES, NUM_CLASSES), np.int64)
    lab_cm = None
    if labeller == "on" or (labeller == "auto" and labels_are_independent(sample.attrs)
                            and set(labeller_inputs) <= set(sample.variables)):
        lat, lon = sample_coordinates(sample)
        lab_cm = confusion(sample.labels, _labeller_mask(sample, lat, lon, segmenter.cfg))
    counts = _error_counts(path, sample, predictions, segmenter.cfg) if errors else None
    return cm, lab_cm, sample_row(path, sample.time, cm, lab_cm), counts, swept


def evaluate(checkpoint: str | Path, data_dir: str | Path, *, json_path: str | Path | None = None,
             csv_path: str | Path | None = None, labeller: str = "auto", stats_file: str | Path | None = None,
             show: bool = False, precision: str | None = None, errors: bool = False, prior_correction: float = 0.0,
             prior_sweep: bool = False) -> dict:
    """`exaclimate evaluate`: metrics of the model (and of the labeller) on every sample of `data_dir`.

    labeller: "auto" scores the heuristic labeller when the files' labels are independent of it, "on" always,
    "off" never. errors: also count where the errors lie (`evaluate.errors`). prior_correction: score the
    classes after dividing by the trained class weights to this power; prior_sweep: also score each exponent
    of `prior.SWEEP` (`evaluate.prior`). Returns the report dict (also written as JSON); rank 0 writes the files.
    """
    from exascale_climate.evaluate import prior
    from exascale_climate.evaluate.errors import ERROR_KEYS, format_errors, summarise
    from exascale_climate.evaluate.predict import Segmenter
    from exascale_climate.pipeline.sharding import shard
    from exascale_climate.train.distributed import allreduce_numpy
    from exascale_climate.utils.runtime import init_world

    if labeller not in LABELLER_MODES:
        raise ExaclimateError(f"--labeller {labeller!r}: choose one of {', '.join(LABELLER_MODES)}")
    from exascale_climate.evaluate import detection

    prior_correction = prior.check_exponent(prior_correction)
    if detection.is_detector_checkpoint(checkpoint):  # semisup: mAP and box-filled masks (one process)
        for flag, given in (("--errors", errors), ("--prior-correction", prior_correction), ("--prior-sweep",
                                                                                           prior_sweep)):
            if given:
                raise ExaclimateError(f"{flag}: only for segmentation runs; a semisup detector is scored by box mAP")
        return detection.evaluate_detector(checkpoint, data_dir, json_path=json_path, labeller=labeller,
                                           stats_file=stats_file, show=show, precision=precision)
    files = list_samples(data_dir)
    if not files:
        raise DataError(data_dir, "no data-*.h5 samples to evaluate")
    world = init_world()
    segmenter = Segmenter.from_checkpoint(checkpoint, stats_file, precision)
    mine = shard(files, world.rank, world.size)
    model_cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    labeller_cm = np.zeros_like(model_cm)
    labeller_samples = 0
    rows = []
    error_counts = np.zeros(len(ERROR_KEYS), np.int64)
    sweep = prior.SWEEP if prior_sweep else ()
    swept_cm = np.zeros((len(sweep), NUM_CLASSES, NUM_CLASSES), np.int64)
    for path in track(mine, "evaluate", total=len(mine)):
        cm, lab_cm, row, counts, swept = _evaluate_file(segmenter, path, labeller, errors, prior_correction, sweep)
        swept_cm += swept
        if counts is not None:
            error_counts += counts
        model_cm += cm
        if lab_cm is not None:
            labeller_cm += lab_cm
            labeller_samples += 1
        rows.append(row)
    totals = allreduce_numpy(world, np.stack([model_cm, labeller_cm]), name="evaluate.confusion").astype(np.int64)
    model_cm, labeller_cm = totals[0], totals[1]
    labeller_samples = int(allreduce_numpy(world, np.array([labeller_samples]), name="evaluate.labelled")[0])
    if errors:
        error_counts = allreduce_numpy(world, error_counts, name="evaluate.errors").astype(np.int64)
    if sweep:
        swept_cm = allreduce_numpy(world, swept_cm, name="evaluate.prior_sweep").astype(np.int64)
    if world.distributed:
        rows = [r for part in world.hvd.allgather_object(rows) for r in part]
    rows.sort(key=lambda r: r["mean_iou"])  # worst first
    report = {
        "checkpoint": str(checkpoint), "data": str(data_dir), "samples": len(files), "ranks": world.size,
        "model": scores(model_cm),
        "labeller": scores(labeller_cm) if labeller_samples else None,
        "labeller_samples": labeller_samples,
        "worst_samples": [r["file"] for r in rows[:5]],
        "prior_correction": prior_correction,
    }
    if errors:
        report["errors"] = summarise(error_counts)
    if sweep:
        report["prior_sweep"] = prior.sweep_report(sweep, swept_cm, segmenter.class_weights)
    log.info("evaluated %d samples on %d rank(s): model mean IoU %.4f", len(files), world.size,
             report["model"]["mean_iou"])
    if world.is_root:
        if json_path == "-":
            print(json.dumps(report, indent=2))
        elif json_path:
            atomic_write_text(json_path, json.dumps(report, indent=2) + "\n")
        if csv_path:
            atomic_write_text(csv_path, rows_to_csv(rows))
        if show and json_path != "-":
            print_report(report)
            if errors:
                print(format_errors(report["errors"]))
            if sweep:
                print(prior.format_sweep(report["prior_sweep"]))
    return report


# ------------------------------------------------------------------------------------------- display
def report_tables(report: dict) -> list:
    """rich tables: per-class scores (model, and labeller when present) and the model's confusion matrix."""
    from rich.table import Table

    tables = []
    for who in ("model", "labeller"):
        s = report.get(who)
        if not s:
            continue
        corrected = f" (prior correction {report['prior_correction']:g})" \
            if who == "model" and report.get("prior_correction") else ""
        t = Table(title=f"{who}{corrected}: mean IoU {_fmt(s['mean_iou'])}, "
                        f"pixel accuracy {_fmt(s['pixel_accuracy'])}")
        for col in ("class", "IoU", "precision", "recall"):
            t.add_column(col, justify="left" if col == "class" else "right")
        for c in CLASS_NAMES:
            t.add_row(c, _fmt(s["iou"][c]), _fmt(s["precision"][c]), _fmt(s["recall"][c]))
        tables.append(t)
    cm = Table(title="model confusion matrix (rows = truth, columns = prediction; pixels)")
    cm.add_column("truth \\ pred")
    for c in CLASS_NAMES:
        cm.add_column(c, justify="right")
    for c, row in zip(CLASS_NAMES, report["model"]["confusion_matrix"]):
        cm.add_row(c, *(f"{v:,}" for v in row))
    tables.append(cm)
    return tables


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def print_report(report: dict) -> None:
    from rich.console import Console

    console = Console()
    for table in report_tables(report):
        console.print(table)
    if report.get("worst_samples"):
        console.print("worst samples (lowest mean IoU): " + ", ".join(report["worst_samples"]))
