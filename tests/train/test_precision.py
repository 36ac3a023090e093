"""Loss scaling: dynamic shrink/grow, static scale, float32 pass-through, and skipping inside the real step."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from exascale_climate.config import TrainConfig
from exascale_climate.errors import ConfigError
from exascale_climate.train.distributed import GradientReducer
from exascale_climate.train.precision import LossScaler
from exascale_climate.train.step import TrainStep
from exascale_climate.utils.runtime import World


def test_dynamic_scale_halves_on_overflow_and_grows_after_good_steps():
    s = LossScaler(enabled=True, dynamic=True, initial_scale=1024.0, growth_steps=3)
    s.update(tf.constant(False))
    assert s.scale.numpy() == 512.0 and s.skipped_steps.numpy() == 1
    for _ in range(2):
        s.update(tf.constant(True))
    assert s.scale.numpy() == 512.0
    s.update(tf.constant(True))
    assert s.scale.numpy() == 1024.0 and s.good_steps.numpy() == 0
    assert not s.at_minimum()


def test_static_and_disabled_scales_never_change():
    static = LossScaler.from_config(TrainConfig(precision="mixed_float16", loss_scale="128"))
    static.update(tf.constant(False))
    assert static.scale.numpy() == 128.0 and static.skipped_steps.numpy() == 1 and static.at_minimum()
    off = LossScaler.from_config(TrainConfig(precision="float32"))
    assert off.scale.numpy() == 1.0 and off.scale_loss(3.0) == 3.0
    g = [tf.constant([2.0])]
    assert off.unscale(g) is g
    with pytest.raises(ConfigError, match="train.loss_scale"):
        LossScaler.from_config(TrainConfig(precision="mixed_float16", loss_scale="lots"))


def test_state_round_trip():
    a = LossScaler(enabled=True, initial_scale=64.0)
    a.update(tf.constant(False))
    b = LossScaler(enabled=True)
    b.load_state(a.state())
    assert b.state() == a.state() == {"loss_scale": 32.0, "loss_scale_good_steps": 0, "skipped_steps": 1}


def test_mixed_float16_step_skips_overflow_then_recovers():
    """A float16 layer whose gradient overflows at scale 2^15*big: the step is skipped, the scale drops."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    out = keras.layers.Dense(2, dtype="mixed_float16")(inp)
    model = keras.Model(inp, keras.layers.Activation("linear", dtype="float32")(out))
    scaler = LossScaler(enabled=True, initial_scale=2.0**15, growth_steps=100)
    step = TrainStep(model, keras.optimizers.SGD(0.01), GradientReducer(World()), scaler,
                     lambda y, logits, w: tf.reduce_mean(tf.cast(logits, tf.float32) * w))
    before = [v.numpy().copy() for v in model.trainable_variables]
    x = tf.fill((2, 4), 100.0)  # dL/dW = x * scale / batch ~ 1.6e6: not representable in float16
    out = step([(x, tf.zeros((2,), tf.int32), tf.ones((2, 2)))])
    assert not bool(out["finite"]) and not bool(out["applied"])
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, model.trainable_variables))
    assert scaler.skipped_steps.numpy() == 1 and scaler.scale.numpy() == 2.0**14
    for _ in range(10):  # the scale keeps halving until the gradients fit, then updates happen
        out = step([(x, tf.zeros((2,), tf.int32), tf.ones((2, 2)))])
        if bool(out["applied"]):
            break
    assert bool(out["applied"]) and scaler.scale.numpy() < 2.0**14
