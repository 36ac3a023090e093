"""The networks (Tiramisu, DeepLabv3+ segmentation; the semi-supervised box detector) behind one `build_model`
used by train/evaluate/bench."""
from __future__ import annotations

from exascale_climate.config import ModelConfig
from exascale_climate.errors import ConfigError
from exascale_climate.models import deeplabv3plus, semisup, tiramisu
from exascale_climate.models.layers import PRECISIONS

MODELS = {
    "tiramisu": tiramisu.build_tiramisu,
    "deeplabv3plus": deeplabv3plus.build_deeplabv3plus,
    "semisup": semisup.build_semisup,
}
MODULES = {"tiramisu": tiramisu, "deeplabv3plus": deeplabv3plus, "semisup": semisup}


def is_detector(model_cfg: ModelConfig) -> bool:
    """True for the box detector (outputs [reconstruction, detection]) rather than per-pixel logits."""
    return model_cfg.name == "semisup"


def architecture_config(model_cfg: ModelConfig):
    """The sub-config of the selected network (model.tiramisu, model.deeplabv3plus or model.semisup)."""
    return getattr(model_cfg, model_cfg.name)


def required_divisor(model_cfg: ModelConfig) -> int:
    """H and W of the input must be multiples of this (the network's total downsampling)."""
    return MODULES[model_cfg.name].required_divisor(architecture_config(model_cfg))


def check_grid(model_cfg: ModelConfig, grid: tuple[int, int]) -> None:
    divisor = required_divisor(model_cfg)
    if grid[0] % divisor or grid[1] % divisor:
        raise ConfigError(
            f"grid {grid[0]}x{grid[1]}: model {model_cfg.name!r} needs H and W divisible by {divisor} "
            "(crop the data with pipeline.crop or change the model's depth/output stride)"
        )


def build_model(model_cfg: ModelConfig, input_shape: tuple[int, int, int], precision: str = "float32"):
    """A Keras model returning float32 logits (B, H, W, num_classes) -- or, for the detector, [reconstruction,
    detection] (models/semisup.py); L2 weight decay is in `model.losses`."""
    if model_cfg.name not in MODELS:
        raise ConfigError(f"model.name: {model_cfg.name!r} is not allowed; choose one of {', '.join(MODELS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"train.precision: {precision!r} is not allowed; choose one of {', '.join(PRECISIONS)}")
    check_grid(model_cfg, tuple(input_shape[:2]))
    return MODELS[model_cfg.name](architecture_config(model_cfg), tuple(input_shape), model_cfg.num_classes,
                                  weight_decay=model_cfg.weight_decay, precision=precision)
