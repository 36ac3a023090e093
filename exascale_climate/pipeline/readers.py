"""Parallel sample readers feeding tf.data: reader threads or reader processes.

h5py serialises every call behind one global lock, so reader threads overlap only the work around the read
(validation, copies, tf.data's own ops); reader processes read truly in parallel but pay for sending the arrays
back. `exaclimate bench pipeline` measures both; `pipeline.reader_mode` picks one (docs/PIPELINE.md).

A file that fails to read is logged by name, remembered in `failed_files()` and, unless strict, its slot is
filled with the next readable file of the shard (every rank must run the same number of steps). That repeat is
counted in the epoch's tally (`new_tally()`), so the training log can say how many distinct samples an epoch really had.
"""
from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.util  # registers its own atexit hook now, so close_process_pool runs before it
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from exascale_climate.errors import DataError
from exascale_climate.pipeline.normalize import InPlaceNormalizer
from exascale_climate.utils.buffers import BufferPool, aligned_copy
from exascale_climate.utils.log import get_logger

log = get_logger("pipeline")

_failed: dict[str, str] = {}
_failed_lock = threading.Lock()
_strict: list[DataError] = []  # the error of a strict read, for strict_failure()
_pool = {"pool": None, "workers": 0}
_buffers = BufferPool()  # sample arrays reused once TensorFlow has let go of them


def failed_files() -> dict[str, str]:
    """Files skipped since the last reset, with the reason (for the training log and tests)."""
    with _failed_lock:
        return dict(_failed)


def reset_failed_files() -> None:
    with _failed_lock:
        _failed.clear()


def new_tally() -> dict[str, int]:
    """Counts for one epoch's reads: slots delivered, slots holding a repeat that stands in for an unreadable
    file, slots nothing readable could fill (dropped). Pass it to the reader; read it when the epoch is done."""
    return {"slots": 0, "repeats": 0, "empty": 0}


def _count_slot(tally: dict | None, data, errors) -> None:
    if tally is None:
        return
    with _failed_lock:
        if data is None:
            tally["empty"] += 1
        else:
            tally["slots"] += 1
            tally["repeats"] += bool(errors)


def strict_failure() -> DataError | None:
    """The DataError that stopped a strict read, if any: tf.data hands it to the training loop wrapped in a
    TensorFlow error, and the loop raises this one instead (one line naming the file and dataset)."""
    with _failed_lock:
        return _strict[0] if _strict else None


def _what(path: str, message: str) -> tuple[str | None, str]:
    """(field, message) from a DataError's text `path [field]: message` (it crossed a thread or process)."""
    rest = message[len(path):] if message.startswith(path) else ": " + message
    if rest.startswith(" [") and "]: " in rest:
        field, text = rest[2:].split("]: ", 1)
        return field, text
    return None, rest[2:] if rest.startswith(": ") else rest


def _note_failures(errors: list[tuple[str, str]], strict: bool) -> None:
    for path, message in errors:
        if strict:
            error = DataError(path, f"{_what(path, message)[1]} (pipeline.strict is set)", _what(path, message)[0])
            with _failed_lock:
                _strict[:] = [error]
            raise error
        with _failed_lock:
            _failed[path] = message
        log.warning("skipping unreadable sample: %s", message if path in message else f"{path}: {message}")


def read_pair(path: str, channels: list[str] | None, normalizer: InPlaceNormalizer | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """One sample's fields (H, W, C) float32 in `channels` order, normalised when asked, and labels (H, W)
    uint8, in pooled buffers that TensorFlow adopts without a copy."""
    from exascale_climate.data.samples import read_sample

    sample = read_sample(path, channels=channels, with_labels=True, empty=_buffers.empty, transform=normalizer)
    return aligned_copy(sample.data, np.float32), aligned_copy(sample.labels)


def _read_slot(candidates: list[str], channels: list[str], normalizer: InPlaceNormalizer | None):
    """The first readable file of `candidates` (a slot's file, then its replacements).

    Returns (data, labels, [(path, error)...]); errors are returned, not raised, because they cross thread and
    process boundaries.
    """
    errors = []
    for path in candidates:
        try:
            data, labels = read_pair(path, channels, normalizer)
        except (DataError, OSError, KeyError, ValueError) as e:
            errors.append((path, str(e)))
            continue
        return data, labels, errors
    return None, None, errors


def slot_candidates(paths: Sequence[str], reserve: Sequence[str], strict: bool) -> list[list[str]]:
    """For each slot: its file, then (unless strict) the reserve rotated to start after it, so a bad file is
    replaced deterministically and every rank still fills all its steps."""
    paths, reserve = [str(p) for p in paths], [str(p) for p in reserve]
    if strict or not reserve:
        return [[p] for p in paths]
    n = len(reserve)
    return [[p] + [reserve[(i + 1 + k) % n] for k in range(n) if reserve[(i + 1 + k) % n] != p]
            for i, p in enumerate(paths)]


def _empty(n_channels: int):
    return np.zeros((0, 0, n_channels), np.float32), np.zeros((0, 0), np.uint8)


def sample_grid(path: str | Path) -> tuple[int, int]:
    """The (H, W) grid of a sample from its labels (cheap: the fields are not read)."""
    from exascale_climate.data.samples import read_labels

    return tuple(read_labels(path).shape)


def _finish(ds, grid, n_channels):
    """Drop slots where nothing was readable and give the elements their static shapes."""
    import tensorflow as tf

    ds = ds.filter(lambda x, y, ok: ok)
    shape_x, shape_y = (*grid, n_channels), tuple(grid)
    return ds.map(lambda x, y, ok: (tf.ensure_shape(x, shape_x), tf.ensure_shape(y, shape_y)),
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def thread_reader(paths: Sequence[str], channels: list[str], grid, readers: int, strict: bool,
                  reserve: Sequence[str] = (), normalizer: InPlaceNormalizer | None = None, tally: dict | None = None):
    """tf.data map over slots with `readers` parallel calls (threads in this process)."""
    import tensorflow as tf

    n_channels = len(channels)
    slots = slot_candidates(paths, reserve, strict)

    def read(index):
        data, labels, errors = _read_slot(slots[int(index)], channels, normalizer)
        _note_failures(errors, strict)
        _count_slot(tally, data, errors)
        if data is None:
            return (*_empty(n_channels), False)
        return data, labels, True

    ds = tf.data.Dataset.range(len(slots)).map(
        lambda i: tf.numpy_function(read, [i], (tf.float32, tf.uint8, tf.bool), stateful=False),
        num_parallel_calls=readers, deterministic=True)
    return _finish(ds, grid, n_channels)


def _process_pool(workers: int):
    """One pool of reader processes per training process, reused across epochs (spawn: safe beside TF threads)."""
    if _pool["pool"] is None or _pool["workers"] != workers:
        close_process_pool()
        _pool["pool"] = multiprocessing.get_context("spawn").Pool(workers)
        _pool["workers"] = workers
    return _pool["pool"]


@atexit.register
def close_process_pool() -> None:
    """End the reader processes. `Pool.terminate()` alone can wait forever for the task queue's lock, held by an
    idle worker blocked in its `get()` (seen once at pytest's exit: py-spy showed `_help_stuff_finish`), so
    `close()` first sends every worker its end of work; a worker still busy after 10 s is killed, and then the
    pool is left to its daemon threads (terminate() would wait for that worker's task). It must run before
    multiprocessing's own exit hook, which would call terminate() on the pool: atexit runs hooks in reverse order
    of registration, hence the import of multiprocessing.util above this registration."""
    pool, _pool["pool"] = _pool["pool"], None
    if pool is None:
        return
    pool.close()
    deadline = time.monotonic() + 10.0
    killed = False
    for worker in list(pool._pool):  # the Process objects (multiprocessing offers no public handle)
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            worker.kill()
            killed = True
    if killed:  # terminate() would wait for the killed worker's task forever; the pool's threads are daemons
        pool._terminate.cancel()
    else:
        pool.terminate()


def _ordered_reads(slots: list[list[str]], channels, readers: int, strict: bool,
                   normalizer: InPlaceNormalizer | None, tally: dict | None = None) -> Iterator:
    """Slots in order, read by `readers` processes with a bounded number in flight."""
    pool = _process_pool(readers)
    in_flight = []
    n_channels = len(channels)
    position = 0
    window = 2 * readers
    while position < len(slots) or in_flight:
        while position < len(slots) and len(in_flight) < window:
            in_flight.append(pool.apply_async(_read_slot, (slots[position], channels, normalizer)))
            position += 1
        data, labels, errors = in_flight.pop(0).get()
        _note_failures(errors, strict)
        _count_slot(tally, data, errors)
        if data is None:
            yield (*_empty(n_channels), False)
        else:
            yield data, labels, True


def process_reader(paths: Sequence[str], channels: list[str], grid, readers: int, strict: bool,
                   reserve: Sequence[str] = (), normalizer: InPlaceNormalizer | None = None,
                   tally: dict | None = None):
    """tf.data from a generator that keeps `readers` reader processes busy, in deterministic order."""
    import tensorflow as tf

    n_channels = len(channels)
    slots = slot_candidates(paths, reserve, strict)
    signature = (tf.TensorSpec((None, None, n_channels), tf.float32), tf.TensorSpec((None, None), tf.uint8),
                 tf.TensorSpec((), tf.bool))
    ds = tf.data.Dataset.from_generator(lambda: _ordered_reads(slots, channels, readers, strict, normalizer, tally),
                                        output_signature=signature)
    return _finish(ds, grid, n_channels)


READERS = {"thread": thread_reader, "process": process_reader}
