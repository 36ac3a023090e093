"""Process runtime: threads per rank and a lazily imported Horovod, so one process runs without a launcher.

Horovod is only imported when the process was started by a launcher (horovodrun, mpirun, srun, jsrun) or when
asked for; `World` gives rank/size/local rank either way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from exascale_climate.utils.devices import select_devices
from exascale_climate.utils.log import env_size, get_logger

log = get_logger("runtime")

def local_size_from_env() -> int:
    for var in ("HOROVOD_LOCAL_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE", "JSM_NAMESPACE_LOCAL_SIZE"):
        v = os.environ.get(var, "")
        if v.isdigit() and int(v) > 0:
            return int(v)
    return 1


def configure_threads(threads_per_rank: int = 0) -> int:
    """Set TF/OMP thread counts to cores // ranks-on-this-node unless the user already set them.

    Must run before TensorFlow is imported; returns the intra-op thread count in force.
    """
    if threads_per_rank <= 0:
        threads_per_rank = max(1, (os.cpu_count() or 1) // local_size_from_env())
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(threads_per_rank))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", str(max(1, min(2, threads_per_rank))))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_rank))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return int(os.environ["TF_NUM_INTRAOP_THREADS"])


def apply_tf_threads() -> None:
    """Hand the env thread settings to TensorFlow (it reads only its own API, not the env, in TF 2.18)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(os.environ.get("TF_NUM_INTRAOP_THREADS", 0)))
        tf.config.threading.set_inter_op_parallelism_threads(int(os.environ.get("TF_NUM_INTEROP_THREADS", 0)))
    except RuntimeError:  # already initialised: keep what is in force
        pass


def node_index(rank: int, ranks_per_node: int, cross_rank: int) -> int:
    """A rank's node: rank // ranks_per_node for simulated nodes on one machine, else Horovod's cross rank."""
    return rank // ranks_per_node if ranks_per_node > 0 else cross_rank


def launched_distributed() -> bool:
    """True when a launcher started more than one rank (or Horovod's launcher started us)."""
    return "HOROVOD_RANK" in os.environ or env_size() > 1


@dataclass
class World:
    """Who this process is; `hvd` is the initialised horovod.tensorflow module or None (single process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    cross_rank: int = 0
    cross_size: int = 1
    hvd: object | None = None

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.hvd is not None and self.size > 1


_WORLD: World | None = None


def init_world(use_horovod: bool | None = None, process_sets=None) -> World:
    """Initialise Horovod once when launched with several ranks (or forced); otherwise a 1-rank world."""
    global _WORLD
    if _WORLD is not None:
        return _WORLD
    if use_horovod is None:
        use_horovod = launched_distributed()
    if not use_horovod:
        _WORLD = World()
        return _WORLD
    configure_threads()
    import horovod.tensorflow as hvd

    if process_sets is not None:
        hvd.init(process_sets=process_sets)
    else:
        hvd.init()
    _WORLD = World(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size(), hvd.cross_rank(), hvd.cross_size(), hvd)
    select_devices(_WORLD)  # one GPU per local rank, before TensorFlow creates its devices
    log.debug("horovod initialised: rank %d/%d local %d/%d", _WORLD.rank, _WORLD.size, _WORLD.local_rank, _WORLD.local_size)
    return _WORLD


def reset_world() -> None:
    """Forget the cached world (tests that init several times in one process)."""
    global _WORLD
    _WORLD = None
