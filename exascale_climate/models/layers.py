"""Layer factory shared by both networks: one place decides dtype policy, weight decay, init and naming.

Why a factory: mixed precision must be set per layer (`dtype="mixed_float16"`, never the global Keras policy,
so a float32 evaluation in the same process is unaffected), every kernel gets the same L2 regularizer, and
layer names stay unique and readable in the summary table.
"""
from __future__ import annotations

import keras
from keras import layers

PRECISIONS = ("float32", "mixed_float16")


@keras.saving.register_keras_serializable(package="exaclimate")
class DilatedConv2D(layers.Conv2D):
    """A "same"-padded, stride-1 dilated convolution that skips the kernel taps that only ever read padding.

    Along an axis of size n, the taps at offsets +-rate*j with rate*j >= n fall outside the map at every output
    position: they multiply zeros and get zero gradients. DeepLabv3+'s atrous rates are meant for a 768x1152
    input (96x144 features at output stride 8); on a 96x144 input the features are 12x18, and rates 24 and 36
    reach past the whole map. TensorFlow still computes those taps, on a zero-padded copy made by SpaceToBatch,
    at 2-5 GFLOP/s instead of ~80 (measured: 64 % of a training step). Convolving with the live taps only gives
    the same outputs and gradients at a fraction of the cost; the variables are those of a `Conv2D`.
    """

    def convolution_op(self, inputs, kernel):
        rates = list(self.dilation_rate)
        if self.padding != "same" or any(s != 1 for s in self.strides) or self.data_format != "channels_last":
            return super().convolution_op(inputs, kernel)
        for axis in range(2):
            size, k, rate = inputs.shape[1 + axis], kernel.shape[axis], rates[axis]
            if size is None or rate == 1 or k % 2 == 0:
                continue
            live = min(k // 2, (size - 1) // rate)  # offsets rate*j, j <= live, land inside the map somewhere
            if live < k // 2:
                centre = k // 2
                kernel = kernel[centre - live:centre + live + 1] if axis == 0 else \
                    kernel[:, centre - live:centre + live + 1]
                if live == 0:
                    rates[axis] = 1
        return keras.ops.conv(inputs, kernel, strides=1, padding="same", dilation_rate=rates,
                              data_format=self.data_format)


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
        cls = DilatedConv2D if dilation != 1 else layers.Conv2D
        return cls(filters, kernel, strides=strides, dilation_rate=dilation, padding="same",
                             use_bias=use_bias, kernel_initializer=self.kernel_initializer,
                             kernel_regularizer=self._regularizer(), dtype=dtype or self.policy, name=name)

    def conv_transpose(self, filters: int, kernel: int, name: str, strides: int = 2) -> layers.Conv2DTranspose:
        return layers.Conv2DTranspose(filters, kernel, strides=strides, padding="same",
                                      kernel_initializer=self.kernel_initializer,
                                      kernel_regularizer=self._regularizer(), dtype=self.policy, name=name)

    def logits(self, num_classes: int, name: str = "logits") -> layers.Conv2D:
        """The classifier: a 1x1 convolution in float32 so logits and softmax never run in float16."""
        return self.conv(num_classes, 1, name=name, dtype="float32")

    def norm_relu(self, x, name: str):
        """[BatchNorm] -> ReLU (pre-activation), batch norm only when the model enables it."""
        if self.batch_norm:
            x = layers.BatchNormalization(dtype=self.policy, name=f"{name}_bn")(x)
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
        """Float32 input: the first layer casts to float16 itself under mixed precision."""
        return keras.Input(shape=tuple(input_shape), dtype="float32", name="fields")
