"""Layer factory shared by both networks: one place decides dtype policy, weight decay, init and naming.

Why a factory: mixed precision must be set per layer (`dtype="mixed_float16"`, never the global Keras policy,
so a float32 evaluation in the same process is unaffected), every kernel gets the same L2 regularizer, and
layer names stay unique and readable in the summary table.
"""
from __future__ import annotations

import keras
from keras import layers

PRECISIONS = ("float32", "mixed_float16")


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
        return layers.Conv2D(filters, kernel, strides=strides, dilation_rate=dilation, padding="same",
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
