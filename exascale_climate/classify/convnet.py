"""The study's three patch ConvNets in Keras, trained data-parallel with Horovod like the segmentation models.

Layers follow the table (conv k x k with f filters, max-pool p x p, fully connected) with ReLU after each conv and
hidden FC layer and "same" padding (the talk does not say; it lets any --size work); the last FC layer has 2
units (softmax over event / no event).
Training uses the project's machinery: `train.distributed.setup_world` (Horovod when launched with several
ranks), `GradientReducer` (flat or hierarchical allreduce of the gradients), `broadcast_variables` from rank 0,
each rank on its own shard of the patches.
"""
from __future__ import annotations

import numpy as np

from exascale_climate.classify.study import PATTERNS


def build_convnet(pattern: str, input_shape: tuple[int, int, int], dropout: float = 0.0, seed: int = 0):
    """The Keras model of `pattern`'s ConvNet for (h, w, channels) patches."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    x = inputs = keras.Input(input_shape, name="patch")
    spec = PATTERNS[pattern].convnet
    n_conv = n_pool = n_fc = 0
    for i, layer in enumerate(spec):
        if layer.kind == "conv":
            n_conv += 1
            x = layers.Conv2D(layer.filters, layer.size, padding="same", activation="relu", name=f"conv{n_conv}")(x)
        elif layer.kind == "pool":
            n_pool += 1
            x = layers.MaxPooling2D(layer.size, padding="same", name=f"pool{n_pool}")(x)
        else:
            n_fc += 1
            if len(x.shape) > 2:
                x = layers.Flatten(name="flatten")(x)
            last = i == len(spec) - 1
            if last and dropout > 0:
                x = layers.Dropout(dropout, name="dropout")(x)
            x = layers.Dense(layer.size, activation=None if last else "relu", name=f"fc{n_fc}")(x)
    return keras.Model(inputs, x, name=f"patch_convnet_{pattern}")


def layer_table(model) -> list[tuple[str, tuple]]:
    """(kind, parameters) per conv / pool / fc layer: ("conv", (k, k, filters)), ("pool", (p, p)), ("fc", (units,))."""
    out = []
    for layer in model.layers:
        cls = type(layer).__name__
        if cls == "Conv2D":
            out.append(("conv", (*layer.kernel_size, layer.filters)))
        elif cls == "MaxPooling2D":
            out.append(("pool", tuple(layer.pool_size)))
        elif cls == "Dense":
            out.append(("fc", (layer.units,)))
    return out


class ConvNetClassifier:
    """fit / predict / score like scikit-learn, on (N, h, w, C) patches, over all Horovod ranks."""

    def __init__(self, pattern: str, world, reducer, learning_rate: float = 1e-3, dropout: float = 0.0,
                 batch_size: int = 64, epochs: int = 5, seed: int = 0):
        self.pattern, self.world, self.reducer = pattern, world, reducer
        self.learning_rate, self.dropout, self.batch_size, self.epochs, self.seed = (
            learning_rate, dropout, batch_size, epochs, seed)
        self.model = None
        self.mean = self.std = None

    def _norm(self, x):
        return ((x - self.mean) / self.std).astype(np.float32)

    def fit(self, x: np.ndarray, y: np.ndarray) -> "ConvNetClassifier":
        import keras
        import tensorflow as tf

        from exascale_climate.train.distributed import broadcast_variables, unwrap

        self.mean = x.mean(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
        self.std = np.maximum(x.std(axis=(0, 1, 2), dtype=np.float64), 1e-6).astype(np.float32)
        self.model = build_convnet(self.pattern, x.shape[1:], self.dropout, self.seed)
        optimizer = keras.optimizers.Adam(self.learning_rate)
        trainable = list(self.model.trainable_variables)
        optimizer.build(trainable)
        broadcast_variables(self.world, self.model.variables)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        reducer, model = self.reducer, self.model

        @tf.function(reduce_retracing=True)
        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            grads = reducer.reduce(tape.gradient(loss, unwrap(trainable)))
            optimizer.apply(grads, trainable)
            return loss

        rank, size = self.world.rank, self.world.size
        per_rank = len(x) // size
        steps = max(1, per_rank // self.batch_size)
        for epoch in range(self.epochs):
            order = np.random.default_rng([self.seed, epoch]).permutation(len(x))  # same on every rank
            mine = order[rank * per_rank:(rank + 1) * per_rank] if per_rank else order
            for s in range(steps):
                idx = np.sort(mine[s * self.batch_size:(s + 1) * self.batch_size])
                if idx.size == 0:
                    idx = mine[: self.batch_size]
                step(tf.constant(self._norm(x[idx])), tf.constant(y[idx].astype(np.int32)))
        return self

    def predict(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        out = [np.argmax(self.model(self._norm(x[i:i + batch]), training=False), axis=1)
               for i in range(0, len(x), batch)]
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.predict(x) == y).mean()) if len(y) else float("nan")

    def save(self, path) -> None:
        from pathlib import Path

        from exascale_climate.utils.io import atomic_path

        path = Path(path)
        with atomic_path(path.with_suffix(".keras")) as tmp:
            self.model.save(str(tmp) + ".keras")
            import os

            os.replace(str(tmp) + ".keras", tmp)
        np.savez(path.with_suffix(".norm.npz"), mean=self.mean, std=self.std)

    @classmethod
    def load(cls, path, pattern: str, world=None) -> "ConvNetClassifier":
        from pathlib import Path

        import keras

        path = Path(path)
        obj = cls(pattern, world, None)
        obj.model = keras.models.load_model(path.with_suffix(".keras"))
        norm = np.load(path.with_suffix(".norm.npz"))
        obj.mean, obj.std = norm["mean"], norm["std"]
        return obj
