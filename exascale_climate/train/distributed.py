"""Horovod set-up and gradient communication: flat or hierarchical allreduce, fp16 compression, a stall watchdog.

Why a hand-made hierarchical allreduce: Horovod's HOROVOD_HIERARCHICAL_ALLREDUCE only acts on GPU/NCCL builds
with several hosts. The paper's scheme (reduce inside each node, allreduce across one leader per node, broadcast
back inside the node) is built here on Horovod process sets, so it runs on any controller and on CPU. The nodes
are the World's (utils.runtime): Horovod's hosts, e.g. `horovodrun -H localhost:2,127.0.0.1:2` is 2 hosts on one
machine, or the checked `distributed.ranks_per_node` override (the only way under mpirun on one machine).
"""
from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exascale_climate.config import Config, DistributedConfig
from exascale_climate.utils.log import get_logger
from exascale_climate.utils.runtime import World, configure_threads, init_world

log = get_logger("distributed")

EXIT_STALLED = 3
# Horovod's background thread wakes every cycle (1 ms by default). On a CPU node whose cores all run ranks,
# that polling and the allreduce negotiation take the cores from the compute: bench train measured 1 -> 2 rank
# efficiency 0.64 at 1 ms and 0.88 at 10 ms (Tiramisu 384x576, 2 cores). GPU nodes keep Horovod's default.
CPU_CYCLE_TIME_MS = 10.0


def default_cycle_time_ms() -> float | None:
    """CPU_CYCLE_TIME_MS on nodes without an NVIDIA device, else None (Horovod's own default)."""
    return None if any(Path("/dev").glob("nvidia[0-9]*")) else CPU_CYCLE_TIME_MS


def horovod_environment(cfg: DistributedConfig) -> dict[str, str]:
    """Horovod's own knobs from the config (read by hvd.init, so they must be in the environment first)."""
    stall = group_stall_timeout_s(cfg)
    env = {
        # A rank that stops answering: warn after half the timeout, shut the job down after the timeout.
        "HOROVOD_STALL_CHECK_TIME_SECONDS": str(max(1, stall // 2)),
        "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": str(stall),
    }
    if cfg.fusion_threshold_mb is not None:
        env["HOROVOD_FUSION_THRESHOLD"] = str(int(cfg.fusion_threshold_mb * 1024 * 1024))
    cycle_time_ms = cfg.cycle_time_ms if cfg.cycle_time_ms is not None else default_cycle_time_ms()
    if cycle_time_ms is not None:
        env["HOROVOD_CYCLE_TIME"] = str(cycle_time_ms)
    if cfg.horovod_hierarchical:
        env["HOROVOD_HIERARCHICAL_ALLREDUCE"] = "1"
    if cfg.allreduce == "hierarchical":
        env["HOROVOD_DYNAMIC_PROCESS_SETS"] = "1"  # node groups are known only after init
    return env


def group_stall_timeout_s(cfg: DistributedConfig) -> int:
    """How long a rank may wait inside its group. Hybrid mode: 3x stall_timeout_s, because a group root may wait
    up to 2x for the servers (they hold an answer until a slow group acts or is dropped after stall_timeout_s)."""
    return cfg.stall_timeout_s * (3 if cfg.mode == "hybrid" else 1)


def setup_world(cfg: Config, use_horovod: bool | None = None) -> World:
    """Threads per rank, Horovod knobs, then Horovod itself (a 1-rank World without a launcher)."""
    configure_threads(cfg.distributed.threads_per_rank)
    for key, value in horovod_environment(cfg.distributed).items():
        os.environ.setdefault(key, value)
    d = cfg.distributed
    hybrid = (d.groups, d.parameter_servers) if d.mode == "hybrid" else None
    return init_world(use_horovod, ranks_per_node=d.ranks_per_node, hybrid=hybrid)


# ------------------------------------------------------------------------------------------ topology
@dataclass
class Topology:
    """Which ranks share a node; the leader of a node is its lowest rank."""

    nodes: list[list[int]]
    rank: int

    @property
    def my_node(self) -> list[int]:
        return next(n for n in self.nodes if self.rank in n)

    @property
    def leaders(self) -> list[int]:
        return [n[0] for n in self.nodes]

    @property
    def is_leader(self) -> bool:
        return self.my_node[0] == self.rank


def build_topology(world: World) -> Topology:
    """The World's node grouping (one source of truth for staging, the pipeline and the allreduce)."""
    return Topology(nodes=world.node_groups, rank=world.rank)


# ------------------------------------------------------------------------------------------ reducers
@dataclass
class GradientReducer:
    """Averages a list of gradient tensors over all ranks (inside a tf.function)."""

    world: World
    strategy: str = "flat"
    fp16_compression: bool = False
    topology: Topology | None = None
    _sets: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, world: World, cfg: DistributedConfig) -> "GradientReducer":
        world = world.with_ranks_per_node(cfg.ranks_per_node)  # a no-op when setup_world applied it already
        reducer = cls(world, cfg.allreduce, cfg.fp16_compression)
        if cfg.allreduce == "hierarchical" and world.distributed:
            reducer.topology = build_topology(world)
            reducer._register_process_sets()
        return reducer

    def _register_process_sets(self) -> None:
        """Every rank adds the same sets in the same order (a collective); sets equal to the world reuse it."""
        hvd, topo = self.world.hvd, self.topology
        everyone = list(range(self.world.size))
        for node in topo.nodes:
            if 1 < len(node) < self.world.size:
                ps = hvd.add_process_set(node)
                if self.world.rank in node:
                    self._sets["node"] = ps
            elif len(node) == self.world.size:
                self._sets["node"] = hvd.global_process_set
        if len(topo.nodes) > 1:
            leaders = topo.leaders
            ps = hvd.global_process_set if leaders == everyone else hvd.add_process_set(leaders)
            if topo.is_leader:
                self._sets["leaders"] = ps
        log.info("hierarchical allreduce: %d node(s) of %s ranks", len(topo.nodes),
                 sorted({len(n) for n in topo.nodes}))

    @property
    def compression(self):
        hvd = self.world.hvd
        return hvd.Compression.fp16 if self.fp16_compression else hvd.Compression.none

    def reduce(self, grads: list):
        if not self.world.distributed:
            return list(grads)
        if self.strategy == "hierarchical":
            return self._hierarchical(grads)
        return list(self.world.hvd.grouped_allreduce(list(grads), op=self.world.hvd.Average,
                                                     compression=self.compression, name="exaclimate_flat"))

    def _hierarchical(self, grads: list):
        """Sum inside the node, sum across node leaders, broadcast from the leader, divide by the world size.

        Gradients travel as one flat buffer so each stage is a single collective.
        """
        import tensorflow as tf

        hvd = self.world.hvd
        shapes = [g.shape for g in grads]
        dtypes = [g.dtype for g in grads]
        flat = tf.concat([tf.reshape(tf.cast(g, tf.float32), [-1]) for g in grads], axis=0)
        if "node" in self._sets:
            flat = hvd.allreduce(flat, op=hvd.Sum, compression=self.compression, name="exaclimate_hier_node",
                                 process_set=self._sets["node"])
        if "leaders" in self._sets:
            flat = hvd.allreduce(flat, op=hvd.Sum, compression=self.compression, name="exaclimate_hier_leaders",
                                 process_set=self._sets["leaders"])
        if "node" in self._sets and len(self.topology.nodes) > 1:
            flat = hvd.broadcast(flat, root_rank=self.topology.my_node[0], name="exaclimate_hier_bcast",
                                 process_set=self._sets["node"])
        flat = flat / float(self.world.size)
        sizes = [int(np.prod(s)) for s in shapes]
        parts = tf.split(flat, sizes)
        return [tf.cast(tf.reshape(p, s), d) for p, s, d in zip(parts, shapes, dtypes)]


# ------------------------------------------------------------------------------------------ helpers
def broadcast_variables(world: World, variables, root_rank: int = 0) -> None:
    """Make every rank start from rank 0's values (Keras 3 variables are unwrapped to their tf.Variable)."""
    if not world.distributed:
        return
    world.hvd.broadcast_variables(unwrap(variables), root_rank=root_rank)


def unwrap(variables) -> list:
    """Keras 3 variables -> their tf.Variable (what tape.gradient and Horovod understand); others unchanged."""
    import keras

    return [v.value if isinstance(v, keras.Variable) else v for v in variables]


def allreduce_numpy(world: World, array, op: str = "sum", name: str = "exaclimate_np") -> np.ndarray:
    """Sum (or average, max) a small host array over all ranks, e.g. confusion matrices."""
    array = np.asarray(array)
    if not world.distributed:
        return array
    import tensorflow as tf

    hvd = world.hvd
    ops = {"sum": hvd.Sum, "average": hvd.Average, "max": hvd.Max}
    out = hvd.allreduce(tf.constant(array.astype(np.float64)), op=ops[op], name=name)
    return out.numpy()


def broadcast_object(world: World, obj, root_rank: int = 0, name: str = "exaclimate_obj"):
    if not world.distributed:
        return obj
    return world.hvd.broadcast_object(obj, root_rank=root_rank, name=name)


class Watchdog:
    """Ends this process with EXIT_STALLED when no progress was reported for `timeout_s`, and with
    peers.EXIT_RANK_LOST as soon as a checked peer rank is gone (`peers`, a train.peers.PeerWatch).

    Why: a hung peer can leave a collective blocked forever on some controllers; a bounded failure lets the
    launcher (horovodrun, srun) tear the job down and the scheduler requeue it. A dead peer is named by the
    survivors themselves, before the launcher's teardown kills them (see train/peers.py).
    """

    def __init__(self, timeout_s: float, first_timeout_s: float | None = None, what: str = "training",
                 context=None, peers=None):
        self.context = context  # () -> str appended to the message, e.g. the last good checkpoint
        self.peers = peers
        self.timeout_s = float(timeout_s)
        self.first_timeout_s = float(first_timeout_s or timeout_s)
        self.what = what
        self._last = time.monotonic()
        self._beats = 0
        self._stop = threading.Event()
        self._wake = None  # (read fd, write fd, the previous wakeup fd)
        self._thread = threading.Thread(target=self._run, name="exaclimate-watchdog", daemon=True)

    def __enter__(self):
        self._last = time.monotonic()
        if self.peers is not None and threading.current_thread() is threading.main_thread():
            # A signal (the launcher's SIGTERM after a rank died) wakes the thread at once, even while the main
            # thread is blocked inside a TensorFlow op and cannot run Python signal handlers.
            r, w = os.pipe()
            os.set_blocking(r, False)
            os.set_blocking(w, False)
            try:
                self._wake = (r, w, signal.set_wakeup_fd(w, warn_on_full_buffer=False))
            except ValueError:
                os.close(r)
                os.close(w)
        self._thread.start()
        return self

    def __exit__(self, exc_type, *exc):
        self._stop.set()
        if self.peers is not None:  # a rank leaving on purpose is not a dead peer (train/peers.py)
            self.peers.leave_note("done" if exc_type is None else "error")
        if self._wake:
            r, w, previous = self._wake
            signal.set_wakeup_fd(previous)
            with contextlib.suppress(OSError):
                os.write(w, b"\0")
            self._thread.join(timeout=5)
            os.close(r)
            os.close(w)
            self._wake = None

    def beat(self) -> None:
        self._last = time.monotonic()
        self._beats += 1

    def _extra(self) -> str:
        try:
            return f"; {self.context()}" if self.context else ""
        except Exception:  # the message must go out whatever the context callback does
            return ""

    def _wait(self, seconds: float) -> bool:
        """Sleep up to `seconds` (woken early by a signal); True when stopped."""
        if not self._wake:
            return self._stop.wait(seconds)
        with contextlib.suppress(OSError, ValueError):
            select.select([self._wake[0]], [], [], seconds)
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake[0], 512)
        return self._stop.is_set()

    def check_peers(self) -> None:
        """Leave with EXIT_RANK_LOST, naming the lost rank(s) and the last good checkpoint, if a peer is gone."""
        from exascale_climate.train.peers import leave

        blocked = time.monotonic() - self._last  # how long the main thread has waited (a heartbeat check needs it)
        message = self.peers.message(blocked) if self.peers is not None else None
        if message:
            self.peers.leave_note()
            leave(self.what, message, self._extra())

    def _run(self) -> None:
        from exascale_climate.train.peers import POLL_S

        interval = min(1.0, self.timeout_s / 4, POLL_S if self.peers is not None else 1.0)
        while not self._wait(interval):
            self.check_peers()
            limit = self.timeout_s if self._beats else self.first_timeout_s
            idle = time.monotonic() - self._last
            if idle > limit:
                self.check_peers()
                if self.peers is not None:
                    self.peers.leave_note()
                log.error("%s made no progress for %.0f s (distributed.stall_timeout_s=%g): a rank died or hung; "
                          "exiting with code %d%s", self.what, idle, self.timeout_s, EXIT_STALLED, self._extra())
                os._exit(EXIT_STALLED)
