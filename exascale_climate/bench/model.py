"""`exaclimate bench model`: forward and training-step throughput and achieved FLOP/s of the networks.

Achieved FLOP/s = analytic FLOPs per sample (models/flops.py, the paper's convention) x samples/s, compared
with the best dense rate this machine reaches in the same run (the faster of TensorFlow's 4096^2 matmul and one
large forward convolution: on some CPUs oneDNN's convolutions outrun the matmul, and a ratio above 1 says
nothing), and the training step's rate with the forward's (issue 17: on CPUs the backward pass can run at a
fraction of the forward's rate). Each phase is also timed in CPU seconds of this process, which other jobs on a
shared machine inflate far less than the wall time; the CPU rate counts the cores the step was given.
"""
from __future__ import annotations

import dataclasses
import statistics
import time

from exascale_climate.bench.common import record
from exascale_climate.config import Config
from exascale_climate.utils.log import get_logger

log = get_logger("bench.model")
BENCH = "model"
# A 4096^2 float32 matmul runs closer to the machine's peak than the 2048^2 default: the stricter baseline.
PEAK_MATMUL_N = 4096
# DeepLabv3+ keeps 256-channel full-resolution decoder activations: ~20 GB for one 768x1152 training step,
# so by default it is timed at a quarter of the grid; pass --grid 768x1152 on a machine with the memory.
DEFAULT_GRIDS = {"tiramisu": [(768, 1152), (96, 144)], "deeplabv3plus": [(384, 576), (96, 144)],
                 "semisup": [(768, 768)],  # the SC17 talk's input; its paper config needs multiples of 32
                 "demo": [(96, 144)]}  # the README's slim Tiramisu (configs/demo.yaml) on its own grid


def _steps(model, optimizer, batch: int, shape: tuple[int, int, int], num_classes: int, jit_compile: bool = False):
    """Compiled forward and training step on one fixed random batch (no input pipeline in the timing); with
    `jit_compile` the step's forward+backward pass is XLA-compiled as train.step.TrainStep does it."""
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

    def gradients():
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = loss_fn(y, logits, w) + tf.add_n([tf.cast(l, tf.float32) for l in model.losses])
        return loss, tape.gradient(loss, [v.value for v in variables])

    if jit_compile:
        gradients = tf.function(gradients, jit_compile=True)

    @tf.function
    def train_step():
        loss, grads = gradients()
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    return (lambda: forward().numpy()), (lambda: train_step().numpy())


def _first_and_best_seconds(fn, repeat: int) -> tuple[float, float, float]:
    """(first call incl. tracing, best wall seconds, best CPU seconds of this process) of `repeat` further calls."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    wall = cpu = float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return first, wall, cpu


# The issue-17 probe: one 5x5 convolution, 64 -> 32 channels, at the paper models' 384x576 (22.6 GFLOP).
CONV_PEAK_SHAPE = (384, 576, 64, 32, 5)


def _dense_probes(n: int, conv_shape) -> list[tuple[str, object, float]]:
    """(name, call, FLOPs) of TensorFlow's n^2 float32 matmul and one large forward convolution (H, W, C_in,
    C_out, K; batch 1, 'same'): oneDNN's convolutions can outrun the matmul (an AVX2 host: 114 vs 80-85
    GFLOP/s), so the dense baseline takes the faster of the two."""
    import tensorflow as tf

    a, b = tf.random.normal((n, n)), tf.random.normal((n, n))
    h, w, cin, cout, k = conv_shape
    x, kernel = tf.random.normal((1, h, w, cin)), tf.random.normal((k, k, cin, cout))
    mm = tf.function(lambda: tf.matmul(a, b))
    conv = tf.function(lambda: tf.nn.conv2d(x, kernel, 1, "SAME"))
    return [(f"matmul_peak_{n}", lambda: mm().numpy(), 2.0 * n**3),
            (f"conv{k}x{k}_{cin}to{cout}_{h}x{w} forward", lambda: conv().numpy(), 2.0 * h * w * cin * cout * k * k)]


def dense_baseline(peak_matmul_n: int = PEAK_MATMUL_N, conv_shape=None, threads: int = 1, repeat: int = 3):
    """Records of the matmul and large-convolution rates and of the faster one, which is returned as the
    same-run baseline: (records, best wall FLOP/s, best CPU-time FLOP/s, name of the wall-time best)."""
    records, best, best_cpu = [], (0.0, 0.0, ""), 0.0
    for name, fn, flops in _dense_probes(peak_matmul_n, conv_shape or CONV_PEAK_SHAPE):
        fn()  # warm-up besides the first call: oneDNN picks and caches its kernel
        _, wall, cpu = _first_and_best_seconds(fn, repeat)
        rate, cpu_rate = flops / wall, (flops / cpu * threads if cpu > 0 else float("nan"))
        log.info("%s: %.1f GFLOP/s (%.1f per CPU time)", name, rate / 1e9, cpu_rate / 1e9)
        records.append(record(BENCH, name, rate / 1e9, "GFLOP/s", cpu_gflops=cpu_rate / 1e9, flops=flops))
        if rate > best[0]:
            best = (rate, cpu_rate, name)
        best_cpu = max(best_cpu, cpu_rate)  # the CPU-time baseline: the faster probe by CPU time
    records.append(record(BENCH, "best dense rate", best[0] / 1e9, "GFLOP/s", cpu_gflops=best_cpu / 1e9,
                          baseline_of=best[2]))
    return records, best[0], best_cpu, f"best dense: {best[2]}"


def model_config_for(cfg: Config, name: str):
    """`name`'s model section: the run's config for the paper networks, configs/demo.yaml's for "demo"."""
    if name == "demo":
        from exascale_climate.config import load_config

        return load_config("demo").model
    return dataclasses.replace(cfg.model, name=name)


def bench_model(cfg: Config, models: list[str], grids: list[tuple[int, int]] | None = None, batch: int = 1,
                repeat: int = 1, precision: str = "float32", peak_matmul_n: int = PEAK_MATMUL_N,
                conv_shape=None, profile_dir: str | None = None) -> list[dict]:
    """Records per (model, grid): forward and train-step samples/s and FLOP/s against the best dense rate, and
    the step's FLOP rate over the forward's (wall and CPU time). `grids` None = DEFAULT_GRIDS of each model;
    `train.jit_compile` in `cfg` decides XLA for the step's forward+backward; `profile_dir` adds an op-type
    table of one traced forward and one traced step (bench "profile")."""
    from exascale_climate.utils.runtime import apply_tf_threads, configure_threads

    threads = configure_threads(cfg.distributed.threads_per_rank)
    apply_tf_threads()
    import keras

    from exascale_climate.models import build_model
    from exascale_climate.models.flops import analytic_flops
    from exascale_climate.models.summary import input_channels
    from exascale_climate.train.step import resolve_jit_compile

    jit = resolve_jit_compile(cfg.train.jit_compile)
    records, peak, cpu_peak, peak_name = dense_baseline(peak_matmul_n, conv_shape, threads)
    for name in models:
        model_cfg = model_config_for(cfg, name)
        for grid in grids or DEFAULT_GRIDS[name]:
            shape = (grid[0], grid[1], input_channels(cfg))
            keras.backend.clear_session()
            model = build_model(model_cfg, shape, precision=precision)
            flops = analytic_flops(model)
            forward, train_step = _steps(model, keras.optimizers.SGD(1e-3, momentum=0.9), batch, shape,
                                         model_cfg.num_classes, jit_compile=jit)
            extra = {"model": name, "grid": f"{grid[0]}x{grid[1]}", "batch": batch, "precision": precision,
                     "repeat": repeat, "jit_compile": jit}
            label = f"{name} {extra['grid']} b{batch}"
            phases = (("forward", forward, flops["forward"]), ("train_step", train_step, flops["train_step"]))
            first = {}
            for phase, fn, _ in phases:  # tracing call
                t0 = time.perf_counter()
                fn()
                first[phase] = time.perf_counter() - t0
            # Rounds of one forward then one step, so a change in the machine's load hits both phases of a
            # round alike; the median over rounds of step/forward is the robust ratio on a shared machine.
            timings = {phase: [] for phase, _, _ in phases}
            for _ in range(repeat):
                for phase, fn, _ in phases:
                    t0, c0 = time.perf_counter(), time.process_time()
                    fn()
                    timings[phase].append((time.perf_counter() - t0, time.process_time() - c0))
            rates = {}
            for phase, fn, per_sample in phases:
                seconds, cpu = (min(t[i] for t in timings[phase]) for i in (0, 1))
                median_s, median_cpu = (statistics.median(t[i] for t in timings[phase]) for i in (0, 1))
                rate = batch / seconds
                # FLOP/s per the cores given (threads x CPU seconds): what the step would reach alone on them
                cpu_rate = per_sample * batch / cpu * threads if cpu > 0 else float("nan")
                rates[phase] = (per_sample * rate, cpu_rate)
                log.info("%s %s: %.3f s per batch, %.3f CPU s (median %.3f s, %.3f CPU s; first call %.1f s)",
                         label, phase, seconds, cpu, median_s, median_cpu, first[phase])
                records.append(record(BENCH, f"{label} {phase} samples/s", rate, "samples/s", seconds=seconds,
                                      cpu_seconds=cpu, median_seconds=median_s, median_cpu_seconds=median_cpu,
                                      first_call_seconds=first[phase], **extra))
                records.append(record(BENCH, f"{label} {phase} FLOP/s", per_sample * rate / 1e9, "GFLOP/s",
                                      peak / 1e9, peak_name, flops_per_sample=per_sample,
                                      cpu_gflops=cpu_rate / 1e9, cpu_baseline_gflops=cpu_peak / 1e9,
                                      cpu_ratio=cpu_rate / cpu_peak if cpu_peak > 0 else None, **extra))
            (fwd, fwd_cpu), (step, step_cpu) = rates["forward"], rates["train_step"]
            records.append(record(BENCH, f"{label} train_step/forward FLOP/s", step / 1e9, "GFLOP/s", fwd / 1e9,
                                  "forward FLOP/s", timing="wall", **extra))
            records.append(record(BENCH, f"{label} train_step/forward FLOP/s (CPU time)", step_cpu / 1e9,
                                  "GFLOP/s", fwd_cpu / 1e9, "forward FLOP/s (CPU time)", timing="cpu", **extra))
            work = flops["train_step"] / flops["forward"]
            for i, timing in ((0, "wall"), (1, "cpu")):
                per_round = [work * f[i] / s[i] for f, s in zip(timings["forward"], timings["train_step"])
                             if f[i] > 0 and s[i] > 0]
                if per_round:
                    records.append(record(BENCH, f"{label} train_step/forward FLOP/s ({timing}, median of rounds)",
                                          statistics.median(per_round), "ratio", rounds=len(per_round),
                                          ratio_min=min(per_round), ratio_max=max(per_round), timing=timing,
                                          **extra))
            if profile_dir:
                from pathlib import Path

                from exascale_climate.bench.profile import profile_records

                for phase, fn in (("forward", forward), ("train_step", train_step)):
                    records += profile_records(fn, Path(profile_dir) / f"{name}_{extra['grid']}_{phase}",
                                               f"{label} {phase}", phase=phase, **extra)
            del model
    return records
