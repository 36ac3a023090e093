"""`exaclimate bench model`: forward and training-step throughput and achieved FLOP/s of the networks.

Achieved FLOP/s = analytic FLOPs per sample (models/flops.py, the paper's convention) x samples/s, compared
with this machine's float32 matmul peak measured in the same run -- the fraction of peak a convolutional
network reaches is the figure of merit (the paper reached ~1/3 of peak per V100 on Summit).
"""
from __future__ import annotations

import dataclasses
import time

from exascale_climate.bench.common import record, timed
from exascale_climate.config import Config
from exascale_climate.utils.log import get_logger

log = get_logger("bench.model")
BENCH = "model"
# A 4096^2 float32 matmul runs closer to the machine's peak than the 2048^2 default: the stricter baseline.
PEAK_MATMUL_N = 4096
# DeepLabv3+ keeps 256-channel full-resolution decoder activations: ~20 GB for one 768x1152 training step,
# so by default it is timed at a quarter of the grid; pass --grid 768x1152 on a machine with the memory.
DEFAULT_GRIDS = {"tiramisu": [(768, 1152), (96, 144)], "deeplabv3plus": [(384, 576), (96, 144)],
                 "semisup": [(768, 768)]}  # the SC17 talk's input; its paper config needs multiples of 32


def _steps(model, optimizer, batch: int, shape: tuple[int, int, int], num_classes: int):
    """Compiled forward and training step on one fixed random batch (no input pipeline in the timing)."""
    import tensorflow as tf

    from exascale_climate.train.losses import segmentation_loss

    rng = tf.random.Generator.from_seed(0)
    x = rng.normal((batch, *shape))
    y = rng.uniform((batch, *shape[:2]), 0, num_classes, dtype=tf.int32)
    w = tf.ones((batch, *shape[:2]))
    variables = model.trainable_variables

    @tf.function
    def forward():
        return tf.add_n([tf.reduce_sum(o) for o in tf.nest.flatten(model(x, training=False))])

    loss_fn = segmentation_loss
    if isinstance(model.output, (list, tuple)):  # the semisup detector: reconstruction + box terms, all labelled
        from exascale_climate.config import SemisupConfig
        from exascale_climate.train.semisup import semisup_loss

        grid_shape = tuple(int(d) for d in model.output[1].shape[1:3])
        targets = (x, tf.concat([tf.ones((batch, *grid_shape, 1)), tf.zeros((batch, *grid_shape, 5))], -1))
        y, w = targets, tf.ones((batch,))
        loss_fn = (lambda yy, out, ww: semisup_loss(yy, out, ww, SemisupConfig(), num_classes))

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = loss_fn(y, logits, w) + tf.add_n([tf.cast(l, tf.float32) for l in model.losses])
        grads = tape.gradient(loss, [v.value for v in variables])
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    return (lambda: forward().numpy()), (lambda: train_step().numpy())


def _first_and_best_seconds(fn, repeat: int) -> tuple[float, float]:
    """(first call incl. tracing, best of `repeat` further calls) in seconds."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0, timed(fn, repeat=repeat, warmup=0)


def bench_model(cfg: Config, models: list[str], grids: list[tuple[int, int]] | None = None, batch: int = 1,
                repeat: int = 1, precision: str = "float32", peak_matmul_n: int = PEAK_MATMUL_N) -> list[dict]:
    """Records per (model, grid): forward and train-step samples/s and FLOP/s next to the matmul peak.

    `grids` None = DEFAULT_GRIDS of each model.
    """
    from exascale_climate.utils.runtime import apply_tf_threads, configure_threads

    configure_threads(cfg.distributed.threads_per_rank)
    apply_tf_threads()
    import keras

    from exascale_climate.bench.common import matmul_peak_flops
    from exascale_climate.models import build_model
    from exascale_climate.models.flops import analytic_flops
    from exascale_climate.models.summary import input_channels

    peak = matmul_peak_flops(peak_matmul_n)
    log.info("float32 matmul peak: %.1f GFLOP/s", peak / 1e9)
    records = [record(BENCH, f"matmul_peak_{peak_matmul_n}", peak / 1e9, "GFLOP/s", matmul_n=peak_matmul_n)]
    for name in models:
        model_cfg = dataclasses.replace(cfg.model, name=name)
        for grid in grids or DEFAULT_GRIDS[name]:
            shape = (grid[0], grid[1], input_channels(cfg))
            keras.backend.clear_session()
            model = build_model(model_cfg, shape, precision=precision)
            flops = analytic_flops(model)
            forward, train_step = _steps(model, keras.optimizers.SGD(1e-3, momentum=0.9), batch, shape,
                                         model_cfg.num_classes)
            extra = {"model": name, "grid": f"{grid[0]}x{grid[1]}", "batch": batch, "precision": precision,
                     "repeat": repeat}
            label = f"{name} {extra['grid']} b{batch}"
            for phase, fn, per_sample in (("forward", forward, flops["forward"]),
                                          ("train_step", train_step, flops["train_step"])):
                first, seconds = _first_and_best_seconds(fn, repeat)
                rate = batch / seconds
                log.info("%s %s: %.3f s per batch (first call %.1f s)", label, phase, seconds, first)
                records.append(record(BENCH, f"{label} {phase} samples/s", rate, "samples/s", seconds=seconds,
                                      first_call_seconds=first, **extra))
                records.append(record(BENCH, f"{label} {phase} FLOP/s", per_sample * rate / 1e9, "GFLOP/s",
                                      peak / 1e9, "matmul peak", flops_per_sample=per_sample, **extra))
            del model
    return records
