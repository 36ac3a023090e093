"""The compiled step in one process: gradient accumulation equals the large batch; lag applies step t-1."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from exascale_climate.train.distributed import GradientReducer
from exascale_climate.train.losses import segmentation_loss
from exascale_climate.train.precision import LossScaler
from exascale_climate.train.step import TrainStep
from exascale_climate.utils.runtime import World


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
