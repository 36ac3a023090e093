"""One GPU per local rank, chosen right after Horovod starts and before TensorFlow creates its devices.

Why here and why then: TensorFlow fixes the devices a process uses the first time it runs an op; a rank that
has not narrowed its visible GPUs by then allocates memory on all of the node's GPUs and every rank computes on
GPU 0. Horovod's documented recipe is `tf.config.set_visible_devices(gpus[hvd.local_rank()], "GPU")` after
`hvd.init()`; `runtime.init_world` calls `select_devices` at that point. CPU-only machines are left untouched.
"""
from __future__ import annotations

import os
import socket

from exascale_climate.utils.log import get_logger

log = get_logger("devices")

_SELECTED: dict | None = None  # what select_devices decided in this process (for `exaclimate info`)


def gpu_for_local_rank(local_rank: int, local_size: int, n_visible: int) -> int | None:
    """Index (among the GPUs this process sees) that local rank `local_rank` uses, or None for CPU.

    - no GPU: None;
    - one visible GPU: 0 (the scheduler gave each task its own, e.g. `srun --gpus-per-task=1`, or one rank
      per node);
    - at least as many GPUs as ranks on the node: GPU `local_rank`;
    - fewer (but more than one): ranks share them round-robin, `local_rank % n_visible` (a warning says so).
    """
    if n_visible <= 0:
        return None
    if local_rank < 0 or local_size < 1 or local_rank >= local_size:
        raise ValueError(f"local rank {local_rank} is outside a node of {local_size} ranks")
    return local_rank % n_visible


def _describe(gpu) -> dict:
    import tensorflow as tf

    try:
        details = tf.config.experimental.get_device_details(gpu)
    except (RuntimeError, ValueError):
        details = {}
    capability = details.get("compute_capability")
    return {"device": gpu.name, "name": details.get("device_name", "unknown"),
            "compute_capability": ".".join(map(str, capability)) if capability else None}


def select_devices(world) -> dict:
    """Make one GPU visible to this rank (per `gpu_for_local_rank`); returns and remembers the choice."""
    global _SELECTED
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    index = gpu_for_local_rank(world.local_rank, world.local_size, len(gpus))
    chosen = _base_report(world, len(gpus), index)
    if index is None:
        _SELECTED = chosen
        return chosen
    if 1 < len(gpus) < world.local_size:
        log.warning("%d ranks on this node share %d GPUs: local rank %d uses GPU %d", world.local_size,
                    len(gpus), world.local_rank, index)
    try:
        tf.config.set_visible_devices(gpus[index], "GPU")
        tf.config.experimental.set_memory_growth(gpus[index], True)  # ranks sharing a GPU must not grab all
    except RuntimeError as e:  # TensorFlow already initialised its devices: too late to narrow them
        log.warning("rank %d: cannot pin GPU %d (%s); it sees %d GPUs", world.rank, index, e, len(gpus))
    chosen["gpus"] = [_describe(g) for g in tf.config.get_visible_devices("GPU")]
    log.debug("rank %d (local %d/%d) uses %s", world.rank, world.local_rank, world.local_size, chosen["gpus"])
    _SELECTED = chosen
    return chosen


def device_report(world) -> dict:
    """This rank's devices: what `select_devices` chose, or (single process, nothing pinned) what it sees."""
    if _SELECTED is not None and _SELECTED["rank"] == world.rank:
        return dict(_SELECTED)
    import tensorflow as tf

    report = _base_report(world, len(tf.config.list_physical_devices("GPU")), None)
    report["gpus"] = [_describe(g) for g in tf.config.get_visible_devices("GPU")]
    return report


def _base_report(world, physical_gpus: int, index: int | None) -> dict:
    """CUDA_VISIBLE_DEVICES shows which physical GPU a scheduler bound to the task (TensorFlow renumbers)."""
    return {"host": socket.gethostname(), "rank": world.rank, "local_rank": world.local_rank,
            "local_size": world.local_size, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "physical_gpus": physical_gpus, "gpu_index": index, "gpus": []}


def ranks_without_gpu(ranks: list[dict]) -> list[dict]:
    """The rank reports (from `exaclimate info`) that use no GPU."""
    return [r for r in ranks if not r["gpus"]]
