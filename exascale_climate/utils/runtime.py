"""Process runtime: the one `World` (ranks, nodes, threads), with Horovod imported lazily so that one process
runs without a launcher.

Node membership comes from Horovod after `hvd.init`: every rank's host (the host name horovodrun gave it, else
the machine's name) is gathered once and checked against Horovod's local_rank/local_size, so the grouping is
right for block and round-robin placements alike. `distributed.ranks_per_node` / `--ranks-per-node` is only an
explicit override (simulated nodes on one machine, e.g. under mpirun, where every rank shares one host): it is
checked against what Horovod reports and a difference is logged with both values.

Before `hvd.init` (logging, thread counts, whether to start Horovod at all) only the launcher's environment
says who a process is: `launcher_world` is the one place that reads it.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import sys
from dataclasses import dataclass, field

from exascale_climate.errors import ConfigError
from exascale_climate.utils.devices import select_devices
from exascale_climate.utils.log import get_logger

log = get_logger("runtime")

# (rank, size, local rank, local size) variables of each launcher, most specific first
_LAUNCHERS = (
    ("horovod", "HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK", "HOROVOD_LOCAL_SIZE"),
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("pmix", "PMIX_RANK", "PMIX_SIZE", "", ""),
    ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"),
    ("jsrun", "JSM_NAMESPACE_RANK", "JSM_NAMESPACE_SIZE", "JSM_NAMESPACE_LOCAL_RANK", "JSM_NAMESPACE_LOCAL_SIZE"),
    ("pmi", "PMI_RANK", "PMI_SIZE", "", ""),
)


@dataclass
class World:
    """Who this process is; `hvd` is the initialised horovod.tensorflow module or None (single process).

    `node_of_rank[r]` is the node of rank r (nodes numbered in the order of their lowest rank); `node` and
    `nodes` are this rank's node and the node count (= Horovod's cross_rank / cross_size for the usual block
    placement, unless `ranks_per_node` overrides them).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    cross_rank: int = 0
    cross_size: int = 1
    hvd: object | None = None
    node_of_rank: tuple = ()
    hosts: tuple = ()  # the host name of every node, in node order
    ranks_per_node: int = 0  # the explicit override in force (0 = Horovod's grouping)
    launcher: str = field(default="", compare=False)
    # Hybrid mode (train/hybrid.py): this World is one compute group (Horovod initialised on the group's
    # communicator) or one parameter server (no Horovod). Global MPI ranks of every group and server; the
    # training data is sharded over all compute ranks (`data_rank` of `data_size`), collectives stay in the group.
    role: str = "worker"  # "worker" (computes) or "server" (parameter server, hybrid only)
    group: int = 0
    group_ranks: tuple = ()  # global ranks of every compute group; () = sync mode
    server_ranks: tuple = ()
    global_rank: int = -1  # -1 = the same as rank (sync)
    shard_rank: int = -1
    shard_size: int = 0
    comm: object = field(default=None, compare=False, repr=False)  # mpi4py COMM_WORLD (hybrid only)
    # hybrid: the node of every global rank (COMM_WORLD's hosts, or rank // ranks_per_node), numbered in the order
    # of their lowest rank like `exaclimate stage` numbers them: which node-local staged copy a rank reads
    global_node_of_rank: tuple = ()

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.hvd is not None and self.size > 1

    @property
    def hybrid(self) -> bool:
        return bool(self.group_ranks)

    @property
    def rank_in_job(self) -> int:
        """The launcher's rank (what `distributed.straggler_rank` names)."""
        return self.rank if self.global_rank < 0 else self.global_rank

    @property
    def writes_run_dir(self) -> bool:
        """The one rank that writes the run directory's config and statistics (group 0's root in hybrid)."""
        return self.is_root and self.group == 0 and self.role == "worker"

    @property
    def data_rank(self) -> int:
        """This rank's training-data shard (over all compute ranks; = rank in sync mode)."""
        return self.rank if self.shard_rank < 0 else self.shard_rank

    @property
    def data_size(self) -> int:
        return self.size if self.shard_size <= 0 else self.shard_size

    @property
    def node(self) -> int:
        return self.node_of_rank[self.rank] if self.node_of_rank else self.cross_rank

    @property
    def data_node(self) -> int:
        """The node whose staged copy this rank reads: its node in the whole job (a hybrid group's own `node`
        counts only the group's hosts, so group 1 alone on host B would be its "node 0")."""
        return self.global_node_of_rank[self.global_rank] if self.global_node_of_rank else self.node

    @property
    def nodes(self) -> int:
        return max(self.node_of_rank) + 1 if self.node_of_rank else self.cross_size

    @property
    def node_groups(self) -> list[list[int]]:
        """The ranks of every node, lowest rank first (the first is the node's leader)."""
        if not self.node_of_rank:
            return [list(range(self.size))]
        groups: dict[int, list[int]] = {}
        for rank, node in enumerate(self.node_of_rank):
            groups.setdefault(node, []).append(rank)
        return [groups[n] for n in sorted(groups)]

    def with_ranks_per_node(self, ranks_per_node: int) -> "World":
        """This world with simulated nodes of `ranks_per_node` consecutive ranks (0 = unchanged)."""
        if ranks_per_node <= 0 or ranks_per_node == self.ranks_per_node:
            return self
        if self.global_node_of_rank:  # hybrid: nodes of global ranks (the servers' last node may be partial)
            nodes = tuple(r // ranks_per_node for r in range(len(self.global_node_of_rank)))
            local = (tuple(nodes[r] for r in self.group_ranks[self.group]) if self.role == "worker" else (0,))
            order = {n: i for i, n in enumerate(dict.fromkeys(local))}
            return dataclasses.replace(self, global_node_of_rank=nodes, ranks_per_node=ranks_per_node,
                                       node_of_rank=tuple(order[n] for n in local),
                                       hosts=tuple(f"node{n}" for n in order))
        if self.size % ranks_per_node:
            raise ConfigError(f"distributed.ranks_per_node: {ranks_per_node} does not divide the {self.size} ranks")
        simulated = tuple(r // ranks_per_node for r in range(self.size))
        if self.node_of_rank and simulated != self.node_of_rank:
            log.warning("distributed.ranks_per_node=%d overrides what Horovod reports (%d node(s), %s ranks "
                        "per node): nodes are simulated as rank // %d", ranks_per_node, self.nodes,
                        "/".join(str(len(g)) for g in self.node_groups), ranks_per_node)
        return dataclasses.replace(self, node_of_rank=simulated, ranks_per_node=ranks_per_node,
                                   hosts=tuple(f"node{n}" for n in range(max(simulated) + 1)))


def launcher_world() -> World:
    """Who this process is by its launcher's environment (horovodrun, mpirun, srun, jsrun), before hvd.init.

    The only reader of launcher variables: logging and thread counts need the rank before Horovod exists.
    Each number is taken from the first launcher that sets it (srun --mpi=pmix sets PMIX_RANK but the size
    only as SLURM_NTASKS).
    """
    def first(column: int, positive: bool) -> tuple[int, str] | None:
        for row in _LAUNCHERS:
            value = os.environ.get(row[column], "") if row[column] else ""
            if value.isdigit() and (int(value) > 0 or not positive):
                return int(value), row[0]
        return None

    rank = first(1, False)
    if rank is None:
        return World()
    size, local_rank, local_size = first(2, True), first(3, False), first(4, True)
    return World(rank=rank[0], size=size[0] if size else 1, local_rank=local_rank[0] if local_rank else 0,
                 local_size=local_size[0] if local_size else 1, launcher=rank[1])


def current_rank() -> int:
    """This process's rank: the World's once Horovod is up, the launcher's before."""
    return (_WORLD or launcher_world()).rank_in_job


def current_world() -> World:
    """The initialised World, else the launcher's view (never starts Horovod)."""
    return _WORLD or launcher_world()


def configure_threads(threads_per_rank: int = 0) -> int:
    """Set TF/OMP thread counts to cores // ranks-on-this-node unless the user already set them.

    Must run before TensorFlow is imported; returns the intra-op thread count in force.
    """
    if threads_per_rank <= 0:
        threads_per_rank = max(1, (os.cpu_count() or 1) // max(1, launcher_world().local_size))
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


def launched_distributed() -> bool:
    """True when a launcher started more than one rank (or Horovod's launcher started us)."""
    w = launcher_world()
    return w.launcher == "horovod" or w.size > 1


def host_name() -> str:
    """This rank's host as the launcher named it (horovodrun -H gives every slot its host), else the machine's."""
    return os.environ.get("HOROVOD_HOSTNAME") or socket.gethostname()


def node_membership(hvd) -> tuple[tuple, tuple]:
    """(node of every rank, host of every node) from one allgather of (host, local_rank, local_size).

    Checked against Horovod: a host's ranks must be exactly its local_size ranks with local ranks 0..n-1. When
    they are not (two machines sharing a name), Horovod's cross_rank of each rank decides instead.
    """
    rows = hvd.allgather_object((host_name(), hvd.local_rank(), hvd.local_size(), hvd.cross_rank()),
                                name="exaclimate_world_hosts")
    order: dict[str, int] = {}
    for host, *_ in rows:
        order.setdefault(host, len(order))
    node_of_rank = tuple(order[host] for host, *_ in rows)
    consistent = True
    for host, node in order.items():
        members = [r for r, n in enumerate(node_of_rank) if n == node]
        consistent &= sorted(rows[r][1] for r in members) == list(range(len(members)))
        consistent &= all(rows[r][2] == len(members) for r in members)
    if not consistent:
        log.warning("host names %s do not match Horovod's local ranks; nodes follow Horovod's cross_rank",
                    sorted(order))
        node_of_rank = tuple(row[3] for row in rows)
        return node_of_rank, tuple(f"node{n}" for n in range(max(node_of_rank) + 1))
    return node_of_rank, tuple(order)


_WORLD: World | None = None


def launched_with_mpi() -> bool:
    """True under an MPI launcher (mpirun, srun --mpi, jsrun, horovodrun --mpi), False under Gloo or alone."""
    if os.environ.get("HOROVOD_GLOO_RENDEZVOUS_ADDR"):
        return False
    return launcher_world().launcher in ("openmpi", "pmix", "jsrun", "pmi") or \
        bool(os.environ.get("OMPI_COMM_WORLD_SIZE") or os.environ.get("PMIX_RANK"))


def hybrid_layout(size: int, groups: int, servers: int) -> tuple[tuple, tuple]:
    """(ranks of every compute group, server ranks): equal consecutive groups first, the servers last (so a
    block placement puts them on their own node when the ranks per node divide the compute ranks)."""
    compute = size - servers
    if compute < groups or compute % groups:
        raise ConfigError(f"distributed.groups: {size} ranks minus {servers} parameter server(s) leaves {compute} "
                          f"compute rank(s), which {groups} equal groups cannot split (launch groups x k + "
                          f"{servers} ranks)")
    per = compute // groups
    return (tuple(tuple(range(g * per, (g + 1) * per)) for g in range(groups)),
            tuple(range(compute, size)))


def _init_hybrid(groups: int, servers: int) -> World:
    """Split COMM_WORLD into the groups and the servers; Horovod runs on each group's own communicator.

    Why not Horovod process sets inside one Horovod world: Horovod negotiates every process set in one
    background loop over all ranks, so one dead rank stalls every group (measured: with sets [0,1] and [2,3],
    a SIGKILL of rank 1 stopped ranks 2 and 3 too). A group on its own communicator fails alone.
    """
    if not launched_with_mpi():
        raise ConfigError("distributed.mode: hybrid needs an MPI launch (mpirun, srun --mpi=pmix or "
                          "horovodrun --mpi); this job was started without MPI (Gloo or a single process)")
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    group_ranks, server_ranks = hybrid_layout(comm.Get_size(), groups, servers)
    me = comm.Get_rank()
    hosts_of_rank = comm.allgather(host_name())
    first = {h: i for i, h in enumerate(dict.fromkeys(hosts_of_rank))}
    mine = next((g for g, ranks in enumerate(group_ranks) if me in ranks), None)
    sub = comm.Split(mine if mine is not None else groups, me)
    common = dict(group_ranks=group_ranks, server_ranks=server_ranks, global_rank=me, comm=comm,
                  shard_size=sum(len(g) for g in group_ranks), launcher="mpi",
                  global_node_of_rank=tuple(first[h] for h in hosts_of_rank))
    if mine is None:
        sub.Free()
        return World(node_of_rank=(0,), hosts=(host_name(),), role="server", group=server_ranks.index(me),
                     shard_rank=0, **common)
    configure_threads()
    import horovod.tensorflow as hvd

    hvd.init(comm=sub)
    select_devices(World(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size()))
    nodes, hosts = node_membership(hvd)
    return World(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size(), hvd.cross_rank(), hvd.cross_size(),
                 hvd, node_of_rank=nodes, hosts=hosts, role="worker", group=mine, shard_rank=me, **common)


def finish_hybrid(grace_s: int = 30) -> None:
    """End a hybrid run's MPI before the interpreter does. Open MPI's MPI_Finalize waits for every rank of
    COMM_WORLD, a dead one too (even under `mpirun --enable-recovery`), so after a lost group the survivors would
    never exit (seen: group 0 and the server finished, wrote the report and the last checkpoint, and hung in
    ompi_mpi_finalize). Finalize here under an alarm: if it has not returned after `grace_s`, SIGALRM's default
    action ends the process (a Python timer cannot: mpi4py's Finalize holds the GIL). Everything the rank writes
    is written by then; the job's status comes from `train --status`. No-op outside hybrid mode."""
    if _WORLD is None or _WORLD.comm is None:
        return
    import signal

    from mpi4py import MPI

    if _WORLD.hvd is not None:
        _WORLD.hvd.shutdown()
    if MPI.Is_finalized():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(max(1, int(grace_s)))
    MPI.Finalize()
    signal.alarm(0)


def init_world(use_horovod: bool | None = None, process_sets=None, ranks_per_node: int = 0,
               hybrid: tuple[int, int] | None = None) -> World:
    """Initialise Horovod once when launched with several ranks (or forced); otherwise a 1-rank world.

    `ranks_per_node` > 0 overrides Horovod's node grouping (see the module docstring); later calls with 0 keep
    the world as it is.
    """
    global _WORLD
    if _WORLD is None and hybrid is not None:
        _WORLD = _init_hybrid(*hybrid)
    if _WORLD is None:
        if use_horovod is None:
            use_horovod = launched_distributed()
        if not use_horovod:
            _WORLD = World(node_of_rank=(0,), hosts=(host_name(),))
        else:
            configure_threads()
            import horovod.tensorflow as hvd

            if process_sets is not None:
                hvd.init(process_sets=process_sets)
            else:
                hvd.init()
            # one GPU per local rank, before any TensorFlow op (node_membership's allgather is one) creates devices
            select_devices(World(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size()))
            nodes, hosts = node_membership(hvd)
            _WORLD = World(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size(), hvd.cross_rank(),
                           hvd.cross_size(), hvd, node_of_rank=nodes, hosts=hosts, launcher="horovod")
            log.debug("horovod initialised: rank %d/%d local %d/%d node %d/%d (%s)", _WORLD.rank, _WORLD.size,
                      _WORLD.local_rank, _WORLD.local_size, _WORLD.node, _WORLD.nodes, _WORLD.hosts[_WORLD.node])
    _WORLD = _WORLD.with_ranks_per_node(ranks_per_node)
    return _WORLD


def reset_world() -> None:
    """Forget the cached world (tests that init several times in one process)."""
    global _WORLD
    _WORLD = None
