"""Segmentation losses against hand computations; float32 results from float16 logits."""
import numpy as np
import pytest
import tensorflow as tf

from exascale_climate.train.losses import segmentation_loss


def numpy_ce(labels, logits):
    z = logits - logits.max(axis=-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return -np.take_along_axis(log_p, labels[..., None], axis=-1)[..., 0]


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (2, 4, 6))
    logits = rng.normal(0, 2, (2, 4, 6, 3)).astype(np.float32)
    weights = np.array([0.2, 5.0, 3.0], np.float32)[labels]
    return labels, logits, weights


def test_weighted_cross_entropy_by_hand(batch):
    labels, logits, weights = batch
    expected = np.mean(weights * numpy_ce(labels, logits))
    assert float(segmentation_loss(labels, logits, weights)) == pytest.approx(expected, rel=1e-5)


def test_unit_weights_equal_plain_cross_entropy(batch):
    import keras

    labels, logits, _ = batch
    plain = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    assert float(segmentation_loss(labels, logits, np.ones(labels.shape, np.float32))) == pytest.approx(
        float(plain), rel=1e-5)
    assert float(segmentation_loss(labels, logits, None)) == pytest.approx(float(plain), rel=1e-5)


def test_float16_logits_give_a_float32_loss(batch):
    labels, logits, weights = batch
    loss = segmentation_loss(labels, tf.constant(logits, tf.float16), tf.constant(weights, tf.float16))
    assert loss.dtype == tf.float32
    expected = np.mean(weights * numpy_ce(labels, logits.astype(np.float16).astype(np.float32)))
    assert float(loss) == pytest.approx(expected, rel=1e-3)


def test_focal_loss_by_hand_and_gamma_zero_is_cross_entropy(batch):
    labels, logits, weights = batch
    ce = numpy_ce(labels, logits)
    p_true = np.exp(-ce)
    expected = np.mean(weights * (1 - p_true) ** 2 * ce)
    assert float(segmentation_loss(labels, logits, weights, kind="focal", focal_gamma=2.0)) == pytest.approx(
        expected, rel=1e-4)
    assert float(segmentation_loss(labels, logits, weights, kind="focal", focal_gamma=0.0)) == pytest.approx(
        float(segmentation_loss(labels, logits, weights)), rel=1e-6)


def test_unknown_kind_is_rejected(batch):
    labels, logits, weights = batch
    with pytest.raises(ValueError, match="dice"):
        segmentation_loss(labels, logits, weights, kind="dice")
