"""Optimizers for data-parallel training: learning-rate schedules with warmup and the LARC/LARS wrapper.

Why LARC: with thousands of ranks the global batch is huge and a single learning rate either diverges in some
layers or crawls in others. LARC (You et al.; used by Kurth et al.) rescales each layer's gradient by a trust
ratio eta * ||w|| / ||g|| before the base optimizer (SGD-momentum, Adam, RMSProp) sees it.
"""
from __future__ import annotations

import math

import keras
from keras import ops

from exascale_climate.config import LarcConfig, OptimizerConfig, ScheduleConfig


class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `base_lr`, then constant / polynomial / cosine decay or multistep drops.

    Decay runs over `decay_steps` steps counted after the warmup; multistep milestones are absolute steps.
    """

    def __init__(self, base_lr: float, cfg: ScheduleConfig, factor=None):
        self.base_lr = float(base_lr)
        self.cfg = cfg
        self.factor = factor  # a variable multiplying the rate (hybrid mode's staleness-aware scaling), or None

    def __call__(self, step):
        cfg = self.cfg
        step = ops.cast(step, "float32")
        base = self.base_lr
        end = base * cfg.end_factor
        t = ops.minimum(ops.maximum(step - cfg.warmup_steps, 0.0), float(cfg.decay_steps))
        frac = t / float(cfg.decay_steps)
        if cfg.name == "polynomial":
            lr = end + (base - end) * ops.power(1.0 - frac, cfg.power)
        elif cfg.name == "cosine":
            lr = end + (base - end) * 0.5 * (1.0 + ops.cos(math.pi * frac))
        elif cfg.name == "multistep":
            drops = sum(ops.cast(step >= float(m), "float32") for m in cfg.milestones) if cfg.milestones else 0.0
            lr = base * ops.power(cfg.gamma, drops)
        else:
            lr = ops.convert_to_tensor(base, "float32")
        if cfg.warmup_steps > 0:
            warm = base * (step + 1.0) / float(cfg.warmup_steps)
            lr = ops.where(step < cfg.warmup_steps, warm, lr)
        return lr if self.factor is None else lr * ops.cast(self.factor, "float32")

    def get_config(self):
        return {"base_lr": self.base_lr, "schedule": vars(self.cfg)}


def scaled_learning_rate(cfg: OptimizerConfig, world_size: int, accumulation: int = 1) -> float:
    """Linear scaling rule (Goyal et al.): lr grows with the number of samples per update."""
    if not cfg.scale_lr_by_world_size:
        return cfg.learning_rate
    return cfg.learning_rate * world_size * accumulation


def base_optimizer(cfg: OptimizerConfig, learning_rate) -> keras.optimizers.Optimizer:
    if cfg.name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=cfg.momentum)
    if cfg.name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=learning_rate, momentum=cfg.momentum, epsilon=cfg.epsilon)
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=cfg.beta_1, beta_2=cfg.beta_2,
                                 epsilon=cfg.epsilon)


def is_bias_or_norm(variable) -> bool:
    """Biases and normalization scales/offsets are the 1-D variables; LARC leaves them alone when asked."""
    return len(variable.shape) <= 1


def larc_factor(w_norm, g_norm, lr, cfg: LarcConfig):
    """The per-layer gradient multiplier; 1 where either norm is zero (nothing sensible to compare)."""
    ratio = cfg.eta * w_norm / (g_norm + cfg.epsilon)
    if cfg.mode == "clip":
        ratio = ops.minimum(ratio / lr, 1.0)
    usable = ops.logical_and(w_norm > 0.0, g_norm > 0.0)
    return ops.where(usable, ratio, ops.ones_like(ratio))


class Larc:
    """LARC/LARS around any Keras optimizer: rescale each layer's gradient, then let the base optimizer step.

    Modes: "clip" (the paper's: factor min(eta*||w||/||g||, lr) / lr, never larger than the plain step) and
    "scale" (LARS: factor eta*||w||/||g||). Presents the small optimizer API the training step uses.
    """

    def __init__(self, base: keras.optimizers.Optimizer, cfg: LarcConfig):
        self.base = base
        self.cfg = cfg

    @property
    def variables(self):
        return self.base.variables

    @property
    def iterations(self):
        return self.base.iterations

    @property
    def learning_rate(self):
        return self.base.learning_rate

    def build(self, variables) -> None:
        self.base.build(variables)

    def scale_gradients(self, grads, variables):
        lr = ops.cast(self.base.learning_rate, "float32")
        out = []
        for g, v in zip(grads, variables):
            if g is None or (self.cfg.exclude_bias_and_norm and is_bias_or_norm(v)):
                out.append(g)
                continue
            w = ops.cast(v.value if hasattr(v, "value") else v, "float32")
            g32 = ops.cast(g, "float32")
            factor = larc_factor(ops.sqrt(ops.sum(w * w)), ops.sqrt(ops.sum(g32 * g32)), lr, self.cfg)
            out.append(ops.cast(g32 * factor, g.dtype))
        return out

    def apply_gradients(self, grads_and_vars):
        grads, variables = zip(*grads_and_vars)
        return self.base.apply_gradients(zip(self.scale_gradients(list(grads), list(variables)), variables))


def build_optimizer(cfg: OptimizerConfig, world_size: int = 1, accumulation: int = 1, lr_factor=None):
    """The configured optimizer (LARC-wrapped when enabled) with its warmup/decay schedule; `lr_factor` (a
    variable) multiplies the rate at every update."""
    schedule = WarmupSchedule(scaled_learning_rate(cfg, world_size, accumulation), cfg.schedule, lr_factor)
    base = base_optimizer(cfg, schedule)
    return Larc(base, cfg.larc) if cfg.larc.enabled else base
