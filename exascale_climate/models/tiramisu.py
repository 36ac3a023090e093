"""Tiramisu (FC-DenseNet, Jegou et al. 2017) as run at scale by Kurth et al. (SC18).

The paper's variant: dense blocks of 2, 2, 2, 4 layers down, a 5-layer bottleneck, 4, 2, 2, 2 up; growth rate
32; 5x5 convolutions; a first convolution of 64 filters; dropout 0.2; strided 1x1 convolutions instead of
max-pooling for transition down; 3x3 stride-2 transposed convolutions for transition up; batch norm off.
"""
from __future__ import annotations

import keras

from exascale_climate.config import TiramisuConfig
from exascale_climate.models.layers import LayerFactory

PAPER_WEIGHT_DECAY = 1e-4


def required_divisor(cfg: TiramisuConfig) -> int:
    """Each transition down halves the grid, so H and W must divide by 2**blocks."""
    return 2 ** len(cfg.down_layers)


def _dense_block(f: LayerFactory, x, layers_in_block: int, growth: int, kernel: int, name: str):
    """Each layer sees the concatenation of all earlier outputs; returns (block input + new, new features)."""
    if layers_in_block == 0:
        return x, x
    new_features = []
    for i in range(layers_in_block):
        y = f.norm_relu(x, f"{name}_l{i}")
        y = f.conv(growth, kernel, name=f"{name}_l{i}_conv")(y)
        y = f.dropout(y, f"{name}_l{i}")
        new_features.append(y)
        x = f.concat([x, y], name=f"{name}_l{i}_cat")
    new = new_features[0] if len(new_features) == 1 else f.concat(new_features, name=f"{name}_new")
    return x, new


def build_tiramisu(cfg: TiramisuConfig, input_shape: tuple[int, int, int], num_classes: int,
                   weight_decay: float | None = None, precision: str = "float32") -> keras.Model:
    """The network returning float32 logits (B, H, W, num_classes)."""
    wd = PAPER_WEIGHT_DECAY if weight_decay is None else weight_decay
    f = LayerFactory(precision, wd, "he_uniform", batch_norm=cfg.batch_norm, dropout=cfg.dropout)
    inputs = f.input(input_shape)
    x = f.conv(cfg.initial_filters, cfg.kernel_size, name="stem_conv")(inputs)

    skips = []
    for b, n in enumerate(cfg.down_layers):
        x, _ = _dense_block(f, x, n, cfg.growth_rate, cfg.kernel_size, name=f"down{b}")
        skips.append(x)
        # Transition down: the paper's strided 1x1 convolution in place of max-pooling.
        x = f.norm_relu(x, f"td{b}")
        x = f.conv(int(x.shape[-1]), 1, strides=2, name=f"td{b}_conv")(x)
        x = f.dropout(x, f"td{b}")

    # Bottleneck: only its new features are upsampled (FC-DenseNet keeps the up path narrow).
    _, x = _dense_block(f, x, cfg.bottleneck_layers, cfg.growth_rate, cfg.kernel_size, name="bottleneck")

    for b, n in enumerate(cfg.up_layers):
        x = f.conv_transpose(int(x.shape[-1]), 3, strides=2, name=f"tu{b}_deconv")(x)
        x = f.concat([x, skips[-(b + 1)]], name=f"tu{b}_cat")
        last = b == len(cfg.up_layers) - 1
        block_out, new = _dense_block(f, x, n, cfg.growth_rate, cfg.kernel_size, name=f"up{b}")
        x = block_out if last else new

    logits = f.logits(num_classes)(x)
    return keras.Model(inputs, logits, name="tiramisu")
