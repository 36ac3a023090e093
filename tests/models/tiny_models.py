"""Small model configs and a learnable toy batch shared by the model tests (grids a few dozen pixels wide)."""
from __future__ import annotations

import numpy as np

from exascale_climate.config import DeepLabConfig, ModelConfig, TiramisuConfig


def tiny_tiramisu(**overrides) -> ModelConfig:
    arch = dict(down_layers=[1, 2], bottleneck_layers=1, up_layers=[2, 1], growth_rate=4, kernel_size=3,
                initial_filters=8, dropout=0.0, batch_norm=False)
    arch.update(overrides)
    return ModelConfig(name="tiramisu", tiramisu=TiramisuConfig(**arch))


def tiny_deeplab(**overrides) -> ModelConfig:
    arch = dict(resnet_blocks=[1, 1, 1], base_filters=4, output_stride=8, aspp_rates=[2, 3], aspp_filters=8,
                decoder_filters=8, low_level_filters=4, batch_norm=True)
    arch.update(overrides)
    return ModelConfig(name="deeplabv3plus", deeplabv3plus=DeepLabConfig(**arch))


def toy_batch(batch: int = 2, grid=(32, 48), channels: int = 4, seed: int = 0):
    """Fields with a disc (class 1) and a band (class 2) that show up in the channels, plus noise."""
    rng = np.random.default_rng(seed)
    h, w = grid
    yy, xx = np.mgrid[0:h, 0:w]
    x = rng.normal(0.0, 0.5, (batch, h, w, channels)).astype(np.float32)
    y = np.zeros((batch, h, w), np.int32)
    for b in range(batch):
        band = np.abs(yy - rng.integers(h // 4, 3 * h // 4) - 0.3 * (xx - w / 2)) < 3
        cy, cx = rng.integers(6, h - 6), rng.integers(6, w - 6)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 25
        y[b][band] = 2
        y[b][disc] = 1
        x[b, ..., 0] += 2.0 * band
        x[b, ..., 1] -= 2.0 * disc
    return x, y

