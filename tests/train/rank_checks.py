"""Multi-rank checks of the distributed layer, run on real Horovod ranks (see test_distributed.py).

`python tests/train/rank_checks.py OUT_DIR [RANKS_PER_NODE]` under a launcher. Every rank writes what it saw to
OUT_DIR: `rank-<r>.json` (Horovod's own local/cross ranks, the World's node grouping, scalar results) and
`rank-<r>.npz` (what it contributed and what the reductions returned, weights before/after). The test
computes the expected values itself (numpy sums of the contributions) and compares.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from exascale_climate.config import Config
from exascale_climate.train.distributed import setup_world

LR = 0.1
BATCH = 2
GRID = (8, 12)
SHAPES = [(5, 3), (17,), (2, 2, 4)]


def tiny_model(seed: int, precision: str = "float32"):
    """Two convolutions; under a mixed policy the toolkit's own Conv2D (models/layers.py) with float32 logits."""
    import keras

    from exascale_climate.models.layers import Conv2D

    keras.utils.set_random_seed(seed)
    inp = keras.Input((*GRID, 3))
    conv = keras.layers.Conv2D if precision == "float32" else Conv2D
    x = conv(6, 3, padding="same", activation="relu", dtype=precision)(inp)
    out = conv(3, 1, dtype="float32")(x)
    return keras.Model(inp, out)


def global_batches(step: int, size: int):
    """The global batch of a step (the same on every rank); rank r trains on its slice."""
    rng = np.random.default_rng(1000 + step)
    x = rng.normal(size=(size * BATCH, *GRID, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=(size * BATCH, *GRID)).astype(np.int32)
    w = rng.uniform(0.5, 1.5, size=(size * BATCH, *GRID)).astype(np.float32)
    return x, y, w


def my_slice(arrays, rank: int):
    return tuple(a[rank * BATCH:(rank + 1) * BATCH] for a in arrays)


def weights_of(model) -> np.ndarray:
    return np.concatenate([np.asarray(v.numpy(), np.float32).ravel() for v in model.trainable_variables])


def make_step(model, reducer, lag=0, scaler=None, loss=None):
    import keras

    from exascale_climate.train.losses import segmentation_loss
    from exascale_climate.train.precision import LossScaler
    from exascale_climate.train.step import TrainStep

    return TrainStep(model, keras.optimizers.SGD(LR), reducer, scaler or LossScaler(enabled=False),
                     loss or (lambda y, logits, w: segmentation_loss(y, logits, w)), gradient_lag=lag)


def main(out_dir: Path, ranks_per_node: int) -> int:
    import horovod.tensorflow as hvd_direct

    cfg = Config()
    cfg.distributed.allreduce = "hierarchical"
    cfg.distributed.ranks_per_node = ranks_per_node
    world = setup_world(cfg, use_horovod=True)
    import keras
    import tensorflow as tf

    from exascale_climate.train.distributed import GradientReducer, allreduce_numpy, broadcast_variables
    from exascale_climate.train.metrics import confusion_matrix
    from exascale_climate.train.precision import LossScaler
    from exascale_climate.utils.runtime import World

    rank, size = world.rank, world.size
    flat = GradientReducer(world, "flat")
    hier = GradientReducer.from_config(world, cfg.distributed)
    local = GradientReducer(World())
    out: dict = {"rank": rank, "size": size, "controller": "gloo" if hvd_direct.gloo_enabled() else "mpi",
                 # Horovod's own view, read straight from Horovod (not from the World under test)
                 "hvd_local_rank": hvd_direct.local_rank(), "hvd_local_size": hvd_direct.local_size(),
                 "hvd_cross_rank": hvd_direct.cross_rank(), "hvd_cross_size": hvd_direct.cross_size(),
                 "node": world.node, "nodes": world.nodes, "node_groups": world.node_groups,
                 "topology": hier.topology.nodes, "hosts": list(world.hosts)}
    arrays: dict = {}

    # --- flat and hierarchical reductions of this rank's own random tensors (the test sums the files)
    mine = [np.random.default_rng([rank, 7, i]).normal(size=s).astype(np.float32) for i, s in enumerate(SHAPES)]
    for i, t in enumerate(mine):
        arrays[f"contrib_{i}"] = t
    flat16 = GradientReducer(world, "flat", fp16_compression=True)
    for name, reducer in (("flat", flat), ("hier", hier), ("fp16", flat16)):
        for i, t in enumerate(tf.function(reducer.reduce)([tf.constant(t) for t in mine])):
            arrays[f"{name}_{i}"] = t.numpy()

    # --- the project's host-side sum (validation confusion matrices) of this rank's own labels/predictions
    rng = np.random.default_rng([rank, 11])
    labels, predictions = rng.integers(0, 3, (16, 24)), rng.integers(0, 3, (16, 24))
    arrays["labels"], arrays["predictions"] = labels, predictions
    arrays["cm_sum"] = allreduce_numpy(world, confusion_matrix(labels, predictions, 3).numpy(), name="rc_cm")

    # --- N ranks x batch b (hierarchical and flat) == 1 rank x batch N*b, plain SGD
    for name, reducer in (("hier", hier), ("flat", flat)):
        model = tiny_model(seed=11 + rank)  # different init per rank: the broadcast must fix it
        step = make_step(model, reducer)
        broadcast_variables(world, list(model.variables) + list(step.optimizer.variables))
        reference = tiny_model(seed=11)  # rank 0's init, trained alone on the global batch
        ref_step = make_step(reference, local)
        for t in range(3):
            batch = global_batches(t, size)
            step([my_slice(batch, rank)])
            ref_step([batch])
        arrays[f"{name}_trained"], arrays[f"{name}_single"] = weights_of(model), weights_of(reference)

    # --- mixed_bfloat16 (no loss scaling; float32 gradients to the allreduce, also fp16-compressed): N ranks x
    # batch b against 1 float32 rank x batch N*b from the same weights, 2 steps
    from exascale_climate.config import TrainConfig

    for name, reducer in (("bf16", hier), ("bf16_fp16c", flat16)):
        model = tiny_model(seed=11 + rank, precision="mixed_bfloat16")
        step = make_step(model, reducer, scaler=LossScaler.from_config(TrainConfig(precision="mixed_bfloat16")))
        broadcast_variables(world, list(model.variables) + list(step.optimizer.variables))
        reference = tiny_model(seed=11)
        arrays[f"{name}_before"] = weights_of(reference)
        ref_step = make_step(reference, local)
        for t in range(2):
            batch = global_batches(t, size)
            result = step([my_slice(batch, rank)])
            ref_step([batch])
        arrays[f"{name}_trained"], arrays[f"{name}_single"] = weights_of(model), weights_of(reference)
        out[f"{name}_loss_scale"] = float(result["loss_scale"].numpy())
        out[f"{name}_applied"] = bool(result["applied"].numpy())

    # --- mixed_float16 with dynamic loss scaling: a float16 gradient overflows on the last rank only
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    dense = keras.layers.Dense(2, dtype="mixed_float16")(inp)
    model = keras.Model(inp, keras.layers.Activation("linear", dtype="float32")(dense))
    scaler = LossScaler(enabled=True, dynamic=True, initial_scale=2.0**15, growth_steps=100)
    step = make_step(model, hier, scaler=scaler,
                     loss=lambda y, logits, w: tf.reduce_mean(tf.cast(logits, tf.float32) * w))
    # dL/dW = x * scale / batch: x = 100 gives ~1.6e6, beyond float16's 65504; x = 0.01 fits easily
    x = tf.fill((2, 4), 100.0 if rank == size - 1 else 0.01)
    arrays["fp16_before"] = weights_of(model)
    result = step([(x, tf.zeros((2,), tf.int32), tf.ones((2, 2)))])
    arrays["fp16_after"] = weights_of(model)
    out["fp16_applied"] = bool(result["applied"].numpy())
    out["fp16_scale_after"] = float(scaler.scale.numpy())
    small = tf.fill((2, 4), 0.01)
    step([(small, tf.zeros((2,), tf.int32), tf.ones((2, 2)))])
    arrays["fp16_after_good_step"] = weights_of(model)

    # --- gradient lag 1: step t applies the allreduced gradient of step t-1 (computed at w(t-1))
    model = tiny_model(seed=11)
    step = make_step(model, hier, lag=1)
    history = [weights_of(model)]
    for t in range(4):
        step([my_slice(global_batches(t, size), rank)])
        history.append(weights_of(model))
    arrays["lag_history"] = np.stack(history)
    # the same updates computed alone on the global batches: w2 = w0 - lr*g(w0, batch0), and
    # w4 = w3 - lr*g(w2, batch2) (the gradient of batch 2 was taken at w2)
    ref = tiny_model(seed=11)
    ref_step = make_step(ref, local)
    ref_step([global_batches(0, size)])
    arrays["lag_expected_w2"] = weights_of(ref)
    sizes = np.cumsum([int(np.prod(v.shape)) for v in ref.trainable_variables])[:-1]
    for v, value in zip(ref.trainable_variables, np.split(history[2], sizes)):
        v.assign(value.reshape(v.shape))
    ref_step([global_batches(2, size)])
    arrays["lag_expected_w4"] = history[3] - (history[2] - weights_of(ref))

    np.savez(out_dir / f"rank-{rank}.npz", **arrays)
    (out_dir / f"rank-{rank}.json").write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0))
