"""Loss scaling: dynamic shrink/grow, static scale, float32 pass-through, and skipping inside the real step;
mixed_bfloat16 (no loss scaling) against float32."""
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


def _bf16_convolutions(model, x) -> int:
    """Conv2D ops of the traced forward that run in bfloat16 (read from the graph, not from the policy)."""
    graph = tf.function(lambda t: model(t, training=True)).get_concrete_function(x).graph
    return sum(op.type == "Conv2D" and op.get_attr("T") == tf.bfloat16 for op in graph.get_operations())


def test_mixed_bfloat16_step_matches_the_float32_step_from_the_same_weights():
    """The demo network (configs/demo.yaml) at 96x144: loss and gradients of the real step's gradient pass in
    mixed_bfloat16 against float32 from the same weights and batch; no loss scaling.

    Tolerances: bfloat16 keeps 8 significant bits, a unit round-off of 2^-9 ~ 2e-3 per rounding (variables,
    the loss and every gradient stay float32: the mixed policy rounds the activations, kernels and the
    convolutions' outputs). The demo is ~20 convolutions deep, so the gradients carry of the order of ten
    such roundings: their global relative error must stay below 2e-2 (measured 3e-3), no tensor's above 0.1
    (measured at most 0.05), and the loss, a float32 mean of float32 cross-entropies of float32 logits, within
    2^-7 (measured 1e-4). A run that did not compute in bfloat16 would match to ~1e-7: the lower bound."""
    from exascale_climate.config import load_config
    from exascale_climate.models import build_model
    from exascale_climate.train.losses import segmentation_loss

    model_cfg = load_config("demo").model
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 96, 144, 16)).astype(np.float32))
    y = tf.constant(rng.integers(0, 3, (2, 96, 144)).astype(np.int32))
    w = tf.constant(rng.uniform(0.5, 1.5, (2, 96, 144)).astype(np.float32))
    keras.utils.set_random_seed(0)
    weights = build_model(model_cfg, (96, 144, 16), "float32").get_weights()
    results = {}
    for precision in ("float32", "mixed_bfloat16"):
        model = build_model(model_cfg, (96, 144, 16), precision)
        model.set_weights(weights)
        scaler = LossScaler.from_config(TrainConfig(precision=precision))
        step = TrainStep(model, keras.optimizers.SGD(0.01), GradientReducer(World()), scaler, segmentation_loss)
        loss, grads = step.local_gradients(((x, y, w),))
        results[precision] = float(loss), [g.numpy() for g in grads], model
        out = step([(x, y, w)])  # the full step: applied, and the loss scale stays 1 (no scaling in bfloat16)
        assert bool(out["applied"]) and float(out["loss_scale"]) == 1.0 and not scaler.enabled
    (loss32, g32, m32), (loss16, g16, m16) = results["float32"], results["mixed_bfloat16"]
    assert _bf16_convolutions(m16, x) > 0 and _bf16_convolutions(m32, x) == 0
    assert all(g.dtype == np.float32 for g in g16)  # what the allreduce and the optimizer get
    assert abs(loss16 - loss32) <= 2.0**-7 * loss32
    error = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(g32, g16)))
    norm = np.sqrt(sum(np.sum(a**2) for a in g32))
    assert 1e-5 < error / norm < 2e-2
    for v, a, b in zip(m16.trainable_variables, g32, g16):
        assert np.linalg.norm(a - b) <= 0.1 * np.linalg.norm(a), v.path


def test_float16_on_a_node_without_gpu_is_named_and_nothing_else_is():
    from exascale_climate.train.precision import cpu_float16_warning

    message = cpu_float16_warning("mixed_float16", gpus=0)
    assert message.startswith("train.precision is mixed_float16") and "float32" in message
    assert cpu_float16_warning("mixed_float16", gpus=1) is None
    assert cpu_float16_warning("float32", gpus=0) is None and cpu_float16_warning("mixed_bfloat16", gpus=0) is None
