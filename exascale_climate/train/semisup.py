"""The semi-supervised detector's loss and validation step, plugged into the common training loop.

The pipeline gives the detector (x, (x, box targets, labels), labelled) elements (pipeline/dataset.py), so the
shared TrainStep's (x, y, w) contract holds: y carries the reconstruction target and the per-cell box targets,
w is 1.0 for a labelled sample and 0.0 for an unlabelled one.

Loss per batch (ExtremeWeather, Racah et al. 2017; YOLO-style terms summed over the cells of a sample):
  reconstruction_weight * mean squared error of the decoder's output against the input   (every sample)
+ mean over the batch of labelled * [confidence_weight * (BCE on event cells + no_object_weight * BCE elsewhere)
                                   + class_weight * cross-entropy on event cells
                                   + box_weight * squared error of centre offsets and log sizes on event cells]
Dividing by the batch size (not by the number of labelled samples) keeps the gradient of every sample the same
whatever its neighbours are, so averaging over ranks equals the loss of the global batch.
"""
from __future__ import annotations

import tensorflow as tf

from exascale_climate.config import SemisupConfig


def detection_terms(det_targets, detection, num_classes: int) -> dict:
    """Per-sample (B,) confidence BCE on event / empty cells, class cross-entropy and box error."""
    det = tf.cast(detection, tf.float32)
    t = tf.cast(det_targets, tf.float32)
    k = num_classes - 1
    obj = t[..., 0]
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=obj, logits=det[..., 0])
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(t[..., 1], tf.int32), logits=det[..., 1:1 + k])
    offsets = tf.sigmoid(det[..., 1 + k:3 + k])
    box_err = tf.reduce_sum(tf.square(offsets - t[..., 2:4]), -1) + tf.reduce_sum(
        tf.square(det[..., 3 + k:5 + k] - t[..., 4:6]), -1)
    per_sample = (lambda v: tf.reduce_sum(v, axis=[1, 2]))
    return {"object": per_sample(obj * bce), "no_object": per_sample((1.0 - obj) * bce),
            "class": per_sample(obj * ce), "box": per_sample(obj * box_err)}


def semisup_loss(targets, outputs, labelled, cfg: SemisupConfig, num_classes: int) -> tf.Tensor:
    """Scalar float32 loss of a batch (see the module docstring)."""
    x, det_targets = targets[0], targets[1]
    reconstruction, detection = outputs
    recon = tf.reduce_mean(tf.square(tf.cast(reconstruction, tf.float32) - tf.cast(x, tf.float32)))
    terms = detection_terms(det_targets, detection, num_classes)
    supervised = (cfg.confidence_weight * (terms["object"] + cfg.no_object_weight * terms["no_object"])
                  + cfg.class_weight * terms["class"] + cfg.box_weight * terms["box"])
    labelled = tf.reshape(tf.cast(labelled, tf.float32), [-1])
    return cfg.reconstruction_weight * recon + tf.reduce_mean(labelled * supervised)


def cell_classes(detection, num_classes: int, threshold: float = 0.5):
    """(B, gh, gw) int32: 0 where the confidence is below the threshold, else 1 + the most likely class."""
    det = tf.cast(detection, tf.float32)
    cls = tf.argmax(det[..., 1:num_classes], axis=-1, output_type=tf.int32) + 1
    return tf.where(tf.sigmoid(det[..., 0]) >= threshold, cls, 0)


def make_loss_fn(cfg: SemisupConfig, num_classes: int):
    def loss_fn(y, outputs, w):
        return semisup_loss(y, outputs, w, cfg, num_classes)

    return loss_fn


def make_eval_step(model, num_classes: int, threshold: float = 0.5):
    """A compiled step returning the confusion matrix of the per-cell event map: each cell of the detection grid
    is "class c" when an event of class c has its centre there (truth) / is predicted there with confidence
    >= threshold. Additive over batches and ranks like the segmentation models' pixel confusion, so the loop's
    validation IoU is the detector's cell-level IoU (evaluate reports mAP)."""
    from exascale_climate.train.metrics import confusion_matrix

    @tf.function(reduce_retracing=True)
    def eval_step(x, y):
        _, detection = model(x, training=False)
        det_targets = tf.cast(y[1], tf.float32)
        truth = tf.where(det_targets[..., 0] > 0.5, tf.cast(det_targets[..., 1], tf.int32) + 1, 0)
        return confusion_matrix(truth, cell_classes(detection, num_classes, threshold), num_classes)

    return eval_step


def eval_step_factory(threshold: float):
    """`make_eval_step` with the configured confidence threshold (the loop calls it as (model, num_classes))."""
    return lambda model, num_classes: make_eval_step(model, num_classes, threshold)
