"""The semi-supervised climate network of "Deep Learning at 15PF" (Kurth et al., SC17), after ExtremeWeather
(Racah et al., NIPS 2017): one encoder feeds a decoder that reconstructs the input (learnable from every
sample) and YOLO-style heads that predict, per cell of the encoder's grid, an event's confidence, class and box
(learnable only from labelled samples).

Paper configuration (the SC17 talk: 768x768x16 input, 9 convolutions + 5 deconvolutions, ~302 MiB of weights):
5 stride-2 5x5 convolutions (128, 256, 512, 768, 1024 filters: 768 -> 24), a stride-1 3x3 feature convolution
(1088, the one width the seeds leave free, chosen to land on their size), 3 heads of 3x3 convolutions
(confidence 1, classes K, box 4) = 9 convolutions; 5 stride-2 5x5 transposed convolutions mirror the encoder back to
768x768x16. 78.6 M float32 parameters = 299.9 MiB. Leaky ReLU (0.1) as in ExtremeWeather; no batch norm.

Outputs: [reconstruction (B, H, W, C) float32, detection (B, H/s, W/s, 1 + K + 4) float32] with s the encoder's
total stride and K = num_classes - 1 event classes (background is "no object").
"""
from __future__ import annotations

import keras
from keras import layers

from exascale_climate.config import SemisupConfig
from exascale_climate.models.layers import Conv2DTranspose, LayerFactory

PAPER_WEIGHT_DECAY = 5e-4  # ExtremeWeather's L2 weight decay
LEAK = 0.1


def required_divisor(cfg: SemisupConfig) -> int:
    return 2 ** len(cfg.encoder_filters)


def detection_channels(num_classes: int) -> int:
    return 1 + (num_classes - 1) + 4


def _act(f: LayerFactory, x, name: str):
    return layers.LeakyReLU(LEAK, dtype=f.policy, name=f"{name}_act")(x)


def build_semisup(cfg: SemisupConfig, input_shape: tuple[int, int, int], num_classes: int,
                  weight_decay: float | None = None, precision: str = "float32") -> keras.Model:
    wd = PAPER_WEIGHT_DECAY if weight_decay is None else weight_decay
    f = LayerFactory(precision, wd, "he_uniform")
    inputs = f.input(input_shape)
    x = inputs
    for i, filters in enumerate(cfg.encoder_filters):
        x = _act(f, f.conv(filters, cfg.kernel_size, strides=2, name=f"enc{i}_conv")(x), f"enc{i}")
    features = _act(f, f.conv(cfg.feature_filters, cfg.head_kernel_size, name="features_conv")(x), "features")

    # Heads in float32 (like the segmentation logits): sigmoid/softmax/exp never run in float16.
    k = num_classes - 1
    conf = f.conv(1, cfg.head_kernel_size, name="head_confidence", dtype="float32")(features)
    cls = f.conv(k, cfg.head_kernel_size, name="head_class", dtype="float32")(features)
    box = f.conv(4, cfg.head_kernel_size, name="head_box", dtype="float32")(features)
    detection = layers.Concatenate(axis=-1, dtype="float32", name="detection")([conf, cls, box])

    x = features
    channels = [*cfg.encoder_filters[:-1][::-1], input_shape[-1]]
    for i, filters in enumerate(channels):
        last = i == len(channels) - 1
        deconv = Conv2DTranspose(filters, cfg.kernel_size, strides=2, padding="same",
                                        kernel_initializer="he_uniform", kernel_regularizer=f._regularizer(),
                                        dtype="float32" if last else f.policy, name=f"dec{i}_deconv")
        x = deconv(x)
        if not last:  # the reconstruction of z-scored fields is linear
            x = _act(f, x, f"dec{i}")
    return keras.Model(inputs, [x, detection], name="semisup")
