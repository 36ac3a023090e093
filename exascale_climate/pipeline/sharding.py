"""Which rank reads which training file.

The assignment is fixed for a run (rank r reads files r, r+size, ... of the sorted list) and only the order
within a shard changes per epoch. Why fixed: node-local staging copies to each node only the files of its
ranks' shards (the paper's scheme); a per-epoch global reshuffle would need every file on every node.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, TypeVar

import numpy as np

T = TypeVar("T")


def shard(items: Sequence[T], rank: int, size: int) -> list[T]:
    """Rank `rank`'s disjoint share of `items` (sorted order, round-robin); all shares cover `items`."""
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank {rank} is not in a world of size {size}")
    return list(items)[rank::size]


def shard_owner(index: int, size: int) -> int:
    """The rank whose shard holds item `index` of the sorted list."""
    return index % size


def epoch_order(files: Sequence[Path], seed: int, epoch: int, rank: int, shuffle: bool = True) -> list[Path]:
    """This rank's files in this epoch's order: a full permutation seeded by (seed, epoch, rank)."""
    files = list(files)
    if not shuffle:
        return files
    rng = np.random.default_rng([seed, epoch, rank])
    return [files[i] for i in rng.permutation(len(files))]


def samples_per_rank(n_files: int, size: int) -> int:
    """Samples every rank can read in an epoch (the smallest shard), so all ranks run the same step count."""
    return n_files // size
