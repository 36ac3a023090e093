"""Hybrid synchronous/asynchronous training (Kurth et al., "Deep Learning at 15PF", SC17).

The ranks split into `distributed.groups` equal compute groups and `distributed.parameter_servers` server ranks
(the last ranks). Inside a group everything is the synchronous machinery of train/loop.py and train/step.py
(flat or hierarchical allreduce, gradient lag, LARC on the servers' optimizer, loss scaling): Horovod runs on the
group's own MPI communicator (utils.runtime), so a dead rank stalls only its group. Instead of applying its
averaged gradient, each group's root sends it, layer shard by layer shard, to the servers (mpi4py non-blocking
point-to-point), receives the newest weights and broadcasts them inside the group.

The servers hold the model sharded by layer (balanced by bytes) with the optimizer of their shard and apply the
groups' gradients in arrival order. The first server (the lead) decides that order and the others follow it
(ORDER messages), so every shard sees the same sequence of updates and a gradient has one version number:
staleness = server version at application minus the version the gradient was computed on. The lead holds a
gradient back while applying it would push another group's outstanding gradient beyond
`distributed.max_staleness` (the group waits for its reply); with max_staleness >= groups - 1 the oldest
outstanding gradient can always go, so this never deadlocks.

Checkpoints are the lead's: at a checkpoint step every group's reply is held until all live groups pushed that
step, then the servers' weights and optimizer slots are written (ckpt-<step>, the same names and step counts as
sync). A group silent for `distributed.stall_timeout_s` is dropped and named in `hybrid_report.json`; a server
that stops answering ends the job with ServerLost (the checkpoints are written atomically, so the last is intact).
"""
from __future__ import annotations

import json
import signal
import time
from collections import deque
from pathlib import Path

import numpy as np

from exascale_climate.config import Config
from exascale_climate.errors import DistributedError, ExaclimateError
from exascale_climate.train.preempt import EXIT_PREEMPTED, Preempted, resume_command
from exascale_climate.utils.log import JsonLinesWriter, get_logger
from exascale_climate.utils.runtime import World

log = get_logger("hybrid")

TAG_PUSH, TAG_REPLY, TAG_ORDER, TAG_SNAP, TAG_ABORT, TAG_BEAT = 11, 12, 13, 14, 15, 16
EXIT_GROUPS_LOST = 4
EXIT_SERVER_LOST = 5
REPORT = "hybrid_report.json"
SERVER_LOG = "servers.jsonl"
POLL_S = 0.002  # idle poll interval: MPI's blocking calls spin, and the servers share cores with the groups
SERVER_BEAT_S = 1.0  # a follower server tells the lead it is alive this often (a dead one is named, not its groups)


class ServerLost(DistributedError):
    exit_code = EXIT_SERVER_LOST


class GroupsLost(DistributedError):
    exit_code = EXIT_GROUPS_LOST


# ------------------------------------------------------------------------------------------ sharding
def layer_of(variable) -> str:
    path = getattr(variable, "path", None) or variable.name
    return path.rsplit("/", 1)[0] if "/" in path else path


def shard_by_layer(variables, servers: int) -> list[list[int]]:
    """Variable indices of every server: whole layers, largest first to the least-loaded server (bytes)."""
    layers: dict[str, list[int]] = {}
    for i, v in enumerate(variables):
        layers.setdefault(layer_of(v), []).append(i)
    size = {name: sum(int(np.prod(variables[i].shape)) * 4 for i in idx) for name, idx in layers.items()}
    load, shards = [0] * servers, [[] for _ in range(servers)]
    for name in sorted(layers, key=lambda n: (-size[n], layers[n][0])):
        k = min(range(servers), key=lambda s: (load[s], s))
        shards[k] += layers[name]
        load[k] += size[name]
    return [sorted(s) for s in shards]


def is_checkpoint_step(cfg: Config, step: int, steps_per_epoch: int, total: int) -> bool:
    """The loop's periodic checkpoint steps (every_steps, end of every N-th epoch), the final one excepted."""
    c = cfg.train.checkpoint
    if step >= total or step <= 0:
        return False
    return bool(c.every_steps and step % c.every_steps == 0) or \
        bool(c.every_epochs and step % steps_per_epoch == 0 and (step // steps_per_epoch) % c.every_epochs == 0)


def lag_key(group: int) -> str:
    """A group's gradient-lag buffers in a hybrid checkpoint: group 0's under sync's name, as the optimizer."""
    return "lag" if group == 0 else f"lag_g{group}"


def _settle(requests, seconds: float) -> None:
    """Wait for sends to complete, but never longer than `seconds` (the peer may be dead)."""
    deadline = time.monotonic() + seconds
    while requests and time.monotonic() < deadline:
        requests[:] = [r for r in requests if not r.test()[0]]
        if requests:
            time.sleep(POLL_S)


class Inbox:
    """Non-blocking receives of pickled messages (matched probe + irecv), kept in order per (source, tag).

    Why not iprobe + recv: a peer killed in the middle of a large (rendezvous) message has its envelope matched
    but its data never comes, and the blocking recv waits forever (seen: a group root hung in recv from a
    SIGKILLed server). A pending irecv from a dead peer is simply never completed; the timeouts decide."""

    def __init__(self, comm):
        self.comm = comm
        self.pending: dict[tuple[int, int], deque] = {}

    def poll(self, source: int | None = None, tag: int | None = None) -> list[tuple[int, int, object]]:
        """Every message from `source` with `tag` (None = any) completely received now: (source, tag, payload)."""
        from mpi4py import MPI

        status = MPI.Status()
        src = MPI.ANY_SOURCE if source is None else source
        tg = MPI.ANY_TAG if tag is None else tag
        while True:
            message = self.comm.improbe(source=src, tag=tg, status=status)
            if message is None:
                break
            key = (status.Get_source(), status.Get_tag())
            self.pending.setdefault(key, deque()).append(message.irecv())
        out = []
        for (s, t), queue in self.pending.items():
            if source not in (None, s) or tag not in (None, t):
                continue
            while queue:
                done, payload = queue[0].test()
                if not done:
                    break
                queue.popleft()
                out.append((s, t, payload))
        return out


# ------------------------------------------------------------------------------------------ group side
class GroupClient:
    """A group root's link to the servers: one message per step to every server, one reply from each."""

    def __init__(self, world: World, shards: list[list[int]], timeout_s: float):
        self.comm, self.world, self.shards = world.comm, world, shards
        self.servers = list(world.server_ranks)
        self.timeout_s = timeout_s
        self.seq = 0
        self.sent: list = []
        self.inbox = Inbox(self.comm)

    def _send(self, message: dict, grads=None, lead_extra: dict | None = None) -> None:
        _settle(self.sent, self.timeout_s)  # done by now unless a server died (its replies time out then)
        self.sent = []
        for k, rank in enumerate(self.servers):
            part = dict(message, seq=self.seq, group=self.world.group)
            part["grads"] = None if grads is None else [grads[i] for i in self.shards[k]]
            if k == 0 and lead_extra:
                part.update(lead_extra)
            self.sent.append(self.comm.isend(part, dest=rank, tag=TAG_PUSH))
        self.seq += 1

    def _replies(self, timeout_s: float) -> list[dict]:
        from mpi4py import MPI

        replies, deadline = {}, time.monotonic() + timeout_s
        while len(replies) < len(self.servers):
            got = False
            for k, rank in enumerate(self.servers):
                if k not in replies:
                    for _, _, payload in self.inbox.poll(rank, TAG_REPLY):
                        replies[k] = payload
                        got = True
            for _, _, payload in self.inbox.poll(self.servers[0], TAG_ABORT):  # the lead stops the job
                why = payload["why"]
                raise ServerLost(f"group {self.world.group}: {why}; the job stops, the last checkpoint in the run "
                                 f"directory is intact (continue with --resume)")
            if len(replies) == len(self.servers):
                break
            if time.monotonic() > deadline:
                missing = [self.servers[k] for k in range(len(self.servers)) if k not in replies]
                self.abort(f"no answer from parameter server rank(s) {missing}")
                raise ServerLost(f"group {self.world.group}: parameter server rank(s) {missing} did not answer "
                                 f"for {timeout_s:.0f} s (2 x distributed.stall_timeout_s): a server died or hung; the "
                                 f"job stops, the last checkpoint in the run directory is intact (continue with "
                                 f"--resume)")
            if not got:
                time.sleep(POLL_S)
        del MPI
        versions = {r["version"] for r in replies.values()}
        if len(versions) != 1:
            raise DistributedError(f"group {self.world.group}: the servers answered with versions {sorted(versions)}")
        return [replies[k] for k in range(len(self.servers))]

    def exchange(self, message: dict, grads=None, lead_extra=None, timeout_s: float | None = None) -> dict:
        """Send this step's message (and gradient) to every server; the merged reply (weights by position)."""
        self._send(message, grads, lead_extra)
        replies = self._replies(timeout_s or self.timeout_s)
        n = sum(len(s) for s in self.shards)
        weights = [None] * n
        for shard, reply in zip(self.shards, replies):
            for i, w in zip(shard, reply["weights"]):
                weights[i] = w
        return {**replies[0], "weights": weights}

    def alive(self) -> None:
        """A heartbeat for the lead (outside the ordered stream): this group is making progress (validating)."""
        self.beats = [r for r in getattr(self, "beats", []) if not r.test()[0]]
        self.beats.append(self.comm.isend({"kind": "alive", "group": self.world.group}, dest=self.servers[0],
                                          tag=TAG_PUSH))

    def done(self, step: int, stop: bool, error: str | None = None, lag: list | None = None,
             preempted: bool = False) -> None:
        """Tell the servers this group has finished (or failed, or stopped on a signal), with its lag buffers."""
        self._send({"kind": "done" if error is None else "failed", "step": step, "stop": stop, "error": error,
                    "preempted": preempted}, lead_extra={"lag": lag})
        deadline = time.monotonic() + 10
        while self.sent and not all(r.test()[0] for r in self.sent) and time.monotonic() < deadline:
            time.sleep(POLL_S)

    def abort(self, why: str) -> None:
        """Tell every server the job must stop (a server is gone): best effort, never waits long."""
        requests = [self.comm.isend({"group": self.world.group, "why": why}, dest=r, tag=TAG_ABORT)
                    for r in self.servers]
        deadline = time.monotonic() + 2
        while not all(r.test()[0] for r in requests) and time.monotonic() < deadline:
            time.sleep(POLL_S)


class HybridStep:
    """Wraps a TrainStep built with apply_updates=False: the group computes and reduces, the servers update.

    Called like TrainStep (same output dict, plus staleness and a stop flag); the weights it returns with are the
    newest the servers had when they answered.
    """

    def __init__(self, inner, world: World, model, cfg: Config, scaler):
        import tensorflow as tf

        self.inner, self.world, self.model, self.cfg, self.scaler = inner, world, model, cfg, scaler
        self.trainable = list(model.trainable_variables)
        self.shards = shard_by_layer(self.trainable, len(world.server_ranks))
        # the servers may hold an answer until another group acts or is dropped (stall_timeout_s): wait longer
        timeout = 2.0 * cfg.distributed.stall_timeout_s
        self.client = GroupClient(world, self.shards, timeout) if world.is_root else None
        self.step = 0
        self.version = 0
        self.lagged_on = 0  # with gradient lag, the version the buffered gradient (pushed next step) was computed on
        self.window: list[int] = []
        self.pushes = 0
        self.first = True
        self.last_push: dict | None = None  # this step's push, for metrics.jsonl (group root)
        self.steps_per_epoch, self.total = 1, 0  # set_schedule (the loop's numbers: checkpoint steps)
        self._info = tf.Variable(tf.zeros([3], tf.float64), trainable=False)

    # the loop reads these like TrainStep's
    @property
    def lag_variables(self):
        return self.inner.lag_variables

    @property
    def gradient_lag(self):
        return self.inner.gradient_lag

    def reduced_lag(self):
        return []

    def set_schedule(self, steps_per_epoch: int, total: int) -> None:
        self.steps_per_epoch, self.total = steps_per_epoch, total

    def _group_lag(self) -> list | None:
        """This group's lag buffers reduced over the group (a collective of the group), for the servers'
        checkpoint; None without gradient lag."""
        if not self.inner.gradient_lag:
            return None
        return [np.asarray(a) for a in self.inner.reduced_lag()]

    def _dump(self, name: str, arrays, **scalars) -> None:
        """distributed.debug_push_dir: what this group root pushed or received, for an outside replay (tests)."""
        folder = self.cfg.distributed.debug_push_dir
        if not folder:
            return
        import os

        path = Path(folder) / f"{name}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".tmp"), "wb") as f:
            np.savez(f, *[np.asarray(a) for a in arrays], **{k: np.asarray(v) for k, v in scalars.items()})
        os.replace(path.with_suffix(".tmp"), path)

    def _assign(self, weights) -> None:
        for v, w in zip(self.trainable, weights):
            v.assign(w)

    def _share(self, values: list[float]) -> list[float]:
        """Root's weights and (version, staleness, stop) to every member of the group (one broadcast each)."""
        from exascale_climate.train.distributed import broadcast_variables

        if self.world.distributed:
            self._info.assign(np.asarray(values, np.float64))
            broadcast_variables(self.world, self.trainable + [self._info], root_rank=0)
            values = [float(x) for x in self._info.numpy()]
        return values

    def join(self, resume: bool) -> dict:
        """First contact: the servers' current weights, version and (after a restore) position and scaler."""
        from exascale_climate.train.distributed import broadcast_object

        reply = None
        if self.client:
            reply = self.client.exchange({"kind": "hello", "step": 0, "resume": resume},
                                         timeout_s=10 * self.client.timeout_s)
            self._assign(reply["weights"])
            self._dump(f"join-g{self.world.group}-v{int(reply['version']):06d}", reply["weights"],
                       version=reply["version"])
        meta = None if reply is None else {k: reply.get(k) for k in ("version", "position", "scaler")}
        lag = None if reply is None else reply.get("lag")
        if meta is not None:
            meta["lag"] = lag is not None and bool(self.inner.gradient_lag)
        meta = broadcast_object(self.world, meta, name="exaclimate_hybrid_join")
        if meta["lag"]:  # the checkpoint's group-reduced buffers: the first step applies them as they are
            from exascale_climate.train.distributed import broadcast_variables

            if lag is not None:
                for v, a in zip(self.inner.lag_variables, lag):
                    v.assign(a)
            broadcast_variables(self.world, self.inner.lag_variables, root_rank=0)
            self.inner.prereduced = True
        self._share([meta["version"], 0, 0])
        self.version = self.lagged_on = int(meta["version"])
        if meta.get("scaler"):
            self.scaler.load_state(meta["scaler"])
        self.step = int((meta.get("position") or {}).get("step", 0))
        return meta

    def __call__(self, batches):
        import tensorflow as tf

        out = self.inner(batches)
        grads = out.pop("grads")
        push = bool(out["applied"].numpy())
        # with lag the pushed gradient is last step's, computed on the weights of that step
        computed_on, self.lagged_on = (self.lagged_on if self.gradient_lag else self.version), self.version
        self.step += 1
        info = [0.0, -1.0, 0.0]
        # at the servers' checkpoint steps the group's lag buffers go with the push (all members reduce them)
        lag = self._group_lag() if is_checkpoint_step(self.cfg, self.step, self.steps_per_epoch, self.total) \
            else None
        if self.client:
            arrays = [g.numpy() for g in grads] if push else None
            extra = {"nontrainable": [np.asarray(v.numpy()) for v in self.model.non_trainable_variables],
                     "scaler": self.scaler.state(), "loss": float(out["loss"].numpy()), "lag": lag}
            timeout = 10 * self.client.timeout_s if self.first else None
            reply = self.client.exchange({"kind": "push", "step": self.step, "version": computed_on},
                                         arrays, extra, timeout_s=timeout)
            if push:
                self._dump(f"push-g{self.world.group}-s{self.step:06d}", arrays, computed_on=computed_on,
                           reply_version=reply["version"], staleness=reply["staleness"])
            self._assign(reply["weights"])
            info = [reply["version"], reply["staleness"] if push else -1, float(bool(reply.get("stop")))]
        self.first = False
        version, staleness, stop = self._share(info)
        self.version = int(version)
        if staleness >= 0:
            self.window.append(int(staleness))
            self.pushes += 1
            if self.world.is_root:
                self.last_push = {"kind": "push", "group": self.world.group, "step": self.step,
                                  "staleness": int(staleness), "version": self.version}
        else:
            self.last_push = None
        out["staleness"] = tf.constant(float(staleness))
        out["stop"] = tf.constant(bool(stop))
        return out

    def heartbeat(self) -> None:
        """Called on every progress beat (steps, validation batches); at most every stall_timeout_s / 4 it tells
        the lead that this group is alive. Progress, not a timer: a group stuck in a collective sends nothing."""
        now = time.monotonic()
        if self.client and now - getattr(self, "_beat_at", 0.0) > self.cfg.distributed.stall_timeout_s / 4:
            self._beat_at = now
            self.client.alive()

    def window_fields(self) -> dict:
        """Staleness over the log window (the train record in metrics.jsonl)."""
        w, self.window = self.window, []
        return {"group": self.world.group, "version": self.version, "pushes": self.pushes,
                "staleness_mean": float(np.mean(w)) if w else 0.0, "staleness_max": int(max(w)) if w else 0}

    def close(self, stop: bool, error: str | None = None, preempted: bool = False) -> None:
        lag = self._group_lag() if error is None else None  # for the final checkpoint (a collective of the group)
        if self.client:
            self.client.done(self.step, stop, error, lag, preempted)

    def save_best(self, run, position, metric: float, ckpts) -> None:
        """Group 0 validates the weights the servers last sent it; when the mean IoU improved, its root writes
        exactly those weights as best/ (model and position; the optimizer slots live on the servers, and best/ is
        for evaluate/predict, never for --resume, which takes the servers' latest ckpt-<step>)."""
        import shutil

        from exascale_climate.train.checkpoints import CheckpointManager

        if not (self.world.is_root and self.cfg.train.checkpoint.keep_best):
            return
        best = ckpts.best_metric()
        if best is not None and metric <= best:
            return
        staging = CheckpointManager(run.run_dir / f".hybrid-best-{self.world.global_rank}", keep=1, keep_best=False)
        try:
            state = {"epoch": position.epoch, "step_in_epoch": position.step_in_epoch,
                     "input_shape": list(run.input_shape), "world_size": self.world.size,
                     "history": position.history, **self.scaler.state(), "mode": "hybrid", "version": self.version,
                     "group": self.world.group, "best_metric": metric}
            path = staging.save(position.step, self.model, {"model": list(self.model.variables)}, state, self.cfg,
                                metric=metric)
            ckpts._replace_best(path, metric)
        finally:
            shutil.rmtree(staging.directory.parent, ignore_errors=True)


# ------------------------------------------------------------------------------------------ server side
class Server:
    """One parameter server: its layer shard, that shard's optimizer, and (on the lead) the update order."""

    def __init__(self, cfg: Config, run_dir: Path, world: World, resume: bool):
        import keras
        import tensorflow as tf

        from exascale_climate.models import build_model
        from exascale_climate.pipeline.dataset import load_stats, split_files, steps_per_epoch
        from exascale_climate.train.checkpoints import CheckpointManager
        from exascale_climate.train.loop import _configure_tensorflow, input_shape_for
        from exascale_climate.train.optimizers import build_optimizer

        self.cfg, self.run_dir, self.world, self.resume = cfg, Path(run_dir), world, resume
        self.comm = world.comm
        self.inbox = Inbox(self.comm)
        self.index = world.group  # this server's number
        self.servers = list(world.server_ranks)
        self.lead = self.servers[0]
        self.is_lead = world.global_rank == self.lead
        self.roots = [g[0] for g in world.group_ranks]
        self.group_size = len(world.group_ranks[0])
        _configure_tensorflow(cfg)
        train_files = split_files(cfg, "train", world)
        stats = load_stats(cfg, world)
        # a server's node may hold no training shard (staged with --train-ranks): any local sample gives the grid
        local = [f for f in train_files if f.is_file()] or split_files(cfg, "valid", world)
        self.input_shape = input_shape_for(cfg, local, stats)
        self.model = build_model(cfg.model, self.input_shape, cfg.train.precision)
        self.trainable = list(self.model.trainable_variables)
        self.shards = shard_by_layer(self.trainable, len(self.servers))
        self.mine = [self.trainable[i] for i in self.shards[self.index]]
        self.factor = tf.Variable(1.0, trainable=False, dtype=tf.float32)
        acc = cfg.train.gradient_accumulation
        self.optimizer = build_optimizer(cfg.optimizer, self.group_size, acc, lr_factor=self.factor)
        self.optimizer.build(self.mine)
        self._apply = tf.function(lambda grads: self.optimizer.apply_gradients(
            zip([tf.identity(g) for g in grads], self.mine)), reduce_retracing=True)
        self.steps_per_epoch = steps_per_epoch(cfg, len(train_files), world) // acc
        total = self.steps_per_epoch * cfg.train.epochs
        self.total = min(total, cfg.train.max_steps) if cfg.train.max_steps else total
        self.ckpts = CheckpointManager(self.run_dir, cfg.train.checkpoint.keep, cfg.train.checkpoint.keep_best)
        self.version = 0
        self.updates = 0  # updates this server applied
        self.position = {"step": 0, "epoch": 0, "step_in_epoch": 0}
        self.scalers: dict = {}
        self.restored_updates: list = []
        self.lags: dict = {}  # group -> its group-reduced gradient-lag buffers (the lead's, for checkpoints)
        self.nontrainable = None
        del keras
        log.info("parameter server %d of %d (rank %d): %d of %d variables, %.2f MB of %.2f MB", self.index,
                 len(self.servers), world.global_rank, len(self.mine), len(self.trainable),
                 sum(int(np.prod(v.shape)) * 4 for v in self.mine) / 1e6,
                 sum(int(np.prod(v.shape)) * 4 for v in self.trainable) / 1e6)

    # ---------------------------------------------------------------------------------------- state
    def _optimizer_group(self, k: int) -> str:
        return "optimizer" if k == 0 else f"optimizer_s{k}"

    def restore(self, path: str | None) -> None:
        """Every server takes its shard's weights and optimizer slots from the checkpoint the lead chose."""
        from exascale_climate.train.checkpoints import assign_arrays, load_arrays, read_state

        if not path:
            return
        arrays, state = load_arrays(path), read_state(path)
        saved_servers = int(state.get("parameter_servers", 1))
        if saved_servers != len(self.servers):
            raise ExaclimateError(f"{path}: written with {saved_servers} parameter server(s), this run has "
                                  f"{len(self.servers)}: the optimizer slots are sharded differently (use "
                                  f"distributed.parameter_servers={saved_servers})")
        assign_arrays(path, "model", self.model.variables, arrays["model"])
        assign_arrays(path, self._optimizer_group(self.index), self.optimizer.variables,
                      arrays.get(self._optimizer_group(self.index), []))
        self.version = int(state.get("version", state.get("optimizer_iterations", state["step"])))
        self.position = {"step": state["step"], "epoch": state["epoch"], "step_in_epoch": state["step_in_epoch"]}
        self.scalers = {int(k): v for k, v in state.get("group_scalers", {}).items()}
        self.restored_updates = list(state.get("updates_per_group", []))
        if state.get("lag_reduced"):
            self.lags = {g: arrays[lag_key(g)] for g in range(len(self.roots)) if arrays.get(lag_key(g))}
        if not self.scalers and "loss_scale" in state:  # a sync checkpoint: every group takes its scale
            self.scalers = {g: {k: state[k] for k in ("loss_scale", "loss_scale_good_steps", "skipped_steps")}
                            for g in range(len(self.roots))}
        log.info("server %d restored %s (version %d, step %d)", self.index, path, self.version, self.position["step"])

    def weights(self) -> list[np.ndarray]:
        return [v.numpy() for v in self.mine]

    def apply(self, grads, factor: float) -> None:
        import tensorflow as tf

        self.factor.assign(factor)
        self._apply([tf.constant(g) for g in grads])
        self.version += 1
        self.updates += 1

    def snapshot(self) -> dict:
        return {"index": self.index, "weights": self.weights(), "optimizer": [np.asarray(v.numpy())
                                                                             for v in self.optimizer.variables]}

    # ---------------------------------------------------------------------------------------- messages
    def _incoming(self):
        """Every message waiting now: (source, tag, payload)."""
        return self.inbox.poll()

    def reply(self, group: int, staleness: int, stop: bool = False, extra: dict | None = None):
        message = {"version": self.version, "staleness": staleness, "weights": self.weights(), "stop": stop,
                   **(extra or {})}
        return self.comm.isend(message, dest=self.roots[group], tag=TAG_REPLY)


def serve(cfg: Config, run_dir: str | Path, world: World, resume: bool) -> dict:
    """The parameter-server rank's whole job."""
    from exascale_climate.train.preempt import StopSignals

    server = Server(cfg, run_dir, world, resume)
    # SIGUSR1/SIGTERM (the scheduler's warning or preemption) only set a flag: the lead asks the groups to stop,
    # writes the checkpoint when all stopped and leaves with EXIT_PREEMPTED (a follower waits for its order)
    with StopSignals() as signals:
        server.signals = signals
        return Lead(server).run() if server.is_lead else Follower(server).run()


class Follower:
    """Applies the groups' gradients in the order the lead sends, answers the groups, snapshots on request."""

    def __init__(self, server: Server):
        self.s = server
        self.buffer: dict = {}
        self.orders: deque = deque()
        self.held: dict = {}
        self.sent: list = []

    def beat(self) -> None:
        """Tell the lead this server is alive (it names a dead follower instead of blaming the groups)."""
        now = time.monotonic()
        if now - getattr(self, "_beat_at", 0.0) >= SERVER_BEAT_S:
            self._beat_at = now
            self.sent.append(self.s.comm.isend({"index": self.s.index}, dest=self.s.lead, tag=TAG_BEAT))

    def run(self) -> dict:
        s = self.s
        while True:
            self.beat()
            for source, tag, payload in s._incoming():
                if tag == TAG_ABORT:
                    log.error("server %d: stopped by group %s: %s", s.index, payload["group"], payload["why"])
                    raise ServerLost(f"parameter server {s.index}: the job stopped ({payload['why']})")
                if tag == TAG_ORDER:
                    self.orders.append(payload)
                elif tag == TAG_PUSH:
                    self.buffer[(payload["group"], payload["seq"])] = payload
            progressed = False
            while self.orders:
                order = self.orders[0]
                op = order["op"]
                if op == "message":
                    key = (order["group"], order["seq"])
                    if key not in self.buffer:
                        break
                    message = self.buffer.pop(key)
                    if message.get("grads") is not None and order["apply"]:
                        s.apply(message["grads"], order["factor"])
                    if order["hold"]:
                        self.held[order["group"]] = order["staleness"]
                    else:
                        self.sent.append(s.reply(order["group"], order["staleness"], order.get("stop", False)))
                elif op == "restore":
                    s.restore(order["path"])
                elif op == "snapshot":
                    self.sent.append(s.comm.isend(s.snapshot(), dest=s.lead, tag=TAG_SNAP))
                elif op == "release":
                    for g in order["groups"]:
                        self.sent.append(s.reply(g, self.held.pop(g, 0), order.get("stop", False)))
                elif op == "stop":
                    if order.get("error"):
                        raise ServerLost(f"parameter server {s.index}: the job stopped ({order['error']})")
                    _settle(self.sent, float(s.cfg.distributed.stall_timeout_s))
                    log.info("server %d: done after %d updates (version %d)", s.index, s.updates, s.version)
                    return {"server": s.index, "updates": s.updates, "version": s.version}
                self.orders.popleft()
                progressed = True
            self.sent = [r for r in self.sent if not r.test()[0]]
            if not progressed:
                time.sleep(POLL_S)


class Lead:
    """The first server: decides the update order (staleness bound, checkpoint barriers), watches the groups,
    writes checkpoints, servers.jsonl and the final report."""

    def __init__(self, server: Server):
        self.s = server
        self.cfg = server.cfg
        n = len(server.roots)
        self.status = ["joining"] * n  # joining, computing, pending, held, done, lost
        self.version_of = [0] * n  # the version each group's outstanding gradient is computed on
        self.last_heard = [time.monotonic()] * n
        self.pushed = [False] * n  # a group's first push may include compilation: a longer timeout until then
        self.steps = [0] * n
        self.pending: deque = deque()
        self.lost: dict = {}
        self.updates_per_group = [0] * n
        self.sent: list = []
        self.stop = False
        self.preempted: str | None = None  # the signal, or "group N", that stops the run for a requeue
        self.barrier: int | None = None
        self.log = JsonLinesWriter(server.run_dir / SERVER_LOG)
        self.timeout = float(self.cfg.distributed.stall_timeout_s)
        self.held_staleness: dict = {}
        self.ordered: list = []  # sends to the other servers (waited for at the end; replies to groups are not)
        self.early: list = []  # messages that arrived while a checkpoint gathered the shards
        # follower servers beat every SERVER_BEAT_S; silent for stall_timeout_s = lost (10x until the first beat)
        self.server_heard = {rank: time.monotonic() for rank in server.servers[1:]}
        self.server_seen: set = set()

    def order(self, **order) -> None:
        for rank in self.s.servers[1:]:
            self.ordered.append(self.s.comm.isend(order, dest=rank, tag=TAG_ORDER))

    def heard(self, source: int) -> None:
        """Any message from a follower server (a beat, a snapshot) shows it is alive."""
        if source in self.server_heard:
            self.server_heard[source] = time.monotonic()
            self.server_seen.add(source)

    def silent_servers(self, limit: float) -> list[int]:
        now = time.monotonic()
        return [r for r, t in self.server_heard.items()
                if now - t > (limit if r in self.server_seen else 10 * limit)]

    def dead_servers(self) -> str | None:
        """The error when a follower server stopped beating for stall_timeout_s (it died or hung)."""
        dead = self.silent_servers(self.timeout)
        if not dead:
            return None
        return (f"parameter server rank(s) {dead} did not answer the lead server for {self.timeout:.0f} s "
                f"(distributed.stall_timeout_s): a server died or hung")

    def abort_groups(self, why: str) -> None:
        """Tell every live group the job stops (it may be waiting for a dead server's reply)."""
        for g, state in enumerate(self.status):
            if state not in ("done", "lost"):
                self.sent.append(self.s.comm.isend({"why": why}, dest=self.s.roots[g], tag=TAG_ABORT))

    # ---------------------------------------------------------------------------------------- rules
    def admissible(self, g: int, message: dict) -> bool:
        """A gradient may be applied unless it would make another outstanding gradient too stale."""
        if message.get("grads") is None:
            return True
        limit = self.cfg.distributed.max_staleness
        return all(self.s.version + 1 - self.version_of[h] <= limit for h in range(len(self.status))
                   if h != g and self.status[h] in ("computing", "pending"))

    def handle(self, g: int, message: dict) -> None:
        """Apply (or pass on) one admitted message; tell the followers the same, in the same order."""
        s, d = self.s, self.cfg.distributed
        if message["kind"] == "hello":
            self.order(op="message", group=g, seq=message["seq"], apply=False, factor=1.0, hold=False,
                       reply=True, staleness=0)
            self.sent.append(s.reply(g, 0, self.stop, {"position": s.position, "scaler": s.scalers.get(g),
                                                       "lag": s.lags.get(g)}))
            self.status[g], self.version_of[g] = "computing", s.version
            self.last_heard[g] = time.monotonic()
            return
        step = int(message["step"])
        self.steps[g] = step
        grads = message.get("grads")
        hold = is_checkpoint_step(self.cfg, step, s.steps_per_epoch, s.total)
        stale, factor = -1, 1.0
        if grads is not None:
            stale = s.version - int(message["version"])
            factor = 1.0 / (1.0 + stale) if d.staleness_lr == "inverse" else 1.0
        self.order(op="message", group=g, seq=message["seq"], apply=grads is not None, factor=factor, hold=hold,
                   reply=True, staleness=stale, stop=self.stop)
        if grads is not None:
            s.apply(grads, factor)
            self.updates_per_group[g] += 1
            self.log.write({"kind": "update", "version": s.version, "group": g, "step": step, "staleness": stale,
                            "lr_factor": factor})
        if message.get("nontrainable") is not None:
            s.nontrainable = message["nontrainable"]
        if message.get("scaler"):
            s.scalers[g] = message["scaler"]
        if message.get("lag") is not None:
            s.lags[g] = message["lag"]
        self.version_of[g] = s.version
        self.last_heard[g] = time.monotonic()
        self.pushed[g] = True
        if hold:
            self.status[g] = "held"
            self.held_staleness[g] = stale
            self.barrier = step
        else:
            self.status[g] = "computing"
            self.sent.append(s.reply(g, stale, self.stop))

    # ---------------------------------------------------------------------------------------- checkpoints
    def checkpoint(self, step: int) -> Path:
        """Gather every server's shard and slots; write ckpt-<step> atomically (the lead's CheckpointManager)."""
        s = self.s
        self.order(op="snapshot", step=step)
        snaps, deadline = {0: s.snapshot()}, time.monotonic() + self.timeout
        while len(snaps) < len(s.servers):
            for source, tag, payload in s._incoming():
                self.heard(source)
                if tag == TAG_SNAP:
                    snaps[payload["index"]] = payload
                else:
                    self.early.append((source, tag, payload))
            if time.monotonic() > deadline or self.dead_servers():
                missing = [s.servers[k] for k in range(len(s.servers)) if k not in snaps]
                raise ServerLost(f"parameter server rank(s) {missing} did not answer: no snapshot for checkpoint "
                                 f"{step} (a server died or hung)")
            time.sleep(POLL_S)
        full = s.model.trainable_variables
        for k, snap in snaps.items():
            for i, w in zip(s.shards[k], snap["weights"]):
                full[i].assign(w)
        if s.nontrainable is not None:
            for v, w in zip(s.model.non_trainable_variables, s.nontrainable):
                v.assign(w)
        arrays = {"model": list(s.model.variables)}
        for k in sorted(snaps):
            arrays[s._optimizer_group(k)] = snaps[k]["optimizer"]
        for g, lag in sorted(s.lags.items()):  # every group's lag buffers, reduced over the group
            arrays[lag_key(g)] = lag
        live = [g for g in range(len(self.status)) if self.status[g] != "lost"]
        scaler = s.scalers.get(live[0] if live else 0) or {"loss_scale": 1.0, "loss_scale_good_steps": 0,
                                                            "skipped_steps": 0}
        spe = s.steps_per_epoch
        state = {"epoch": step // spe, "step_in_epoch": step % spe, "input_shape": list(s.input_shape),
                 "world_size": sum(len(g) for g in s.world.group_ranks), "history": {}, **scaler,
                 "optimizer_iterations": s.version, "lag_reduced": bool(s.lags), "mode": "hybrid",
                 "groups": len(s.roots), "parameter_servers": len(s.servers), "version": s.version,
                 "updates_per_group": self.updates_per_group, "group_scalers": s.scalers,
                 "lost_groups": sorted(self.lost)}
        path = s.ckpts.save(step, s.model, arrays, state, self.cfg, metric=None)
        self.log.write({"kind": "checkpoint", "step": step, "version": s.version, "path": str(path)})
        log.info("hybrid checkpoint %s at version %d", path, s.version)
        return path

    def release(self) -> None:
        held = [g for g in range(len(self.status)) if self.status[g] == "held"]
        self.order(op="release", groups=held, stop=self.stop)
        for g in held:
            self.sent.append(self.s.reply(g, self.held_staleness.pop(g, 0), self.stop))
            self.status[g] = "computing"
            self.last_heard[g] = time.monotonic()
        self.barrier = None

    # ---------------------------------------------------------------------------------------- the loop
    def run(self) -> dict:
        s = self.s
        s.ckpts.clean_temps()
        path = None
        if s.resume:
            latest = s.ckpts.latest()
            if latest is None:
                log.warning("--resume: no checkpoint in %s; starting from scratch", s.ckpts.directory)
            else:
                from exascale_climate.train.loop import config_mismatch
                import yaml

                differ = config_mismatch(yaml.safe_load((latest / "config.yaml").read_text()) or {}, self.cfg)
                if differ:
                    raise ExaclimateError(f"{latest / 'config.yaml'}: cannot resume with another model config: "
                                          f"{'; '.join(differ)}")
                path = str(latest)
        self.order(op="restore", path=path)
        s.restore(path)
        if len(s.restored_updates) == len(self.updates_per_group):
            self.updates_per_group = list(s.restored_updates)
        self.steps = [int(s.position["step"])] * len(self.steps)
        try:
            try:
                error = self._serve()
            except ServerLost as e:
                error = str(e)
            return self._finish(error)
        finally:
            self.log.close()
            _settle(self.ordered, self.timeout)
            _settle(self.sent, 1.0)  # a finished or lost group no longer listens

    def _serve(self) -> str | None:
        s = self.s
        n = len(self.status)
        while True:
            progressed = False
            incoming, self.early = self.early + s._incoming(), []
            for source, tag, payload in incoming:
                progressed = True
                self.heard(source)
                if tag == TAG_ABORT:
                    return f"group {payload['group']}: {payload['why']}"
                if tag != TAG_PUSH:
                    continue
                g = payload["group"]
                if self.status[g] == "lost":
                    continue
                if payload["kind"] == "alive":
                    self.last_heard[g] = time.monotonic()
                    continue
                if payload["kind"] in ("done", "failed"):
                    if payload.get("lag") is not None:
                        s.lags[g] = payload["lag"]
                    self.status[g] = "done" if payload["kind"] == "done" else "lost"
                    self.steps[g] = max(self.steps[g], int(payload["step"]))
                    if payload["kind"] == "failed":
                        self.lost[g] = f"failed: {payload['error']}"
                    self.stop = self.stop or bool(payload.get("stop"))
                    if payload.get("preempted") and not self.preempted:  # the others stop at their next step
                        self.preempted, self.stop = f"a signal to group {g}", True
                    continue
                self.pending.append((g, payload))
                self.status[g] = "pending" if payload["kind"] != "hello" else self.status[g]
            # apply in arrival order; a gradient that would break the staleness bound waits (others may pass)
            again = True
            while again:
                again = False
                for item in list(self.pending):
                    g, message = item
                    if self.admissible(g, message):
                        self.pending.remove(item)
                        self.handle(g, message)
                        again = progressed = True
                        break
            error = self.dead_servers()
            if error:
                return error
            signum = getattr(s, "signals", None) and s.signals.signum
            if signum and not self.preempted:
                self.preempted, self.stop = signal.Signals(signum).name, True
                log.warning("parameter server: %s; the groups stop at their next step", self.preempted)
            now = time.monotonic()
            # a group waiting for a silent server's reply is not lost: the server is (decided above, later)
            suspects = self.silent_servers(3 * SERVER_BEAT_S)
            for g in range(n):
                if self.status[g] in ("computing", "joining") and not suspects:
                    limit = self.timeout if self.pushed[g] else 10 * self.timeout
                    if now - self.last_heard[g] > limit:
                        self.status[g] = "lost"
                        self.lost[g] = f"no message for {now - self.last_heard[g]:.0f} s after step {self.steps[g]}"
                        log.error("group %d (ranks %s) lost: %s; the other groups go on", g,
                                  list(s.world.group_ranks[g]), self.lost[g])
                        self.log.write({"kind": "group_lost", "group": g, "step": self.steps[g],
                                        "ranks": list(s.world.group_ranks[g]), "reason": self.lost[g]})
                        self.pending = deque(p for p in self.pending if p[0] != g)
                        progressed = True
            live = [g for g in range(n) if self.status[g] not in ("done", "lost")]
            if self.barrier is not None and all(self.status[g] == "held" for g in live) and live:
                self.checkpoint(self.barrier)
                self.release()
                progressed = True
            if not live:
                return None
            self.sent = [r for r in self.sent if not r.test()[0]]
            self.ordered = [r for r in self.ordered if not r.test()[0]]
            if not progressed:
                time.sleep(POLL_S)

    def _finish(self, error: str | None) -> dict:
        s = self.s
        step = max(self.steps) if any(self.steps) else s.position["step"]
        if not error:
            try:
                self.checkpoint(step)
            except ServerLost as e:
                error = str(e)
        status = "server_lost" if error else "groups_lost" if self.lost else "preempted" if self.preempted else "ok"
        report = {"status": status, "groups": len(s.roots), "parameter_servers": len(s.servers),
                  "group_ranks": [list(g) for g in s.world.group_ranks], "server_ranks": s.servers,
                  "lost_groups": [{"group": g, "ranks": list(s.world.group_ranks[g]), "reason": why}
                                  for g, why in sorted(self.lost.items())],
                  "updates": s.version, "updates_per_group": self.updates_per_group, "final_step": step,
                  "exit_code": EXIT_SERVER_LOST if error else EXIT_GROUPS_LOST if self.lost else
                  EXIT_PREEMPTED if self.preempted else 0}
        if error:
            report["error"] = error
        from exascale_climate.utils.io import atomic_write_text

        atomic_write_text(s.run_dir / REPORT, json.dumps(report, indent=1) + "\n")
        if error:
            log.error("%s; stopping the job", error)
            self.abort_groups(error)
        self.order(op="stop", error=error)
        if error:
            raise ServerLost(f"hybrid job stopped: {error}; the last checkpoint is {s.ckpts.latest() or 'none'}")
        if self.lost:
            names = "; ".join(f"group {g} (ranks {list(s.world.group_ranks[g])}): {why}"
                              for g, why in sorted(self.lost.items()))
            raise GroupsLost(f"{len(self.lost)} of {len(s.roots)} group(s) lost: {names}; the other groups finished "
                             f"and the servers applied {s.version} updates; checkpoint {s.ckpts.latest()}; "
                             f"report {s.run_dir / REPORT}")
        if self.preempted:
            raise Preempted(f"hybrid run stopped by {self.preempted} at step {step}; checkpoint {s.ckpts.latest()}; "
                            f"continue with: {resume_command()} (exit status {EXIT_PREEMPTED})")
        log.info("hybrid run done: %d updates from %d groups %s", s.version, len(s.roots), self.updates_per_group)
        return {"updates": s.version, "updates_per_group": self.updates_per_group, "step": step}


def job_status(run_dir: str | Path) -> tuple[int, str]:
    """(exit code, one line) from a hybrid run's report: what a job script returns after the launcher (mpirun
    --enable-recovery keeps the job alive when a rank dies, but then always exits 0 itself)."""
    path = Path(run_dir) / REPORT
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ExaclimateError(f"{path}: no readable hybrid report ({e}); did the parameter servers finish?") from None
    lost = ", ".join(f"group {x['group']} (ranks {x['ranks']}): {x['reason']}" for x in report["lost_groups"])
    line = f"{report['status']}: {report['updates']} updates from {report['groups']} groups" + \
        (f"; lost {lost}" if lost else "") + (f"; {report['error']}" if report.get("error") else "")
    return int(report["exit_code"]), line


class Heartbeat:
    """The loop's watchdog, also telling the servers that the group progresses (validation can be long)."""

    def __init__(self, watchdog, step: HybridStep):
        self.watchdog, self.step = watchdog, step

    def __enter__(self):
        self.watchdog.__enter__()
        return self

    def __exit__(self, *exc):
        return self.watchdog.__exit__(*exc)

    def beat(self) -> None:
        self.watchdog.beat()
        self.step.heartbeat()
