"""Multi-rank checks of the training step, run on real Horovod ranks (see test_distributed.py).

Run as `horovodrun -np 4 ... python tests/train/rank_checks.py`: the world is split into "nodes" of 2 ranks
so the process-set hierarchical allreduce has a real intra-node and a real cross-node stage. Every rank
prints one JSON line `CHECKS {...}` with the measured quantities; the test asserts on them.
"""
from __future__ import annotations

import json
import sys

import numpy as np

from exascale_climate.config import Config
from exascale_climate.train.distributed import setup_world

LR = 0.1
BATCH = 2
GRID = (8, 12)


def tiny_model(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((*GRID, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inp)
    out = keras.layers.Conv2D(3, 1)(x)
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
    return np.concatenate([np.asarray(v.numpy()).ravel() for v in model.trainable_variables])


def make_step(model, world, reducer, lag=0):
    import keras

    from exascale_climate.train.losses import segmentation_loss
    from exascale_climate.train.precision import LossScaler
    from exascale_climate.train.step import TrainStep

    return TrainStep(model, keras.optimizers.SGD(LR), reducer, LossScaler(enabled=False),
                     lambda y, logits, w: segmentation_loss(y, logits, w), gradient_lag=lag)


def main() -> int:
    cfg = Config()
    cfg.distributed.allreduce = "hierarchical"
    cfg.distributed.ranks_per_node = 2
    world = setup_world(cfg, use_horovod=True)
    import tensorflow as tf

    from exascale_climate.train.distributed import GradientReducer, broadcast_variables
    from exascale_climate.utils.runtime import World

    hvd, rank, size = world.hvd, world.rank, world.size
    flat = GradientReducer(world, "flat")
    hier = GradientReducer.from_config(world, cfg.distributed)
    flat16 = GradientReducer(world, "flat", fp16_compression=True)
    local = GradientReducer(World())
    out: dict = {"rank": rank, "size": size, "nodes": hier.topology.nodes}

    def gather_rows(vec: np.ndarray) -> np.ndarray:
        return hvd.allgather(tf.constant(vec[None, :]), name=f"gather_{len(out)}").numpy()

    # --- hierarchical == flat == numpy mean, and identical on every rank
    tensors = [np.random.default_rng([r, 7]).normal(size=s).astype(np.float32)
               for r in range(size) for s in [(5, 3), (17,), (2, 2, 4)]]
    mine = [tf.constant(t) for t in tensors[3 * rank:3 * rank + 3]]
    expected = [np.mean([tensors[3 * r + i] for r in range(size)], axis=0) for i in range(3)]
    via_flat = [t.numpy() for t in tf.function(flat.reduce)(mine)]
    via_hier = [t.numpy() for t in tf.function(hier.reduce)(mine)]
    via_f16 = [t.numpy() for t in tf.function(flat16.reduce)(mine)]
    out["hier_vs_flat_maxdiff"] = max(float(np.max(np.abs(a - b))) for a, b in zip(via_hier, via_flat))
    out["hier_vs_numpy_maxdiff"] = max(float(np.max(np.abs(a - b))) for a, b in zip(via_hier, expected))
    out["fp16_vs_numpy_maxdiff"] = max(float(np.max(np.abs(a - b))) for a, b in zip(via_f16, expected))
    rows = gather_rows(np.concatenate([v.ravel() for v in via_hier]))
    out["hier_identical_on_ranks"] = bool(all(np.array_equal(rows[0], r) for r in rows))

    # --- N ranks x batch b (hierarchical and flat) == 1 rank x batch N*b, plain SGD; bitwise-equal ranks
    for name, reducer in (("hier", hier), ("flat", flat)):
        model = tiny_model(seed=11 + rank)  # different init per rank: the broadcast must fix it
        step = make_step(model, world, reducer)
        broadcast_variables(world, list(model.variables) + list(step.optimizer.variables))
        reference = tiny_model(seed=11)  # rank 0's init, trained alone on the global batch
        ref_step = make_step(reference, World(), local)
        for t in range(3):
            batch = global_batches(t, size)
            step([my_slice(batch, rank)])
            ref_step([batch])
        w, w_ref = weights_of(model), weights_of(reference)
        out[f"{name}_vs_single_maxdiff"] = float(np.max(np.abs(w - w_ref)))
        rows = gather_rows(w)
        out[f"{name}_weights_bitwise_equal"] = bool(all(np.array_equal(rows[0], r) for r in rows))

    # --- an overflow on one rank skips the step on every rank
    model = tiny_model(seed=11)
    step = make_step(model, world, hier)
    before = weights_of(model)
    x, y, w = my_slice(global_batches(0, size), rank)
    if rank == size - 1:
        x = x.copy()
        x[0, 0, 0, 0] = np.inf
    result = step([(x, y, w)])
    out["overflow_finite"] = bool(result["finite"].numpy())
    out["overflow_applied"] = bool(result["applied"].numpy())
    out["overflow_weights_unchanged"] = bool(np.array_equal(before, weights_of(model)))
    out["overflow_skipped_steps"] = int(step.scaler.skipped_steps.numpy())
    step([my_slice(global_batches(1, size), rank)])
    out["after_overflow_changed"] = not np.array_equal(before, weights_of(model))

    # --- gradient lag 1: step t applies the allreduced gradient of step t-1 (computed at w(t-1))
    model = tiny_model(seed=11)
    step = make_step(model, world, hier, lag=1)
    ref = tiny_model(seed=11)
    ref_step = make_step(ref, World(), local)
    w_hist = [weights_of(model)]
    for t in range(4):
        step([my_slice(global_batches(t, size), rank)])
        w_hist.append(weights_of(model))
    out["lag_first_step_no_update"] = bool(np.array_equal(w_hist[0], w_hist[1]))
    # Expected: w2 = w1 - lr*g(w1, batch0)  (w1 == w0);  w4 = w3 - lr*g(w3-1=w2, batch2)
    ref_step([global_batches(0, size)])
    out["lag_step2_maxdiff"] = float(np.max(np.abs(weights_of(ref) - w_hist[2])))
    for v, value in zip(ref.trainable_variables, np.split(w_hist[2], np.cumsum(
            [int(np.prod(v.shape)) for v in ref.trainable_variables])[:-1])):
        v.assign(value.reshape(v.shape))
    ref_step([global_batches(2, size)])
    g_at_w2 = w_hist[2] - weights_of(ref)  # lr * g(w2, batch2)
    out["lag_step4_maxdiff"] = float(np.max(np.abs((w_hist[3] - g_at_w2) - w_hist[4])))

    print("CHECKS " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
