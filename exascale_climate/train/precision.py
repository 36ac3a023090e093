"""Loss scaling for float16 training: dynamic or static scale, overflowed steps skipped and counted.

Why our own rather than keras.optimizers.LossScaleOptimizer: the finiteness decision must be taken on the
*allreduced* gradients so every rank skips the same steps (otherwise weights diverge between ranks), and with
gradient lag the gradients applied at step t were scaled at step t-1. The scaler here is a few tf.Variables the
training step reads and updates inside its tf.function, and that checkpoints save and restore.
"""
from __future__ import annotations

import tensorflow as tf

from exascale_climate.config import TrainConfig
from exascale_climate.errors import ConfigError


def cpu_float16_warning(precision: str, gpus: int) -> str | None:
    """Why float16 on a CPU-only node deserves a line: TensorFlow has no fast CPU kernel for float16 convolutions,
    so the paper configs' mixed_float16 (right on V100s) made the demo's training step ~40x slower than float32
    here (bench model, AVX-512 host; docs/PERFORMANCE.md), and nothing else would tell the user."""
    if precision != "mixed_float16" or gpus > 0:
        return None
    return ("train.precision is mixed_float16 on a node without a GPU: TensorFlow's float16 convolutions have no "
            "fast CPU kernel (the demo's step ran ~40x slower than float32 on an AVX-512 CPU); use --set "
            "train.precision=float32, or mixed_bfloat16 on CPUs with AVX512_BF16 or AMX")


class LossScaler:
    """scale the loss, unscale the gradients, and after each step: shrink on overflow, grow after N good steps.

    `enabled=False` (float32 and mixed_bfloat16 training) keeps scale 1 but still detects and skips non-finite
    steps: bfloat16 has float32's 8-bit exponent, so small gradients do not underflow and need no scaling.
    """

    def __init__(self, *, enabled: bool, dynamic: bool = True, initial_scale: float = 2.0**15,
                 growth_steps: int = 2000, factor: float = 2.0, min_scale: float = 1.0):
        self.enabled = enabled
        self.dynamic = dynamic and enabled
        self.growth_steps = int(growth_steps)
        self.factor = float(factor)
        self.min_scale = float(min_scale)
        start = float(initial_scale) if enabled else 1.0
        self.scale = tf.Variable(start, trainable=False, dtype=tf.float32, name="loss_scale")
        self.good_steps = tf.Variable(0, trainable=False, dtype=tf.int64, name="loss_scale_good_steps")
        self.skipped_steps = tf.Variable(0, trainable=False, dtype=tf.int64, name="skipped_steps")

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> "LossScaler":
        enabled = cfg.precision == "mixed_float16"  # the only policy with float16's 5-bit exponent
        if cfg.loss_scale == "dynamic":
            return cls(enabled=enabled, dynamic=True, initial_scale=cfg.loss_scale_init,
                       growth_steps=cfg.loss_scale_growth_steps)
        try:
            static = float(cfg.loss_scale)
        except ValueError:
            raise ConfigError(f"train.loss_scale: {cfg.loss_scale!r} is not 'dynamic' or a number") from None
        return cls(enabled=enabled, dynamic=False, initial_scale=static)

    @property
    def variables(self) -> list[tf.Variable]:
        return [self.scale, self.good_steps, self.skipped_steps]

    def scale_loss(self, loss):
        return loss * self.scale if self.enabled else loss

    def unscale(self, grads):
        if not self.enabled:
            return grads
        inv = 1.0 / self.scale
        return [None if g is None else tf.cast(g, tf.float32) * inv for g in grads]

    @staticmethod
    def all_finite(grads):
        checks = [tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None]
        return tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)

    def update(self, finite):
        """Bookkeeping after a step whose (reduced) gradients were `finite` (a scalar bool tensor)."""
        def on_overflow():
            self.skipped_steps.assign_add(1)
            self.good_steps.assign(0)
            if self.dynamic:
                self.scale.assign(tf.maximum(self.scale / self.factor, self.min_scale))
            return tf.constant(0)

        def on_good():
            if self.dynamic:
                grown = self.good_steps + 1 >= self.growth_steps
                self.scale.assign(tf.where(grown, self.scale * self.factor, self.scale))
                self.good_steps.assign(tf.where(grown, tf.zeros_like(self.good_steps), self.good_steps + 1))
            return tf.constant(0)

        return tf.cond(finite, on_good, on_overflow)

    def at_minimum(self) -> bool:
        """True when lowering the scale can no longer cure an overflow (static, disabled or at the floor)."""
        return not self.dynamic or float(self.scale.numpy()) <= self.min_scale

    def state(self) -> dict:
        return {"loss_scale": float(self.scale.numpy()), "loss_scale_good_steps": int(self.good_steps.numpy()),
                "skipped_steps": int(self.skipped_steps.numpy())}

    def load_state(self, state: dict) -> None:
        self.scale.assign(state["loss_scale"])
        self.good_steps.assign(state["loss_scale_good_steps"])
        self.skipped_steps.assign(state["skipped_steps"])
