"""`exaclimate train`: the data-parallel training loop, the same code alone, under horovodrun/mpirun or srun.

One call of `train(cfg, run_dir)` sets up Horovod, the model, the optimizer (LARC, schedule), loss scaling and
the gradient reducer, restores a checkpoint with `resume=True`, and then runs epochs of compiled steps with
periodic validation (confusion matrices summed over ranks, so IoU is exact), metrics, TensorBoard events and
atomic checkpoints. Rank 0 writes everything in the run directory.
"""
from __future__ import annotations

import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exascale_climate.config import Config, save_config
from exascale_climate.errors import DistributedError, ExaclimateError
from exascale_climate.train.distributed import (GradientReducer, Watchdog, allreduce_numpy, broadcast_object,
                                                broadcast_variables, group_stall_timeout_s, setup_world)
from exascale_climate.train.peers import PeerWatch, leave
from exascale_climate.train.preempt import EXIT_PREEMPTED, Preempted, StopSignals, agreed_stop, resume_command
from exascale_climate.utils.log import JsonLinesWriter, get_logger
from exascale_climate.utils.progress import progress_bar
from exascale_climate.utils.runtime import World, apply_tf_threads

log = get_logger("train")


class TrainingDiverged(ExaclimateError):
    """Gradients stayed NaN/Inf for too many consecutive steps."""


@dataclass
class Position:
    """Where the run is: optimizer-loop steps done, epoch, and steps done inside that epoch."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    best_metric: float | None = None
    history: dict = field(default_factory=dict)


@dataclass
class Run:
    """Everything the loop touches, built once by `setup_run` (also used by the training benchmark)."""

    cfg: Config
    world: World
    run_dir: Path
    model: object
    optimizer: object
    scaler: object
    step: object
    eval_step: object
    input_shape: tuple
    train_files: list
    valid_files: list
    stats: object
    steps_per_epoch: int
    flops_per_sample: float | None

    def state_arrays(self) -> dict[str, list]:
        """Every variable a resumed run needs, grouped (saved by position)."""
        return {"model": list(self.model.variables), "optimizer": list(self.optimizer.variables),
                "scaler": self.scaler.variables, "lag": self.step.lag_variables}

    def all_variables(self) -> list:
        return [v for group in self.state_arrays().values() for v in group]


# --------------------------------------------------------------------------------------------- set-up
def _configure_tensorflow(cfg: Config):
    import keras
    import tensorflow as tf

    apply_tf_threads()
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(cfg.train.seed)
    return tf


def input_shape_for(cfg: Config, train_files, stats) -> tuple[int, int, int]:
    from exascale_climate.pipeline.readers import sample_grid

    grid = tuple(cfg.pipeline.crop) if cfg.pipeline.crop else sample_grid(train_files[0])
    return (int(grid[0]), int(grid[1]), len(stats.variables))


def per_sample_flops(model, input_shape) -> float | None:
    """Training FLOPs per sample (models.flops, analytic), for achieved FLOP/s in the metrics."""
    try:
        from exascale_climate.models.flops import count_flops

        return float(count_flops(model, input_shape, graph=False)["train_step"])
    except Exception as e:  # a FLOP count is a nice-to-have: never fail a training run over it
        log.warning("FLOP count unavailable (%s); achieved FLOP/s will not be reported", e)
        return None


def setup_run(cfg: Config, run_dir: str | Path, world: World | None = None) -> Run:
    """World, data files, model, optimizer, loss scaling, reducer and the compiled steps."""
    world = world or setup_world(cfg)
    tf = _configure_tensorflow(cfg)
    from exascale_climate.train.precision import cpu_float16_warning

    slow = cpu_float16_warning(cfg.train.precision, len(tf.config.list_physical_devices("GPU")))
    if slow and world.rank == 0:
        log.warning(slow)
    from exascale_climate.models import build_model
    from exascale_climate.pipeline.dataset import load_stats, split_files, steps_per_epoch
    from exascale_climate.train.losses import segmentation_loss
    from exascale_climate.train.optimizers import build_optimizer
    from exascale_climate.train.precision import LossScaler
    from exascale_climate.train.step import TrainStep, make_eval_step, resolve_jit_compile

    train_files = split_files(cfg, "train", world)
    try:
        valid_files = split_files(cfg, "valid", world)
    except ExaclimateError as e:
        log.warning("no validation data (%s); validation is skipped", e)
        valid_files = []
    stats = load_stats(cfg, world)
    input_shape = input_shape_for(cfg, train_files, stats)
    model = build_model(cfg.model, input_shape, cfg.train.precision)
    accumulation = cfg.train.gradient_accumulation
    optimizer = build_optimizer(cfg.optimizer, world.size, accumulation)
    scaler = LossScaler.from_config(cfg.train)
    reducer = GradientReducer.from_config(world, cfg.distributed)
    kind, gamma = cfg.train.loss, cfg.train.focal_gamma

    def loss_fn(y, logits, w):
        return segmentation_loss(y, logits, w, kind=kind, focal_gamma=gamma)

    if cfg.model.name == "semisup":  # the box detector's loss and validation (train/semisup.py)
        from exascale_climate.train import semisup

        loss_fn = semisup.make_loss_fn(cfg.model.semisup, cfg.model.num_classes)
        make_eval_step = semisup.eval_step_factory(cfg.model.semisup.score_threshold)
    step = TrainStep(model, optimizer, reducer, scaler, loss_fn, gradient_lag=cfg.distributed.gradient_lag,
                     jit_compile=resolve_jit_compile(cfg.train.jit_compile), apply_updates=not world.hybrid)
    if world.hybrid:  # the group's reduced gradient goes to the parameter servers (train/hybrid.py)
        from exascale_climate.train.hybrid import HybridStep

        step = HybridStep(step, world, model, cfg, scaler)
        if world.group != 0:  # one group validates (the servers' newest weights), the others keep computing
            valid_files = []
    updates = steps_per_epoch(cfg, len(train_files), world) // accumulation
    if updates < 1:
        raise ExaclimateError(f"train.gradient_accumulation: {accumulation} exceeds the batches per epoch")
    if world.hybrid:  # the group knows the servers' checkpoint steps (its lag buffers go with those pushes)
        total = updates * cfg.train.epochs
        step.set_schedule(updates, min(total, cfg.train.max_steps) if cfg.train.max_steps else total)
    return Run(cfg, world, Path(run_dir), model, optimizer, scaler, step,
               make_eval_step(model, cfg.model.num_classes), input_shape, train_files, valid_files, stats,
               updates, per_sample_flops(model, input_shape))


# Config keys that decide which variables a run has (their shapes, count or dtype): a checkpoint written with
# other values cannot be continued. Everything else (learning rate, epochs, ...) may change on --resume.
STATE_KEYS = ("model", "data.channels", "pipeline.crop", "train.precision", "optimizer.name",
              "optimizer.larc.enabled", "distributed.gradient_lag")


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(_flatten(value, name + ".") if isinstance(value, dict) else {name: value})
    return out


def config_mismatch(saved: dict, cfg: Config) -> list[str]:
    """`key: checkpoint X, this run Y` for every STATE_KEYS entry that differs."""
    a, b = _flatten(saved), _flatten(cfg.to_dict())
    keys = sorted(k for k in set(a) | set(b) if any(k == p or k.startswith(p + ".") for p in STATE_KEYS))
    return [f"{k} is {a.get(k)!r} there, {b.get(k)!r} in this run" for k in keys if a.get(k) != b.get(k)]


def world_change_message(state: dict, cfg: Config, size: int) -> str:
    """What changes when a checkpoint of N ranks is continued on M ranks (said, not refused)."""
    from exascale_climate.train.optimizers import scaled_learning_rate

    old = int(state["world_size"])
    per_update = cfg.train.batch_size * cfg.train.gradient_accumulation
    msg = (f"the checkpoint was written by {old} ranks, this run has {size}: the global batch changes from "
           f"{per_update * old} to {per_update * size} samples per update, each rank reads other files (the data "
           f"shards differ), so the run continues from the same weights, optimizer slots and loss scale but not "
           f"along the same path")
    if cfg.optimizer.scale_lr_by_world_size:
        acc = cfg.train.gradient_accumulation
        msg += (f"; the base learning rate scales with the ranks: {scaled_learning_rate(cfg.optimizer, old, acc):g} "
                f"-> {scaled_learning_rate(cfg.optimizer, size, acc):g}")
    return msg


def _restore_root(run: Run, latest: Path) -> Position:
    """Rank 0: check the checkpoint fits this run, assign its arrays, return where it was."""
    import yaml

    from exascale_climate.train.checkpoints import CONFIG, assign_arrays, load_arrays, read_state

    try:
        saved_cfg = yaml.safe_load((latest / CONFIG).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ExaclimateError(f"{latest / CONFIG}: unreadable ({e})") from None
    differ = config_mismatch(saved_cfg, run.cfg)
    if differ:
        raise ExaclimateError(f"{latest / CONFIG}: cannot resume with another model config: {'; '.join(differ)} "
                              f"(use the checkpoint's values or another --run-dir)")
    state = read_state(latest)
    arrays = load_arrays(latest)
    groups = run.state_arrays()
    if groups["lag"] and not state.get("lag_reduced"):
        # written before the buffers were stored reduced: rank 0's own gradient, not the average. Dropping it
        # costs one update; applying it would average rank 0's gradient N times.
        log.warning("%s: its gradient-lag buffers are one rank's, not reduced; the first step after the resume "
                    "applies no update", latest)
        arrays["lag"] = [np.zeros(v.shape, np.float32) for v in groups["lag"][:-1]] + [np.array(False)]
    for group, variables in groups.items():
        assign_arrays(latest, group, variables, arrays.get(group, []))
    if state.get("world_size", run.world.size) != run.world.size:
        log.warning("%s: %s", latest, world_change_message(state, run.cfg, run.world.size))
    position = Position(state["step"], state["epoch"], state["step_in_epoch"], state.get("best_metric"),
                        state.get("history", {}))
    log.info("resumed from %s (step %d, epoch %d, step %d of the epoch)", latest, position.step,
             position.epoch, position.step_in_epoch)
    return position


def restore_or_broadcast(run: Run, ckpt_manager, resume: bool) -> Position:
    """Rank 0 restores the latest checkpoint (with --resume), then every rank takes rank 0's state.

    Everything in a checkpoint is the same on every rank (weights, slots, loss scale, RNG states, data
    position, and the gradient-lag buffers stored *reduced*), so one broadcast restores every rank exactly. A
    refusal on rank 0 is broadcast too, so every rank stops with the same message instead of waiting.
    """
    position, error, restored = Position(), None, False
    if run.world.is_root and resume:
        latest = ckpt_manager.latest()
        if latest is None:
            log.warning("--resume: no checkpoint in %s; starting from scratch", ckpt_manager.directory)
        else:
            try:
                position, restored = _restore_root(run, latest), True
            except ExaclimateError as e:
                error = str(e)
    position, error, restored = broadcast_object(run.world, (position, error, restored), name="exaclimate_position")
    if error:
        raise ExaclimateError(error)
    broadcast_variables(run.world, run.all_variables())
    run.step.prereduced = restored and bool(run.step.gradient_lag)
    return position


# ------------------------------------------------------------------------------------------ validation
def validate(run: Run, watchdog=None) -> dict:
    """Mean and per-class IoU over the validation split; confusion matrices summed over all ranks."""
    from exascale_climate.pipeline.dataset import build_dataset
    from exascale_climate.train.metrics import iou_from_confusion

    n = run.cfg.model.num_classes
    cm = np.zeros((n, n), np.float64)
    if run.valid_files:
        ds = build_dataset(run.cfg, run.valid_files, run.stats, training=False, world=run.world)
        for x, y, _ in ds:
            cm += run.eval_step(x, y).numpy()
            if watchdog:
                watchdog.beat()
    cm = allreduce_numpy(run.world, cm, name="exaclimate_val_cm")
    per_class, mean = iou_from_confusion(cm)
    return {"val_mean_iou": mean, "val_iou": [float(v) for v in per_class], "val_pixels": float(cm.sum())}


# ------------------------------------------------------------------------------------------ reporting
class Reporter:
    """Rank 0's outputs: metrics.jsonl, TensorBoard scalars, events.log."""

    def __init__(self, run: Run):
        self.enabled = run.world.is_root
        self.metrics = self.tb = self.handler = None
        if not self.enabled:
            return
        import tensorflow as tf

        self.metrics = JsonLinesWriter(run.run_dir / "metrics.jsonl")
        self.tb = tf.summary.create_file_writer(str(run.run_dir / "tensorboard"))
        self.handler = logging.FileHandler(run.run_dir / "events.log")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("exaclimate").addHandler(self.handler)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        import tensorflow as tf

        self.metrics.write(record)
        with self.tb.as_default(step=int(record["step"])):
            for key, value in record.items():
                if key not in ("step", "epoch", "kind") and isinstance(value, (int, float)) and math.isfinite(value):
                    tf.summary.scalar(f"{record['kind']}/{key}", value)
        self.tb.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        self.metrics.close()
        self.tb.close()
        logging.getLogger("exaclimate").removeHandler(self.handler)
        self.handler.close()


class Window:
    """Running sums between two log lines: loss, steps, samples, time computing vs waiting for data."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.loss, self.steps, self.data_s, self.start = 0.0, 0, 0.0, time.perf_counter()

    def summary(self, run: Run) -> dict:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        loss = allreduce_numpy(run.world, np.array([self.loss / max(self.steps, 1)]), op="average",
                               name="exaclimate_window_loss")[0]
        cfg = run.cfg.train
        samples = self.steps * cfg.batch_size * cfg.gradient_accumulation * run.world.size
        out = {"loss": float(loss), "samples_per_s": samples / elapsed, "data_wait_fraction": self.data_s / elapsed}
        if run.flops_per_sample:
            out["flops_per_s"] = samples / elapsed * run.flops_per_sample
        return out


# ------------------------------------------------------------------------------------------ the loop
def _save(run: Run, ckpt_manager, position: Position, metric: float | None) -> None:
    """Rank 0 writes a checkpoint, refusing to persist non-finite weights. Every rank calls it: the
    gradient-lag buffers are reduced over the ranks first (see train.step)."""
    if run.world.hybrid:  # the parameter servers write hybrid checkpoints; group 0 keeps best/ (train/hybrid.py)
        if metric is not None:
            run.step.save_best(run, position, metric, ckpt_manager)
            position.best_metric = ckpt_manager.best_metric()
        return
    lag = run.step.reduced_lag()
    if not run.world.is_root:
        return
    for v in run.model.trainable_variables:
        if not np.all(np.isfinite(np.asarray(v.numpy(), dtype=np.float32))):
            raise TrainingDiverged(f"step {position.step}: weight {v.path} is NaN/Inf; no checkpoint written "
                                   f"(the last good one is {ckpt_manager.latest()})")
    state = {"epoch": position.epoch, "step_in_epoch": position.step_in_epoch, "input_shape": list(run.input_shape),
             "world_size": run.world.size, "history": position.history, **run.scaler.state(),
             "optimizer_iterations": int(run.optimizer.iterations.numpy()), "lag_reduced": bool(lag)}
    arrays = {**run.state_arrays(), "lag": lag}
    path = ckpt_manager.save(position.step, run.model, arrays, state, run.cfg, metric=metric)
    position.best_metric = ckpt_manager.best_metric()
    log.debug("checkpoint %s", path)


def _check_step(run: Run, out: dict, position: Position, streak: int) -> int:
    """Count consecutive non-finite steps; abort when lowering the scale cannot help any more."""
    if bool(out["finite"]):
        return 0
    streak += 1
    log.warning("step %d: non-finite gradients (loss %s, loss scale %g); update skipped", position.step,
                out["loss"], out["loss_scale"])
    loss_bad = not math.isfinite(float(out["loss"]))
    if streak >= run.cfg.train.max_bad_steps and (loss_bad or run.scaler.at_minimum()):
        raise TrainingDiverged(
            f"step {position.step}: loss/gradients were NaN/Inf for {streak} consecutive steps "
            f"(train.max_bad_steps={run.cfg.train.max_bad_steps}); stopped without writing a checkpoint")
    return streak


def _next_batches(iterator, count: int, position: Position):
    try:
        return [next(iterator) for _ in range(count)]
    except StopIteration:
        raise ExaclimateError(f"step {position.step}: the training data ran out mid-epoch (bad files skipped?); "
                              "set pipeline.strict to stop at the bad file instead") from None


def train(cfg: Config, run_dir: str | Path, resume: bool = False) -> dict:
    """Train as configured; returns the final metrics (the same dict on every rank)."""
    from exascale_climate.train.mlperf import MlLog

    run_dir = Path(run_dir)
    world = setup_world(cfg)
    if world.role == "server":  # hybrid mode: this rank is a parameter server
        from exascale_climate.train.hybrid import serve

        run_dir.mkdir(parents=True, exist_ok=True)
        return serve(cfg, run_dir, world, resume)
    if world.writes_run_dir:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    mllog = MlLog(cfg, run_dir, world.is_root)
    mllog.init_start()
    status = None
    try:
        result = _train(cfg, run_dir, world, resume, mllog)
        status = "success" if result.get("stop_reason") == "target" else "aborted"
        return result
    except BaseException:
        status = "aborted"
        raise
    finally:
        mllog.close(status if mllog.started else None)


def _train(cfg: Config, run_dir: Path, world: World, resume: bool, mllog) -> dict:
    from exascale_climate.train.checkpoints import CheckpointManager

    run = setup_run(cfg, run_dir, world)
    if world.writes_run_dir:  # the run keeps its normalisation statistics: predict/evaluate/track work from anywhere
        from exascale_climate.pipeline.dataset import stats_path
        from exascale_climate.train.rundir import keep_stats

        keep_stats(stats_path(cfg), run_dir)
    ckpts = CheckpointManager(run_dir, cfg.train.checkpoint.keep, cfg.train.checkpoint.keep_best)
    if world.is_root and not world.hybrid:
        ckpts.clean_temps()
    if world.hybrid:  # the servers hold the state: weights, version and position come from them
        position = Position(**run.step.join(resume).get("position") or {})
        if resume and position.step:
            log.info("resumed from the parameter servers' checkpoint: step %d, epoch %d, version %d", position.step,
                     position.epoch, run.step.version)
    else:
        position = restore_or_broadcast(run, ckpts, resume)
    d = cfg.distributed
    peers = PeerWatch.gather(world, run_dir, d.liveness, d.heartbeat_interval_s, d.heartbeat_stale_s) \
        if world.distributed else None
    reporter = Reporter(run)
    mllog.hyperparameters(world, len(run.train_files), len(run.valid_files))
    mllog.init_stop_run_start()
    try:
        result = _loop(run, ckpts, position, reporter, peers, mllog)
        if world.hybrid:
            run.step.close(stop=bool(result.get("stopped")))
        return result
    except Exception as e:
        if world.hybrid and isinstance(e, Preempted):  # the servers write the checkpoint when every group stopped
            run.step.close(stop=True, preempted=True)
        elif world.hybrid and not isinstance(e, DistributedError):
            run.step.close(stop=False, error=str(e).splitlines()[0][:300] if str(e) else type(e).__name__)
        import tensorflow as tf

        from exascale_climate.pipeline.readers import strict_failure

        if isinstance(e, tf.errors.OpError) and strict_failure() is not None:  # a bad file with --strict
            raise strict_failure() from e
        if world.distributed and isinstance(e, (tf.errors.OpError, RuntimeError)) and \
                not isinstance(e, ExaclimateError):
            last_good = f"last good checkpoint: {ckpts.latest() or 'none yet'} (continue with --resume)"
            failed = f"a collective failed at step {position.step}: {str(e).splitlines()[0][:160]}"
            lost = _lost_peers(peers)  # (says that this rank leaves on purpose)
            if lost:  # the same line as the watchdog thread's, and out at once (train/peers.py)
                leave("training", lost, f"; {last_good}; {failed}")
            raise DistributedError(f"rank {world.rank}: {failed}; {peers.unknown()}; {last_good}") from e
        raise
    finally:
        reporter.close()
        if peers is not None:
            peers.close()


def _lost_peers(peers, wait_s: float = 3.0) -> str | None:
    """Which peer died, for a failed collective: the connection may reset a moment before the process is gone
    (or before its heartbeat says so); a heartbeat that stopped changing needs its stale time."""

    peers.leave_note()
    if peers.by_beat:
        wait_s = max(wait_s, peers.stale_s + 2 * 0.5)
    deadline = time.monotonic() + wait_s
    # the launcher's SIGTERM (sent as soon as the rank died) must not end this wait unnamed: SIGKILL comes later
    # (nor, once a peer is named, the way out: the caller leaves at once, and peers.leave ignores it from there)
    previous = signal.signal(signal.SIGTERM, lambda *_: None) \
        if threading.current_thread() is threading.main_thread() else None
    message = None
    try:
        while True:
            message = peers.message(blocked_s=float("inf"))  # the collective failed: that is the blocked evidence
            if message or time.monotonic() > deadline:
                return message
            time.sleep(0.1)
    finally:
        if previous is not None and not message:
            signal.signal(signal.SIGTERM, previous)


def _loop(run: Run, ckpts, position: Position, reporter: Reporter, peers=None, mllog=None) -> dict:
    from exascale_climate.pipeline.dataset import build_dataset, epoch_summary
    from exascale_climate.pipeline.readers import new_tally

    cfg, world = run.cfg, run.world
    tcfg, ccfg = cfg.train, cfg.train.checkpoint
    accumulation = tcfg.gradient_accumulation
    total = run.steps_per_epoch * tcfg.epochs
    if tcfg.max_steps:
        total = min(total, tcfg.max_steps)
    last = {"step": position.step, "epoch": position.epoch}
    window, streak, saved_at, validated_at, stop = Window(), 0, position.step, -1, False
    stop_reason = None  # "target" | "time_budget" | None (epochs/max_steps ran out, or preempted)
    if mllog is None:
        from exascale_climate.train.mlperf import MlLog

        mllog = MlLog(cfg, run.run_dir, False)
    samples_per_step = tcfg.batch_size * accumulation * world.size
    train_samples = max(len(run.train_files), 1)
    preempted = None  # the signal number all ranks agreed to stop on (train/preempt.py)
    started, cpu_started = time.perf_counter(), time.process_time()
    log.info("training %s on %d rank(s): %d files from %s, %d steps/epoch, %d steps, input %s", cfg.model.name,
             world.size, len(run.train_files), run.train_files[0].parent, run.steps_per_epoch, total,
             run.input_shape)

    def evaluate_and_maybe_save(force_save: bool, reason: str):
        nonlocal saved_at, validated_at, stop, stop_reason
        paused = time.perf_counter()
        samples = position.step * samples_per_step
        epoch_num = round(samples / train_samples, 4)
        if run.valid_files:
            mllog.start("eval_start", epoch_num=epoch_num)
        metrics = validate(run, watchdog) if run.valid_files else {}
        validated_at = position.step
        if metrics:
            mllog.event("eval_accuracy", metrics["val_mean_iou"], epoch_num=epoch_num)
            mllog.end("eval_stop", epoch_num=epoch_num)
            position.history[str(position.step)] = metrics["val_mean_iou"]
            # seconds since the loop started, validation included (MLPerf's time-to-train clock)
            elapsed = time.perf_counter() - started
            # this rank's process CPU time (all its threads) over the same span: on a shared machine it is what
            # the run would have taken with a core per rank
            reporter.write({"kind": "valid", "step": position.step, "epoch": position.epoch, "samples": samples,
                            "train_seconds": elapsed, "cpu_seconds": time.process_time() - cpu_started, **metrics})
            log.info("step %d (%s): validation mean IoU %.4f, per class %s", position.step, reason,
                     metrics["val_mean_iou"], [round(v, 4) for v in metrics["val_iou"]])
            last.update(metrics)
            if tcfg.target_iou and metrics["val_mean_iou"] >= tcfg.target_iou:
                log.info("target IoU %.3f reached at step %d: stopping", tcfg.target_iou, position.step)
                stop, stop_reason = True, "target"
                last["time_to_target_s"] = elapsed
        if (tcfg.time_budget_s or tcfg.cpu_budget_s) and not stop:  # rank 0's clocks decide for every rank
            used = ((tcfg.time_budget_s and time.perf_counter() - started >= tcfg.time_budget_s) or
                    (tcfg.cpu_budget_s and time.process_time() - cpu_started >= tcfg.cpu_budget_s))
            over = broadcast_object(world, bool(used), name="exaclimate_budget")
            if over:
                log.info("time budget (%.0f s wall / %.0f s CPU) used at step %d: stopping", tcfg.time_budget_s,
                         tcfg.cpu_budget_s, position.step)
                stop, stop_reason = True, "time_budget"
        if force_save or stop:
            _save(run, ckpts, position, metrics.get("val_mean_iou"))
            saved_at = position.step
        window.start += time.perf_counter() - paused  # throughput figures count training time only

    timeout = group_stall_timeout_s(cfg.distributed)
    check_every = cfg.distributed.stop_check_every_steps
    def last_good() -> str:
        return f"last good checkpoint: {ckpts.latest() or 'none yet'} (continue with --resume)"

    straggle = cfg.distributed.straggler_delay_s if world.rank_in_job == cfg.distributed.straggler_rank else 0.0
    watchdog = Watchdog(timeout, first_timeout_s=10 * timeout, context=last_good, peers=peers) if world.distributed \
        else _NoWatchdog()
    if world.hybrid:  # progress beats also reach the parameter servers (a long validation is not a lost group)
        from exascale_climate.train.hybrid import Heartbeat

        watchdog = Heartbeat(watchdog, run.step)
    with watchdog, \
            progress_bar(f"train {cfg.model.name}", total) as advance, StopSignals() as signals:
        advance(position.step)
        while position.epoch < tcfg.epochs and position.step < total and not stop and not preempted:
            tally = new_tally()
            if position.step_in_epoch == 0:
                mllog.start("epoch_start", epoch_num=position.epoch + 1)
            ds = build_dataset(cfg, run.train_files, run.stats, training=True, world=world, epoch=position.epoch,
                               skip_batches=position.step_in_epoch * accumulation, tally=tally)
            iterator = iter(ds)
            while position.step_in_epoch < run.steps_per_epoch and position.step < total and not stop \
                    and not preempted:
                t0 = time.perf_counter()
                batches = _next_batches(iterator, accumulation, position)
                window.data_s += time.perf_counter() - t0
                t1 = time.perf_counter()
                out = {k: v.numpy() for k, v in run.step(batches).items()}
                log.debug("step %d: data %.3f s, compute %.3f s", position.step + 1, t1 - t0, time.perf_counter() - t1)
                position.step += 1
                position.step_in_epoch += 1
                if straggle:  # benchmark-only: this rank is the slow one
                    time.sleep(straggle)
                if world.hybrid:
                    stop = stop or bool(out["stop"])
                    if run.step.last_push:
                        reporter.write(run.step.last_push)
                watchdog.beat()
                advance(1)
                streak = _check_step(run, out, position, streak)
                window.loss += float(out["loss"]) if math.isfinite(float(out["loss"])) else 0.0
                window.steps += 1
                if position.step % tcfg.log_every_steps == 0 or position.step == total:
                    record = {"kind": "train", "step": position.step, "epoch": position.epoch,
                              "lr": float(out["lr"]), "loss_scale": float(out["loss_scale"]),
                              "skipped_steps": int(run.scaler.skipped_steps.numpy()), **window.summary(run)}
                    if world.hybrid:
                        record.update(run.step.window_fields())
                    last.update(record)
                    reporter.write(record)
                    window.reset()
                if tcfg.validate_every_steps and position.step % tcfg.validate_every_steps == 0:
                    evaluate_and_maybe_save(False, "periodic")
                # No periodic checkpoint while steps are being skipped: the next good step saves instead.
                if ccfg.every_steps and position.step - saved_at >= ccfg.every_steps and not streak:
                    _save(run, ckpts, position, None)
                    saved_at = position.step
                if position.step % check_every == 0 and position.step < total:  # same steps on every rank
                    preempted = agreed_stop(world, signals.signum)
            summary = epoch_summary(tally, position.epoch, world.rank)
            if summary:  # files failed mid-epoch: say how many samples the epoch really had
                log.warning("%s", summary)
                reporter.write({"kind": "epoch_reads", "step": position.step, "epoch": position.epoch,
                                "rank": world.rank, "samples": tally["slots"],
                                "distinct_samples": tally["slots"] - tally["repeats"],
                                "unreadable_files": tally["repeats"] + tally["empty"]})
            if position.step_in_epoch >= run.steps_per_epoch:  # the epoch is complete
                mllog.end("epoch_stop", epoch_num=position.epoch + 1)
                position.epoch += 1
                position.step_in_epoch = 0
                epoch_save = bool(ccfg.every_epochs) and position.epoch % ccfg.every_epochs == 0
                if not tcfg.validate_every_steps:
                    evaluate_and_maybe_save(epoch_save, f"end of epoch {position.epoch}")
                elif epoch_save:
                    _save(run, ckpts, position, None)
                    saved_at = position.step
        if preempted:  # no validation: the scheduler's grace period is short
            if saved_at != position.step:
                _save(run, ckpts, position, None)
                saved_at = position.step
        elif saved_at != position.step:
            if validated_at != position.step:
                evaluate_and_maybe_save(True, "final")
            else:
                _save(run, ckpts, position, last.get("val_mean_iou"))
                saved_at = position.step
    if preempted:
        name = signal.Signals(preempted).name
        log.warning("%s: stopped after step %d of %d, checkpoint %s written", name, position.step, total,
                    ckpts.latest())
        where = "written by the parameter servers when every group stopped" if world.hybrid else ckpts.latest()
        raise Preempted(f"stopped by {name} after step {position.step} of {total}; checkpoint "
                        f"{where}; continue with: {resume_command()} (exit status {EXIT_PREEMPTED})")
    result = {**last, "step": position.step, "epoch": position.epoch,
              "skipped_steps": int(run.scaler.skipped_steps.numpy()),
              "best_mean_iou": position.best_metric, "seconds": time.perf_counter() - started,
              "world_size": world.size, "samples": position.step * samples_per_step, "stop_reason": stop_reason,
              "stopped": stop}
    log.info("done: %d steps, %s", position.step,
             ", ".join(f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, float)))
    return result


class _NoWatchdog:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def beat(self):
        pass
