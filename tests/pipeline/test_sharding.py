"""Training shards: disjoint, covering, and a per-epoch order that is a permutation of the shard."""
import pytest

from exascale_climate.pipeline.sharding import epoch_order, samples_per_rank, shard, shard_owner


@pytest.mark.parametrize("size", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 5, 9])
def test_shards_are_disjoint_and_cover(size, n):
    items = list(range(n))
    shards = [shard(items, r, size) for r in range(size)]
    flat = [i for s in shards for i in s]
    assert sorted(flat) == items
    assert len(set(flat)) == len(flat)
    for r, s in enumerate(shards):
        assert all(shard_owner(i, size) == r for i in s)
        assert len(s) >= samples_per_rank(n, size)


def test_shard_rejects_a_rank_outside_the_world():
    with pytest.raises(ValueError):
        shard([1, 2], 2, 2)


def test_epoch_order_is_a_seeded_permutation():
    files = [f"f{i}" for i in range(8)]
    first = epoch_order(files, seed=3, epoch=0, rank=0)
    assert sorted(first) == files
    assert epoch_order(files, seed=3, epoch=0, rank=0) == first
    assert epoch_order(files, seed=3, epoch=1, rank=0) != first
    assert epoch_order(files, seed=3, epoch=0, rank=0, shuffle=False) == files
