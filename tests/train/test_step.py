"""The compiled step in one process: gradient accumulation equals the large batch; lag applies step t-1."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from exascale_climate.train.distributed import GradientReducer
from exascale_climate.train.losses import segmentation_loss
from exascale_climate.train.precision import LossScaler
from exascale_climate.train.step import TrainStep
from exascale_climate.utils.runtime import World
from tests.models.tiny_models import tiny_deeplab, tiny_tiramisu, toy_batch


def model_and_step(lag=0, lr=0.1):
    keras.utils.set_random_seed(5)
    inp = keras.Input((6, 8, 2))
    out = keras.layers.Conv2D(3, 3, padding="same")(keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp))
    model = keras.Model(inp, out)
    step = TrainStep(model, keras.optimizers.SGD(lr), GradientReducer(World()), LossScaler(enabled=False),
                     lambda y, logits, w: segmentation_loss(y, logits, w), gradient_lag=lag)
    return model, step


def batch(seed, n):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.normal(size=(n, 6, 8, 2)), tf.float32),
            tf.constant(rng.integers(0, 3, size=(n, 6, 8)), tf.int32),
            tf.constant(rng.uniform(0.5, 2, size=(n, 6, 8)), tf.float32))


def flat_weights(model):
    return np.concatenate([v.numpy().ravel() for v in model.trainable_variables])


def test_gradient_accumulation_equals_large_batch():
    m1, s1 = model_and_step()
    m2, s2 = model_and_step()
    for t in range(3):
        x, y, w = batch(t, 6)
        s1([(x, y, w)])
        s2([(x[i:i + 2], y[i:i + 2], w[i:i + 2]) for i in (0, 2, 4)])
    np.testing.assert_allclose(flat_weights(m1), flat_weights(m2), atol=1e-6)


def test_gradient_lag_applies_previous_gradients():
    lagged, s_lag = model_and_step(lag=1)
    plain, s_plain = model_and_step(lag=0)
    w0 = flat_weights(lagged)
    s_lag([batch(0, 2)])
    assert np.array_equal(flat_weights(lagged), w0)  # nothing to apply yet
    assert bool(s_lag.lag_valid.numpy())
    s_lag([batch(1, 2)])
    s_plain([batch(0, 2)])  # the update of step 2 is the plain update from batch 0 at w0
    np.testing.assert_allclose(flat_weights(lagged), flat_weights(plain), atol=1e-7)
    assert not np.allclose(flat_weights(lagged), w0)


def _losses_and_weights(model_cfg, jit: bool, steps: int = 3):
    """`steps` training steps of a tiny network with LARC, dynamic loss scaling (enabled on float32 weights,
    so the scale/unscale path runs) and gradient lag 1; returns the per-step losses and the final weights."""
    from exascale_climate.config import LarcConfig, OptimizerConfig
    from exascale_climate.models import build_model
    from exascale_climate.train.optimizers import build_optimizer

    keras.utils.set_random_seed(11)
    model = build_model(model_cfg, (32, 48, 4))
    optimizer = build_optimizer(OptimizerConfig(name="sgd", learning_rate=0.05, larc=LarcConfig(enabled=True)))
    step = TrainStep(model, optimizer, GradientReducer(World()), LossScaler(enabled=True, initial_scale=1024.0),
                     lambda y, logits, w: segmentation_loss(y, logits, w), gradient_lag=1, jit_compile=jit)
    losses = []
    for t in range(steps):
        x, y = toy_batch(2, seed=t)
        out = step([(tf.constant(x), tf.constant(y), tf.ones(y.shape, tf.float32))])
        losses.append(float(out["loss"].numpy()))
        assert bool(out["finite"].numpy())
    return step, np.array(losses), flat_weights(model)


@pytest.mark.parametrize("arch", ["tiramisu", pytest.param("deeplabv3plus", marks=pytest.mark.slow)])
def test_jit_compile_keeps_the_loss_curve(arch):
    """XLA for the forward+backward pass (train.jit_compile) gives the graph's losses and weights within float32
    round-off, with LARC, loss scaling and gradient lag on; and XLA really compiled the pass (its HLO holds the
    convolutions and, for DeepLabv3+, the batch-norm statistics)."""
    model_cfg = tiny_tiramisu() if arch == "tiramisu" else tiny_deeplab()
    _, graph_losses, graph_w = _losses_and_weights(model_cfg, jit=False)
    step, xla_losses, xla_w = _losses_and_weights(model_cfg, jit=True)
    assert len(set(graph_losses.round(4))) == 3  # the weights moved: three different losses
    np.testing.assert_allclose(xla_losses, graph_losses, rtol=2e-4)
    np.testing.assert_allclose(xla_w, graph_w, rtol=1e-3, atol=1e-5)
    x, y = toy_batch(2, seed=0)
    hlo = step._gradients.experimental_get_compiler_ir(((tf.constant(x), tf.constant(y),
                                                          tf.ones(y.shape, tf.float32)),))(stage="hlo")
    assert "convolution(" in hlo
    if arch == "deeplabv3plus":  # batch norm inside the cluster: XLA's fused op (Keras's fused path, what TF
        # 2.18 emits here) or its decomposed statistics (rsqrt of the variance), depending on the layer's path
        assert "batch-norm-training(" in hlo or "rsqrt(" in hlo


def test_jit_compile_auto_is_off_on_this_cpu_host():
    from exascale_climate.train.step import resolve_jit_compile

    assert not tf.config.list_physical_devices("GPU")  # the test host has none
    assert resolve_jit_compile("auto") is False
    assert resolve_jit_compile(True) is True and resolve_jit_compile(False) is False
