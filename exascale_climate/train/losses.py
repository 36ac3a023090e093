"""Pixel-wise segmentation losses, always evaluated in float32 (also under mixed precision).

The class imbalance of the climate labels (~98% background) is handled by per-pixel weights that the
pipeline derives from the class frequencies in the data stats (inverse or inverse square root); the focal
variant additionally down-weights pixels the network already classifies confidently.
"""
from __future__ import annotations

import tensorflow as tf

LOSS_KINDS = ("weighted_ce", "focal")


def pixel_cross_entropy(labels, logits) -> tf.Tensor:
    """Per-pixel softmax cross-entropy (B, H, W) in float32."""
    logits = tf.cast(logits, tf.float32)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32), logits=logits)


def segmentation_loss(labels, logits, pixel_weights=None, kind: str = "weighted_ce",
                      focal_gamma: float = 2.0) -> tf.Tensor:
    """Scalar float32 loss: mean over all pixels of weight * (focal factor *) cross-entropy.

    The mean is over pixels, not over the weight sum, so every sample and every rank contributes with the same
    denominator and averaging gradients across ranks equals the loss of the global batch. The class weights
    are normalised so the pixel-weighted mean weight is 1, so this is on the scale of plain cross-entropy.
    """
    if kind not in LOSS_KINDS:
        raise ValueError(f"loss kind {kind!r}: choose one of {LOSS_KINDS}")
    logits = tf.cast(logits, tf.float32)
    ce = pixel_cross_entropy(labels, logits)
    if kind == "focal":
        # (1 - p_true)^gamma, with p_true = exp(-ce) computed stably from the cross-entropy itself.
        ce = tf.pow(1.0 - tf.exp(-ce), focal_gamma) * ce
    if pixel_weights is not None:
        ce = ce * tf.cast(pixel_weights, tf.float32)
    return tf.reduce_mean(ce)
