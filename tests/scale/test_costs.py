"""Allreduce cost formulas against hand-computed values."""
import math

import pytest

from exascale_climate.scale import costs


def test_ring_matches_the_textbook_formula():
    # 2(p-1) alpha + 2(p-1)/p n beta with p=4, n=1e6 B, alpha=10 us, beta=1 ns/B: 60 us + 1.5 ms
    assert costs.ring(1e6, 4, 1e-5, 1e-9) == pytest.approx(6e-5 + 1.5e-3, rel=1e-12)


def test_tree_latency_grows_with_depth_and_bandwidth_term_is_two_n_beta():
    # p=5: ceil(log2 5) = 3 levels, up and down: 6 alpha + 2 n beta
    assert costs.tree(1e6, 5, 1e-5, 1e-9) == pytest.approx(6e-5 + 2e-3, rel=1e-12)


def test_two_level_hierarchical_by_hand():
    # 3 nodes x 4 ranks, n = 1.2 MB; inside: reduce-scatter + allgather = 2 x (3 x 1 us + 3/4 x 1.2e6 x 0.1 ns)
    inside = 2 * (3 * 1e-6 + 0.75 * 1.2e6 * 1e-10)
    # across: 4 concurrent rings of n/4 = 3e5 B over 3 nodes, each at a quarter of the node bandwidth (4 ns/B)
    across = 2 * 2 * 1e-5 + 2 * 2 / 3 * 3e5 * 4e-9
    got = costs.hierarchical(1.2e6, 3, 4, (1e-6, 1e-10), (1e-5, 1e-9), "ring")
    assert got == pytest.approx(inside + across, rel=1e-12)


def test_hierarchical_reduces_to_flat_ring_with_one_rank_per_node():
    assert costs.hierarchical(5e6, 7, 1, (1e-6, 1e-10), (2e-5, 3e-9)) == pytest.approx(costs.ring(5e6, 7, 2e-5, 3e-9))


def test_flat_ring_across_nodes_pays_network_latency_every_step():
    # 2 nodes x 2 ranks: p = 4, every step limited by the network link
    got = costs.flat(1e6, 2, 2, (1e-6, 1e-10), (1e-5, 1e-9), "ring")
    assert got == pytest.approx(2 * 3 * 1e-5 + 2 * 3 / 4 * 1e6 * 1e-9)


@pytest.mark.parametrize("fn", [costs.ring, costs.tree])
def test_one_rank_exchanges_nothing(fn):
    assert fn(1e9, 1, 1.0, 1.0) == 0.0


def test_control_plane_coordinator_is_linear_tree_is_logarithmic():
    assert costs.control_plane(1001, 1e-6, "coordinator") == pytest.approx(1000e-6)
    assert costs.control_plane(1001, 1e-6, "tree") == pytest.approx(2 * math.ceil(math.log2(1001)) * 1e-6)
    assert costs.control_plane(1, 1e-6, "coordinator") == 0.0


def test_expected_max_normal_grows_slowly():
    values = [costs.expected_max_normal(p) for p in (1, 2, 10, 1000, 27360)]
    assert values[0] == 0.0
    assert values == sorted(values)
    assert values[1] == pytest.approx(0.56, abs=0.03)  # E[max of 2] = 1/sqrt(pi) = 0.564
    assert values[3] == pytest.approx(3.24, abs=0.05)  # tabulated E[max of 1000 normals] ~ 3.24
