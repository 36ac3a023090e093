"""Alpha-beta costs of gradient allreduce algorithms (seconds), the textbook formulas the performance model uses.

A message of n bytes between two ranks costs alpha + n * beta (alpha: latency, beta: seconds per byte = 1 /
bandwidth). p ranks; every function returns 0 for p <= 1 (nothing to exchange). Why closed forms: they are what
Thakur et al. (MPICH collectives) and NCCL's own documentation describe, they can be checked by hand, and the
model only needs the step time to a few percent.
"""
from __future__ import annotations

import math
from statistics import NormalDist


def ring(n: float, p: int, alpha: float, beta: float) -> float:
    """Ring allreduce (reduce-scatter + allgather): 2(p-1) alpha + 2 (p-1)/p n beta."""
    if p <= 1:
        return 0.0
    return 2 * (p - 1) * alpha + 2 * (p - 1) / p * n * beta


def tree(n: float, p: int, alpha: float, beta: float) -> float:
    """Pipelined (double binary) tree allreduce, NCCL's scheme at scale: reduce up, broadcast down the tree.

    Latency grows with the depth (2 ceil(log2 p) alpha); with pipelining each byte crosses a link once up and
    once down, so the bandwidth term is 2 n beta, independent of p.
    """
    if p <= 1:
        return 0.0
    return 2 * math.ceil(math.log2(p)) * alpha + 2 * n * beta


def reduce_scatter(n: float, p: int, alpha: float, beta: float) -> float:
    """Ring reduce-scatter (each rank ends with 1/p of the sum): (p-1) alpha + (p-1)/p n beta."""
    if p <= 1:
        return 0.0
    return (p - 1) * alpha + (p - 1) / p * n * beta


def allgather(n: float, p: int, alpha: float, beta: float) -> float:
    """Ring allgather of n bytes in total: same cost as reduce_scatter."""
    return reduce_scatter(n, p, alpha, beta)


def flat_algorithm(name: str):
    if name not in ALGORITHMS:
        raise ValueError(f"allreduce algorithm {name!r}: choose one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


ALGORITHMS = {"ring": ring, "tree": tree}


def flat(n: float, nodes: int, per_node: int, intra: tuple[float, float], inter: tuple[float, float],
         algorithm: str = "ring") -> float:
    """One allreduce over all nodes x per_node ranks, ignoring the node structure.

    Every step of the algorithm waits for its slowest link: with more than one node that is a network link, so
    the latency is the network's alpha and the bandwidth the slower of the two levels' beta.
    """
    p = nodes * per_node
    if nodes <= 1:
        return flat_algorithm(algorithm)(n, p, *intra)
    alpha = max(intra[0], inter[0])
    beta = max(intra[1], inter[1])
    return flat_algorithm(algorithm)(n, p, alpha, beta)


def hierarchical(n: float, nodes: int, per_node: int, intra: tuple[float, float], inter: tuple[float, float],
                 inter_algorithm: str = "ring") -> float:
    """Two levels: reduce-scatter inside each node, allreduce of each 1/g slice across nodes, allgather inside.

    The g = per_node ranks of a node run their inter-node allreduces of n/g bytes at the same time through one
    node network interface, so each sees g x the network's beta (inter[1] is per node). With one rank per node
    this is exactly the flat inter-node allreduce; on one node it is reduce-scatter + allgather (= ring).
    """
    g = per_node
    a_i, b_i = intra
    a_e, b_e = inter
    inside = reduce_scatter(n, g, a_i, b_i) + allgather(n, g, a_i, b_i)
    across = flat_algorithm(inter_algorithm)(n / g, nodes, a_e, b_e * g)
    return inside + across


def control_plane(p: int, alpha: float, kind: str = "tree") -> float:
    """Horovod's negotiation of one cycle: every rank tells the coordinator which tensors are ready.

    "coordinator": rank 0 receives p-1 messages one after another (Horovod before the paper's change);
    "tree": the paper's hierarchical control plane, a reduce and a broadcast over a tree (2 ceil(log2 p) alpha).
    """
    if p <= 1:
        return 0.0
    if kind == "coordinator":
        return (p - 1) * alpha
    if kind == "tree":
        return 2 * math.ceil(math.log2(p)) * alpha
    raise ValueError(f"control plane {kind!r}: choose coordinator or tree")


def expected_max_normal(p: int) -> float:
    """E[max of p standard normal variables] (Blom's approximation); 0 for one rank.

    A synchronous step ends when the slowest of p ranks is done: with per-rank step times of relative spread cv,
    the step takes about (1 + cv * expected_max_normal(p)) x the mean.
    """
    if p <= 1:
        return 0.0
    return NormalDist().inv_cdf((p - 0.375) / (p + 0.25))


def combined_spread(device_cv: float, jitter_cv: float) -> float:
    """Relative spread of one rank's step time from two independent parts: a persistent device-to-device spread
    (the same slow GPU every step) and step-to-step jitter (OS, network, I/O). Independent normal parts add in
    variance, so the spread is sqrt(device_cv^2 + jitter_cv^2); the per-step maximum over p ranks is then
    expected_max_normal(p) x that spread."""
    return math.hypot(device_cv, jitter_cv)
