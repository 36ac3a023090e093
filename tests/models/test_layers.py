"""`DilatedConv2D` skips the taps of a dilated convolution that only read padding: its outputs and gradients
must equal those of Keras' own `Conv2D` (the independent implementation) holding the same weights."""
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from exascale_climate.models.layers import DilatedConv2D


@pytest.mark.parametrize("shape,rate", [((12, 18), 36), ((12, 18), 24), ((12, 18), 12), ((12, 18), (2, 20)),
                                        ((7, 9), 3), ((12, 18), 1)])
def test_same_outputs_and_gradients_as_keras_conv2d(shape, rate):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((2, *shape, 5)), tf.float32)
    fast = DilatedConv2D(4, 3, dilation_rate=rate, padding="same")
    plain = layers.Conv2D(4, 3, dilation_rate=rate, padding="same")
    fast.build(x.shape)
    plain.build(x.shape)
    kernel = rng.standard_normal((3, 3, 5, 4)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    fast.set_weights([kernel, bias])
    plain.set_weights([kernel, bias])
    probe = tf.constant(rng.standard_normal((2, *shape, 4)), tf.float32)

    def run(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * probe)
        return [y, *tape.gradient(loss, [x, *layer.trainable_variables])]

    for a, b in zip(run(fast), run(plain)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)


def test_taps_past_the_map_get_no_gradient_and_do_not_change_the_output():
    """Hand check: on a 12x18 map at rate 36 only the centre tap touches data."""
    x = tf.random.stateless_normal((1, 12, 18, 3), seed=(1, 2))
    layer = DilatedConv2D(2, 3, dilation_rate=36, padding="same", use_bias=False)
    layer.build(x.shape)
    kernel = np.zeros((3, 3, 3, 2), np.float32)
    kernel[1, 1] = np.arange(6, dtype=np.float32).reshape(3, 2)
    noise = kernel.copy()
    noise[0, 0] = 100.0  # an off-centre tap: must not matter
    layer.set_weights([noise])
    with tf.GradientTape() as tape:
        y = layer(x)
        loss = tf.reduce_sum(y)
    expected = np.einsum("bhwc,cf->bhwf", x.numpy(), kernel[1, 1])
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-5)
    grad = tape.gradient(loss, layer.kernel).numpy()
    assert np.all(grad[0] == 0) and np.all(grad[2] == 0) and np.all(grad[:, 0] == 0) and np.all(grad[:, 2] == 0)
    assert np.any(grad[1, 1] != 0)
