"""Confusion matrix, IoU (MLPerf DeepCAM convention for absent classes), precision/recall (the sum over ranks is
checked in test_distributed.py against a numpy bincount of what each rank wrote)."""

import numpy as np
import pytest

from exascale_climate.train.metrics import confusion_matrix, iou_from_confusion, precision_recall


def test_confusion_matrix_rows_are_truth():
    labels = np.array([[0, 0, 1, 2], [2, 2, 1, 0]])
    predictions = np.array([[0, 1, 1, 2], [2, 0, 0, 0]])
    cm = confusion_matrix(labels, predictions, 3).numpy()
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, [[2, 1, 0], [1, 1, 0], [1, 0, 2]])


def test_confusion_matrices_of_shards_sum_to_the_whole():
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 3, (4, 8, 12)), rng.integers(0, 3, (4, 8, 12))
    whole = confusion_matrix(labels, predictions, 3).numpy()
    parts = sum(confusion_matrix(labels[i], predictions[i], 3).numpy() for i in range(4))
    np.testing.assert_array_equal(whole, parts)
    assert whole.sum() == labels.size


def test_iou_and_precision_recall_by_hand():
    cm = np.array([[50, 2, 3], [4, 10, 0], [1, 0, 5]])
    per_class, mean_iou = iou_from_confusion(cm)
    np.testing.assert_allclose(per_class, [50 / (55 + 55 - 50), 10 / (14 + 12 - 10), 5 / (6 + 8 - 5)])
    assert mean_iou == pytest.approx(per_class.mean())
    precision, recall = precision_recall(cm)
    np.testing.assert_allclose(precision, [50 / 55, 10 / 12, 5 / 8])
    np.testing.assert_allclose(recall, [50 / 55, 10 / 14, 5 / 6])


def mlperf_sample_score(prediction, truth, num_classes):
    """The MLPerf HPC DeepCAM reference's per-sample score (utils/metric.py compute_score), in numpy."""
    tp = np.array([np.sum((prediction == j) & (truth == j)) for j in range(num_classes)], np.float64)
    fp = np.array([np.sum((prediction == j) & (truth != j)) for j in range(num_classes)], np.float64)
    fn = np.array([np.sum((prediction != j) & (truth == j)) for j in range(num_classes)], np.float64)
    with np.errstate(invalid="ignore"):
        return np.sum(np.nan_to_num(tp / ((tp + fp + fn) * num_classes), nan=1.0 / num_classes))


def test_absent_class_counts_as_one_like_mlperf_deepcam():
    truth = np.array([0, 0, 1, 1, 0])
    prediction = np.array([0, 1, 1, 1, 0])  # class 2 absent from both
    per_class, mean_iou = iou_from_confusion(confusion_matrix(truth, prediction, 3).numpy())
    assert per_class[2] == 1.0
    assert mean_iou == pytest.approx(mlperf_sample_score(prediction, truth, 3))
    assert mean_iou == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_class_predicted_but_absent_from_truth_scores_zero():
    per_class, _ = iou_from_confusion(confusion_matrix([0, 0, 0], [0, 2, 0], 3).numpy())
    assert per_class[2] == 0.0 and per_class[1] == 1.0
    precision, recall = precision_recall(confusion_matrix([0, 0, 0], [0, 2, 0], 3).numpy())
    assert np.isnan(precision[1]) and np.isnan(recall[2]) and precision[2] == 0.0
