"""Segmentation metrics from a confusion matrix: summable across ranks, scored once at the end.

Convention for a class absent from both prediction and truth (its union is 0): its IoU counts as 1, exactly as
the MLPerf HPC DeepCAM reference (`deepcam/src/deepCam/utils/metric.py`, `compute_score`) does with
`nan_to_num(tp / union, nan=1/num_classes)` before summing over classes. The reference scores each sample
separately and averages over samples; here the confusion matrix is summed over all pixels of all samples
and ranks first (one allreduce of C*C counts), so a class counts as absent only when no sample has it.
Precision/recall of a class with no predicted/true pixels is NaN (undefined, not 0 or 1).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def confusion_matrix(labels, predictions, num_classes: int) -> tf.Tensor:
    """(C, C) int64 counts, rows = truth, columns = prediction; sum them across batches and ranks."""
    labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
    predictions = tf.reshape(tf.cast(predictions, tf.int64), [-1])
    return tf.math.confusion_matrix(labels, predictions, num_classes=num_classes, dtype=tf.int64)


def iou_from_confusion(cm) -> tuple[np.ndarray, float]:
    """(per-class IoU (C,), mean IoU); a class absent from truth and prediction scores 1 (MLPerf DeepCAM)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp  # tp + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        per_class = np.where(union > 0, tp / union, 1.0)
    return per_class, float(per_class.mean())


def precision_recall(cm) -> tuple[np.ndarray, np.ndarray]:
    """Per-class precision tp/(tp+fp) and recall tp/(tp+fn); NaN where the denominator is 0."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        recall = np.where(actual > 0, tp / actual, np.nan)
    return precision, recall
