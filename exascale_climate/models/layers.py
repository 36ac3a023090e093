"""Layer factory shared by both networks: one place decides dtype policy, weight decay, init and naming.

Why a factory: mixed precision must be set per layer (`dtype="mixed_float16"` or `"mixed_bfloat16"`, never the
global Keras policy, so a float32 evaluation in the same process is unaffected), every kernel gets the same L2 regularizer, and
layer names stay unique and readable in the summary table.
"""
from __future__ import annotations

import keras
from keras import layers

# train.precision: Keras dtype policies. Both mixed ones keep float32 variables; only float16 needs loss scaling
# (train/precision.py), bfloat16 has float32's exponent range. On CPUs with AVX512_BF16 (or AMX) bfloat16
# convolutions run natively in oneDNN; float16 ones are emulated there.
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def live_taps(size: int, kernel: int, dilation: int) -> range:
    """The taps of a stride-1 'same' convolution along one axis of `size` pixels that read at least one input
    pixel: tap t reads at offset t*dilation - pad, pad = (kernel-1)*dilation // 2, which lies inside the
    axis for some output pixel iff |offset| < size. The others only ever multiply the zero padding."""
    pad = (kernel - 1) * dilation // 2
    live = [t for t in range(kernel) if abs(t * dilation - pad) < size]
    return range(live[0], live[-1] + 1) if live else range(0)


def _bias_add_float32_grad(x, bias):
    """x + bias (NHWC) whose bias gradient is summed in float32.

    Why: TensorFlow's bfloat16 BiasAddGrad on CPUs (what Keras' bias add differentiates to) does not sum in
    float32: against the exact sum of the same bfloat16 values it was off by 5-118% per channel on a 2x96x144
    map of random gradients (a sum with heavy cancellation, as bias gradients are), where a float32 sum
    rounded once to bfloat16 is off by at most 2^-9. Its cost is one cast of the output gradient."""
    import tensorflow as tf

    @tf.custom_gradient
    def add(x, b):
        def grad(dy):
            axes = list(range(len(dy.shape) - 1))
            return dy, tf.cast(tf.reduce_sum(tf.cast(dy, tf.float32), axis=axes), b.dtype)
        return tf.nn.bias_add(x, b), grad

    return add(x, tf.cast(bias, x.dtype))  # the variable is read (and cast) outside, so its gradient flows back


class _BFloat16Bias:
    """Convolutions whose bias gradient is summed in float32 under a bfloat16 policy (_bias_add_float32_grad);
    any other policy takes Keras' own call unchanged."""

    def _float32_bias_grad(self) -> bool:
        return (self.use_bias and self.compute_dtype == "bfloat16" and self.data_format == "channels_last"
                and keras.backend.backend() == "tensorflow")

    def call(self, inputs):
        if not self._float32_bias_grad():
            return super().call(inputs)
        outputs = _bias_add_float32_grad(self._convolve(inputs), self.bias)
        return self.activation(outputs) if self.activation is not None else outputs


@keras.saving.register_keras_serializable(package="exascale_climate")
class Conv2D(_BFloat16Bias, layers.Conv2D):
    """Keras' Conv2D, with a float32-summed bias gradient under mixed_bfloat16."""

    def _convolve(self, inputs):
        return self.convolution_op(inputs, self.kernel)


@keras.saving.register_keras_serializable(package="exascale_climate")
class Conv2DTranspose(_BFloat16Bias, layers.Conv2DTranspose):
    """Keras' Conv2DTranspose, with a float32-summed bias gradient under mixed_bfloat16."""

    def _convolve(self, inputs):
        return keras.ops.conv_transpose(inputs, self.kernel, strides=list(self.strides), padding=self.padding,
                                        output_padding=self.output_padding, dilation_rate=self.dilation_rate,
                                        data_format=self.data_format)


@keras.saving.register_keras_serializable(package="exascale_climate")
class DilatedConv2D(Conv2D):
    """A stride-1 'same' dilated convolution that leaves out the kernel taps reading only zero padding.

    Why: DeepLabv3+'s ASPP rates (12/24/36) on the 12x18 encoder map of a 96x144 grid put every off-centre tap
    of the rate-24/36 branches outside the map, so those convolutions equal 1x1 convolutions with the centre
    weights, exactly. TensorFlow does not see that: on CPUs it runs every dilated convolution as SpaceToBatch ->
    convolution -> BatchToSpace over a map padded to a multiple of the rate (rate 36: 1,296 output positions
    for 216 real ones), forward and backward. The kernel variable keeps its full shape (checkpoints, weight
    decay and parameter counts do not change); the skipped taps get the zero data gradient they would get
    anyway. The live taps are found from the input's static shape at trace time, so any grid is exact.
    """

    def convolution_op(self, inputs, kernel):
        h, w = inputs.shape[1], inputs.shape[2]
        odd = all(k % 2 == 1 for k in self.kernel_size)
        if (h is None or w is None or self.padding != "same" or self.data_format != "channels_last"
                or tuple(self.strides) != (1, 1) or not odd):
            return super().convolution_op(inputs, kernel)
        rows, cols = (live_taps(n, k, d) for n, k, d in zip((h, w), self.kernel_size, self.dilation_rate))
        if len(rows) == self.kernel_size[0] and len(cols) == self.kernel_size[1]:
            return super().convolution_op(inputs, kernel)
        # Odd kernel, symmetric padding: the live taps are centred, so 'same' padding of the smaller kernel
        # puts each of them at the offset it had in the full one. A 1-tap axis needs no dilation.
        dilation = tuple(d if len(t) > 1 else 1 for d, t in zip(self.dilation_rate, (rows, cols)))
        return keras.ops.conv(inputs, kernel[rows.start:rows.stop, cols.start:cols.stop], strides=1,
                              padding="same", dilation_rate=dilation, data_format=self.data_format)


# tf.nn.fused_batch_norm raises a smaller epsilon to this (a cuDNN limit); below it the layer stays unfused.
FUSED_MIN_EPSILON = 1.001e-5


@keras.saving.register_keras_serializable(package="exascale_climate")
class FusedBatchNorm(layers.BatchNormalization):
    """Keras' BatchNormalization whose training-mode pass is TensorFlow's fused kernel pair.

    Why: Keras 3 normalises with separate moments and elementwise ops, and their gradients (Mul, Tile, Sum,
    Sub, Mean over 256-2048 channels) took ~12% of DeepLabv3+'s 96x144 training step on CPUs, against one
    FusedBatchNormV3 / FusedBatchNormGradV3 (oneDNN) here. Same arithmetic: batch mean and biased variance
    normalise, and the moving statistics are updated with the biased variance as Keras does (the fused
    kernel reports the unbiased one, which is converted back). Inference, masks, renorm and synchronized
    batch norm take Keras' own path.
    """

    def call(self, inputs, training=None, mask=None):
        import tensorflow as tf

        if (not (training and self.trainable) or mask is not None or self.renorm or self.synchronized
                or len(inputs.shape) != 4 or self.axis not in (-1, 3) or self.epsilon < FUSED_MIN_EPSILON
                or keras.backend.backend() != "tensorflow"):
            return super().call(inputs, training=training, mask=mask)
        # Statistics in float32 whatever the policy, as Keras. A bfloat16 input goes to the kernel as is: its
        # CPU kernel takes bfloat16 x with float32 scale/statistics and accumulates in float32 (bitwise the same
        # output and gradients as casting first, measured, and ~25% less CPU time without the two casts).
        x = inputs if inputs.dtype == tf.bfloat16 else tf.cast(inputs, tf.float32)
        channels = int(x.shape[-1])
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones((channels,), tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros((channels,), tf.float32)
        y, mean, unbiased, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=gamma, offset=beta, mean=tf.constant([], tf.float32), variance=tf.constant([], tf.float32),
            epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
        n = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
        variance = unbiased * (n - 1.0) / n
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(y, self.compute_dtype)


# Keras 3 keys a layer's weights in model.weights.h5 by its class name (snake case + a counter), not by the layer
# name: keeping the Keras base's name keeps checkpoints written with Keras' own layers loadable, and vice versa.
Conv2D.__name__ = DilatedConv2D.__name__ = "Conv2D"
Conv2DTranspose.__name__ = "Conv2DTranspose"
FusedBatchNorm.__name__ = "BatchNormalization"

class LayerFactory:
    """Creates Keras layers with the model's precision policy, L2 weight decay and initializer."""

    def __init__(self, precision: str = "float32", weight_decay: float = 0.0,
                 kernel_initializer: str = "he_uniform", batch_norm: bool = False, dropout: float = 0.0):
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: choose one of {PRECISIONS}")
        self.policy = precision
        self.weight_decay = weight_decay
        self.kernel_initializer = kernel_initializer
        self.batch_norm = batch_norm
        self.dropout_rate = dropout

    def _regularizer(self):
        # Keras L2(wd) adds wd * sum(w**2) to model.losses for every kernel.
        return keras.regularizers.L2(self.weight_decay) if self.weight_decay > 0 else None

    def conv(self, filters: int, kernel: int, name: str, strides: int = 1, dilation: int = 1,
             use_bias: bool = True, dtype: str | None = None) -> layers.Conv2D:
        """A 'same' convolution; dilated ones skip the taps that only read padding (DilatedConv2D)."""
        cls = DilatedConv2D if dilation > 1 and strides == 1 else Conv2D
        return cls(filters, kernel, strides=strides, dilation_rate=dilation, padding="same",
                             use_bias=use_bias, kernel_initializer=self.kernel_initializer,
                             kernel_regularizer=self._regularizer(), dtype=dtype or self.policy, name=name)

    def conv_transpose(self, filters: int, kernel: int, name: str, strides: int = 2) -> layers.Conv2DTranspose:
        return Conv2DTranspose(filters, kernel, strides=strides, padding="same",
                                      kernel_initializer=self.kernel_initializer,
                                      kernel_regularizer=self._regularizer(), dtype=self.policy, name=name)

    def logits(self, num_classes: int, name: str = "logits") -> layers.Conv2D:
        """The classifier: a 1x1 convolution in float32 so logits and softmax never run in float16/bfloat16."""
        return self.conv(num_classes, 1, name=name, dtype="float32")

    def norm_relu(self, x, name: str):
        """[BatchNorm] -> ReLU (pre-activation), batch norm only when the model enables it."""
        if self.batch_norm:
            x = FusedBatchNorm(dtype=self.policy, name=f"{name}_bn")(x)
        return layers.ReLU(dtype=self.policy, name=f"{name}_relu")(x)

    def dropout(self, x, name: str):
        if self.dropout_rate > 0:
            x = layers.Dropout(self.dropout_rate, dtype=self.policy, name=f"{name}_drop")(x)
        return x

    def concat(self, tensors, name: str):
        return layers.Concatenate(axis=-1, dtype=self.policy, name=name)(tensors)

    def add(self, tensors, name: str):
        return layers.Add(dtype=self.policy, name=name)(tensors)

    def input(self, input_shape: tuple[int, int, int]):
        """Float32 input: the first layer casts to float16/bfloat16 itself under mixed precision."""
        return keras.Input(shape=tuple(input_shape), dtype="float32", name="fields")
