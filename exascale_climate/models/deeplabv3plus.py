"""DeepLabv3+ as modified by Kurth et al. (SC18): ResNet-50 v2 from scratch, ASPP, full-resolution decoder.

The paper's decoder goes all the way back to full resolution with learned (transposed) convolutions and a
full-resolution skip from the input, because the events (tropical cyclones especially) are small compared
to the grid and bilinear 4x upsampling blurs their boundaries.
"""
from __future__ import annotations

import math

import keras
from keras import layers

from exascale_climate.config import DeepLabConfig
from exascale_climate.errors import ConfigError
from exascale_climate.models.layers import LayerFactory

PAPER_WEIGHT_DECAY = 5e-4
STEM_STRIDE = 4  # 7x7 stride-2 convolution + stride-2 max-pool: the low-level features live here


def required_divisor(cfg: DeepLabConfig) -> int:
    """The encoder output must map back exactly onto the grid: H and W divide by the output stride."""
    return max(cfg.output_stride, STEM_STRIDE)


def _stage_strides(cfg: DeepLabConfig) -> list[tuple[int, int]]:
    """(stride, dilation) of each ResNet stage: stride 2 until the output stride is reached, then dilation."""
    plan, stride, dilation = [], STEM_STRIDE, 1
    for stage in range(len(cfg.resnet_blocks)):
        if stage == 0:
            plan.append((1, 1))
        elif stride < cfg.output_stride:
            stride *= 2
            plan.append((2, 1))
        else:
            dilation *= 2
            plan.append((1, dilation))
    if stride != cfg.output_stride:
        raise ConfigError(
            f"model.deeplabv3plus.output_stride: {cfg.output_stride} cannot be reached with "
            f"{len(cfg.resnet_blocks)} ResNet stages (stem stride {STEM_STRIDE}, at most x2 per stage)"
        )
    return plan


def _bottleneck_v2(f: LayerFactory, x, filters: int, stride: int, dilation: int, name: str):
    """Pre-activation bottleneck (He et al. 2016, v2): BN-ReLU first, identity path left untouched."""
    preact = f.norm_relu(x, f"{name}_pre")
    out_channels = 4 * filters
    if stride != 1 or int(x.shape[-1]) != out_channels:
        shortcut = f.conv(out_channels, 1, strides=stride, use_bias=False, name=f"{name}_proj")(preact)
    else:
        shortcut = x
    y = f.conv(filters, 1, use_bias=False, name=f"{name}_c1")(preact)
    y = f.norm_relu(y, f"{name}_c1")
    y = f.conv(filters, 3, strides=stride, dilation=dilation, use_bias=False, name=f"{name}_c2")(y)
    y = f.norm_relu(y, f"{name}_c2")
    y = f.conv(out_channels, 1, name=f"{name}_c3")(y)
    return f.add([shortcut, y], name=f"{name}_add")


def _conv_relu(f: LayerFactory, x, filters: int, kernel: int, name: str, dilation: int = 1):
    x = f.conv(filters, kernel, dilation=dilation, use_bias=not f.batch_norm, name=f"{name}_conv")(x)
    return f.norm_relu(x, name)


def _aspp(f: LayerFactory, x, cfg: DeepLabConfig, name: str = "aspp"):
    """1x1 branch, atrous 3x3 branches, image pooling branch; concatenated and fused by a 1x1 convolution.

    The image-pooling branch has no batch norm (see below and docs/MODELS.md), whatever `batch_norm` says.
    """
    h, w = int(x.shape[1]), int(x.shape[2])
    branches = [_conv_relu(f, x, cfg.aspp_filters, 1, f"{name}_1x1")]
    for rate in cfg.aspp_rates:
        branches.append(_conv_relu(f, x, cfg.aspp_filters, 3, f"{name}_r{rate}", dilation=rate))
    pooled = layers.GlobalAveragePooling2D(keepdims=True, dtype=f.policy, name=f"{name}_pool")(x)
    # No batch norm after the pooled 1x1 map: at batch 1 it normalises one value per channel, outputs beta
    # whatever the input, and the branch never trains. A biased convolution + ReLU, as Detectron2's DeepLab.
    pooled = f.conv(cfg.aspp_filters, 1, use_bias=True, name=f"{name}_pool_conv")(pooled)
    pooled = layers.ReLU(dtype=f.policy, name=f"{name}_pool_relu")(pooled)
    branches.append(layers.UpSampling2D(size=(h, w), dtype=f.policy, name=f"{name}_pool_up")(pooled))
    x = f.concat(branches, name=f"{name}_cat")
    return _conv_relu(f, x, cfg.aspp_filters, 1, f"{name}_fuse")


def build_deeplabv3plus(cfg: DeepLabConfig, input_shape: tuple[int, int, int], num_classes: int,
                        weight_decay: float | None = None, precision: str = "float32") -> keras.Model:
    """The network returning float32 logits (B, H, W, num_classes)."""
    wd = PAPER_WEIGHT_DECAY if weight_decay is None else weight_decay
    f = LayerFactory(precision, wd, "he_normal", batch_norm=cfg.batch_norm)
    inputs = f.input(input_shape)

    # Full-resolution skip from the input (3x3 conv to 64, then 128 channels).
    full = _conv_relu(f, inputs, 64, 3, "skip_full_a")
    full = _conv_relu(f, full, 128, 3, "skip_full_b")

    # ResNet-50 v2 encoder.
    x = f.conv(cfg.base_filters, 7, strides=2, name="stem_conv")(inputs)
    x = layers.MaxPooling2D(3, strides=2, padding="same", dtype=f.policy, name="stem_pool")(x)
    low_level = None
    for s, ((stride, dilation), blocks) in enumerate(zip(_stage_strides(cfg), cfg.resnet_blocks)):
        filters = cfg.base_filters * 2**s
        for b in range(blocks):
            x = _bottleneck_v2(f, x, filters, stride if b == 0 else 1, dilation, name=f"res{s + 1}_b{b}")
        if s == 0:
            low_level = x
    x = f.norm_relu(x, "encoder_post")
    x = _aspp(f, x, cfg)

    # Decoder: learned upsampling of the encoder output to the low-level features' stride (4).
    for i in range(int(math.log2(cfg.output_stride // STEM_STRIDE))):
        x = f.conv_transpose(cfg.decoder_filters, 3, strides=2, name=f"dec_up{i}")(x)
    low = _conv_relu(f, low_level, cfg.low_level_filters, 1, "dec_low")
    x = f.concat([x, low], name="dec_cat_low")
    x = _conv_relu(f, x, cfg.decoder_filters, 3, "dec_a")
    x = _conv_relu(f, x, cfg.decoder_filters, 3, "dec_b")
    # Two 3x3 stride-2 transposed convolutions back to full resolution.
    for i in range(int(math.log2(STEM_STRIDE))):
        x = f.conv_transpose(cfg.decoder_filters, 3, strides=2, name=f"dec_full_up{i}")(x)
    x = f.concat([x, full], name="dec_cat_full")
    x = _conv_relu(f, x, cfg.decoder_filters, 3, "dec_c")
    x = _conv_relu(f, x, cfg.decoder_filters, 3, "dec_d")
    logits = f.logits(num_classes)(x)
    return keras.Model(inputs, logits, name="deeplabv3plus")
