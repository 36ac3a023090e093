"""Array buffers that TensorFlow can adopt without a copy.

TensorFlow wraps a numpy array returned from `tf.numpy_function` in place only when its data start on a
64-byte boundary (its CPU allocator's alignment); otherwise it copies every sample (4.8 ms per 56 MB here).
numpy's `empty` asks the kernel for huge pages on large arrays, where h5py's `ds[()]` allocates with
`numpy.zeros` and faults every 4 KiB page in (~25 ms per 56 MB sample on this VM); a pooled buffer that is
already mapped costs nothing (docs/PERFORMANCE.md).
"""
from __future__ import annotations

import sys
import threading

import numpy as np

ALIGNMENT = 64  # bytes; TensorFlow's Allocator::kAllocatorAlignment


def is_aligned(array: np.ndarray) -> bool:
    return array.ctypes.data % ALIGNMENT == 0


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data start on an ALIGNMENT-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def aligned_copy(array: np.ndarray, dtype=None) -> np.ndarray:
    """`array` itself when C-contiguous, aligned and of `dtype` already, else an aligned C-contiguous copy."""
    dtype = np.dtype(dtype or array.dtype)
    if array.dtype == dtype and array.flags.c_contiguous and is_aligned(array):
        return array
    out = aligned_empty(array.shape, dtype)
    out[...] = array
    return out


class BufferPool:
    """Aligned arrays handed out again once nobody else holds them, so a reader fills memory that is already
    mapped instead of page-faulting a fresh 56 MB every sample. TensorFlow keeps a reference to an array it
    adopted until its tensor dies, and every numpy view of it references the memory's owner, so a buffer is
    free when neither it nor its owner is referenced from outside the pool. Thread-safe; at most `limit`
    buffers per shape are kept (as many as were ever in flight at once: readers + prefetch, ~0.5 GB at
    768x1152x16), beyond that arrays are allocated and dropped as usual."""

    def __init__(self, limit: int = 16):
        self.limit = limit
        self._buffers: dict[tuple, list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def empty(self, shape, dtype) -> np.ndarray:
        key = (tuple(shape), np.dtype(dtype).str)
        with self._lock:
            kept = self._buffers.setdefault(key, [])
            for i in range(len(kept)):
                # 2 = the list's (or the array's own .base) reference + getrefcount's argument
                if sys.getrefcount(kept[i]) == 2 and sys.getrefcount(kept[i].base) == 2:
                    return kept[i]
            array = aligned_empty(shape, dtype)
            if len(kept) < self.limit:
                kept.append(array)
            return array
