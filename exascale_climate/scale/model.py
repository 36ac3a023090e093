"""The performance model: step time, throughput and parallel efficiency of data-parallel training at N nodes.

Per step and device: compute (FLOPs per sample / sustained rate, + a fixed per-sample cost where fitted), the
gradient allreduce (scale/costs.py: ring, tree or two-level hierarchical; Horovod tensor fusion decides how many
messages, its cycle time how long the last one waits, its control plane what each negotiation costs), the part of
it that the backward pass (or, with gradient lag, the whole next step) hides, fp16 compression (half the bytes,
plus two casts), stragglers (the slowest of p ranks: a persistent device-to-device spread and step-to-step
jitter), input I/O behind prefetch (staged node-local or straight from the shared file system), and the SC17 hybrid scheme (synchronous groups + parameter servers).

Parallel efficiency = throughput / (compute devices x the throughput of one device alone), the paper's metric.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from exascale_climate.errors import ConfigError
from exascale_climate.scale import costs
from exascale_climate.scale.systems import System

BACKWARD_SHARE = 2.0 / 3.0  # models/flops.py: a training step is forward + 2x forward of backward work
MIB = 1 << 20


@dataclass
class Workload:
    """What one device trains: FLOPs per sample of the training step, gradient size, tensor count, batch."""

    model: str
    flops_per_sample: float
    parameters: int
    tensors: int = 1
    batch: int = 1  # per device
    precision: str = "float32"
    sample_bytes: float = 0.0  # input bytes per sample (fields + labels) for the I/O term
    dataset_samples: int = 0  # for the one-off staging time
    grid: str = ""

    @property
    def gradient_bytes(self) -> float:
        return 4.0 * self.parameters  # gradients are float32 (mixed precision keeps float32 master weights)


@dataclass
class Settings:
    """The choices a user makes before spending an allocation."""

    algorithm: str = "hierarchical"  # ring | tree (flat over all ranks) | hierarchical (two levels)
    inter_algorithm: str = "ring"  # the inter-node stage of the hierarchical allreduce: ring | tree
    gradient_lag: int = 0
    fp16_compression: bool = False
    fusion_threshold_mb: float | None = None  # None = the system's Horovod setting
    cycle_time_ms: float | None = None
    control_plane: str | None = None  # tree | coordinator; None = the system's
    overlap: bool = True  # communication may overlap the backward pass
    stragglers: bool = True  # the slowest rank sets the pace (variability.step_time_cv and jitter_cv)
    jitter: bool = True  # step-to-step jitter (variability.jitter_cv) on top of the persistent spread
    staging: bool = True  # read node-local staged data (else the shared file system every step)
    groups: int = 1  # hybrid scheme: synchronous groups
    parameter_servers: int = 0  # hybrid scheme: parameter-server nodes (part of the node count)
    rate: float | None = None  # sustained FLOP/s per device; None = the system's published/fitted/assumed

    def check(self) -> "Settings":
        if self.algorithm not in ("ring", "tree", "hierarchical"):
            raise ConfigError(f"scale.algorithm: {self.algorithm!r} is not allowed; choose ring, tree or hierarchical")
        if self.inter_algorithm not in costs.ALGORITHMS:
            raise ConfigError(f"scale.inter_algorithm: {self.inter_algorithm!r} is not allowed; choose ring or tree")
        if self.groups < 1 or self.parameter_servers < 0:
            raise ConfigError("scale.groups must be >= 1 and scale.parameter_servers >= 0")
        if self.rate is not None and not self.rate > 0:
            raise ConfigError(f"scale.rate: {self.rate!r} must be > 0 (FLOP/s per device)")
        return self


def device_rate(workload: Workload, system: System, settings: Settings) -> tuple[float, str]:
    """Sustained FLOP/s per device and where it comes from: --rate, the system's rates table, or peak x fraction."""
    if settings.rate:
        return settings.rate, "given (--rate)"
    for key in (f"{workload.model}/{workload.precision}", workload.model, f"any/{workload.precision}"):
        if key in system.rates:
            return system.rates[key], system.sources.get(f"rates.{key}", key)
    precision = "float16" if workload.precision != "float32" else "float32"
    peak, fraction = system[f"device.peak_flops_{precision}"], system[f"device.sustained_fraction_{precision}"]
    if peak is None or fraction is None:
        raise ConfigError(f"{system.path}: no rate for {workload.model}/{workload.precision} in rates and no "
                          f"device.peak_flops_{precision} x device.sustained_fraction_{precision}; give --rate FLOP/s")
    key = f"device.sustained_fraction_{precision}"
    return peak * fraction, f"device.peak_flops_{precision} x {key} ({system.sources.get(key)})"


def allreduce_seconds(nbytes: float, nodes: int, per_node: int, system: System, settings: Settings) -> float:
    """One allreduce of nbytes over nodes x per_node ranks with the chosen algorithm."""
    if settings.algorithm == "hierarchical":
        return costs.hierarchical(nbytes, nodes, per_node, system.intra, system.inter, settings.inter_algorithm)
    return costs.flat(nbytes, nodes, per_node, system.intra, system.inter, settings.algorithm)


def messages(workload: Workload, compute_s: float, fusion_bytes: float, cycle_s: float, grouped: bool = False) -> int:
    """Fused allreduce messages per step: at least one per fusion buffer's worth of bytes, and gradients that
    become ready in different cycles of the backward pass go in different messages (at most one per tensor).
    `grouped`: all gradients are handed over at once after the backward pass, so only the buffer size counts;
    so does a cycle time of 0 (no negotiation cycle, e.g. PyTorch DDP's size buckets)."""
    if fusion_bytes <= 0:
        return max(1, workload.tensors)
    by_size = math.ceil(workload.gradient_bytes / fusion_bytes)
    if grouped:
        return max(1, by_size)
    if cycle_s <= 0:  # no negotiation cycle (PyTorch DDP buckets, MPI): only the buffer size splits messages
        return max(1, by_size)
    by_cycles = math.ceil(BACKWARD_SHARE * compute_s / cycle_s)
    return max(1, by_size, min(workload.tensors, by_cycles))


def predict(workload: Workload, system: System, nodes: int, settings: Settings | None = None) -> dict:
    """The step-time breakdown, throughput and efficiency of `workload` on `nodes` nodes of `system`."""
    s = (settings or Settings()).check()
    if nodes < 1:
        raise ConfigError(f"nodes: {nodes} must be >= 1")
    g = system.devices_per_node
    ps_nodes = s.parameter_servers if s.groups > 1 or s.parameter_servers else 0
    worker_nodes = nodes - ps_nodes
    if worker_nodes < s.groups:
        raise ConfigError(f"nodes: {nodes} leaves {worker_nodes} worker node(s) for {s.groups} group(s) "
                          f"after {ps_nodes} parameter server(s)")
    group_nodes = worker_nodes // s.groups
    devices = group_nodes * s.groups * g
    p = group_nodes * g  # ranks in one synchronous allreduce

    rate, rate_source = device_rate(workload, system, s)
    per_sample = system["compute.overhead_s"] + workload.flops_per_sample / rate
    shared = system["node.shared_cores"]
    contention = max(1.0, nodes * g / shared) if shared else 1.0  # all ranks time-share the same cores
    compute = workload.batch * per_sample * contention

    nbytes = workload.gradient_bytes / (2 if s.fp16_compression else 1)
    cast = 0.0
    if s.fp16_compression and p > 1 and system["device.memory_bandwidth_Bps"]:
        cast = 2 * (4 + 2) * workload.parameters / system["device.memory_bandwidth_Bps"]  # fp32->fp16 and back
    fusion_mb = s.fusion_threshold_mb if s.fusion_threshold_mb is not None else system["horovod.fusion_threshold_mb"]
    fusion = fusion_mb * MIB
    cycle = (s.cycle_time_ms if s.cycle_time_ms is not None else system["horovod.cycle_time_ms"]) / 1e3
    grouped = system["horovod.gradients"] == "grouped"
    m = messages(workload, compute, fusion * (2 if s.fp16_compression else 1), cycle, grouped) if p > 1 else 0
    allreduce = m * allreduce_seconds(nbytes / m, group_nodes, g, system, s) if m else 0.0
    ctrl_alpha = system.inter[0] if group_nodes > 1 else system.intra[0]
    control = m * costs.control_plane(p, ctrl_alpha, s.control_plane or system["horovod.control_plane"])
    if p > 1:  # every tensor is negotiated and copied in and out of the fusion buffer
        control += workload.tensors * system["horovod.tensor_cost_s"]
    comm = allreduce + control + cast
    # Horovod's background thread wakes every cycle; where no core is spare (CPU nodes) each wake costs compute.
    polling = math.ceil(compute / cycle) * system["horovod.cycle_cost_s"] if p > 1 and cycle > 0 else 0.0

    window = 0.0
    if s.overlap:
        share = 1.0 if s.gradient_lag else BACKWARD_SHARE
        window = system["horovod.overlap"] * share * compute
    if p <= 1:
        exposed = 0.0
    elif s.gradient_lag:  # step t's allreduce runs during step t+1: only what does not fit is exposed
        exposed = max(0.0, comm + cycle / 2 - window)
    else:  # the last message can only start after the backward pass, and waits for the next cycle
        exposed = max(comm - window, comm / m) + cycle / 2

    cv = system["variability.step_time_cv"] if s.stragglers else 0.0
    jitter = system["variability.jitter_cv"] if s.stragglers and s.jitter else 0.0
    spread = costs.combined_spread(cv, jitter)
    straggle = spread * costs.expected_max_normal(p) * compute  # a step waits for the slowest rank of its group

    io_exposed = staging = 0.0
    node_bytes = g * workload.batch * workload.sample_bytes
    if s.staging and system["io.local_read_Bps"]:
        io_exposed = max(0.0, node_bytes / system["io.local_read_Bps"] - compute)
    elif not s.staging and system["io.fs_read_Bps"]:
        per_node = system["io.fs_read_Bps"] / nodes
        if system["io.fs_node_read_Bps"]:
            per_node = min(per_node, system["io.fs_node_read_Bps"])
        io_exposed = max(0.0, node_bytes / per_node - compute)
    if s.staging and system["io.fs_read_Bps"] and workload.dataset_samples:
        fs = system["io.fs_read_Bps"]
        if system["io.fs_node_read_Bps"]:
            fs = min(fs, nodes * system["io.fs_node_read_Bps"])
        staging = workload.dataset_samples * workload.sample_bytes / fs  # every file read once, then exchanged

    step = compute + polling + exposed + straggle + io_exposed
    samples_per_s = devices * workload.batch / step
    ps_bound, ps_round_trip = None, 0.0
    if s.parameter_servers:
        # Group root <-> parameter servers: send the gradient, receive the weights, sharded over the servers.
        a_e, b_e = system.inter
        ps_round_trip = 2 * (a_e + workload.gradient_bytes * b_e)  # through the group root's one interface
        step += ps_round_trip
        samples_per_s = devices * workload.batch / step
        # Every update moves the gradient in and the weights out of the servers: their bandwidth caps updates/s.
        max_updates = s.parameter_servers / (2 * workload.gradient_bytes * b_e)
        ps_bound = max_updates * p * workload.batch
        samples_per_s = min(samples_per_s, ps_bound)
    single = workload.batch / (workload.batch * per_sample)
    return {
        "nodes": nodes, "devices": devices, "ranks_per_allreduce": p, "batch_per_device": workload.batch,
        "compute_s": compute, "allreduce_s": allreduce, "control_plane_s": control, "cast_s": cast,
        "communication_s": comm, "horovod_polling_s": polling, "overlap_window_s": window,
        "communication_exposed_s": exposed,
        "stragglers_s": straggle, "step_spread": spread, "parameter_server_s": ps_round_trip, "io_exposed_s": io_exposed,
        "staging_s": staging, "step_s": step,
        "messages": m, "gradient_bytes": nbytes, "samples_per_s": samples_per_s,
        "flops_per_s": samples_per_s * workload.flops_per_sample, "efficiency": samples_per_s / (devices * single),
        "parameter_server_bound_samples_per_s": ps_bound, "rate_flops": rate, "rate_source": rate_source,
    }


def sweep(workload: Workload, system: System, node_counts: list[int], settings: Settings | None = None) -> dict:
    """predict() at every node count, with the inputs that produced it (what the JSON output holds)."""
    settings = settings or Settings()
    rows = [predict(workload, system, n, settings) for n in node_counts]
    return {"system": system.name, "system_file": system.path, "workload": asdict(workload),
            "settings": asdict(settings), "rows": rows}


def ablate(workload: Workload, system: System, nodes: int, settings: Settings,
           switches: dict[str, dict]) -> dict[str, float]:
    """Efficiency with each mechanism switched off in turn: {"as given": e, name: e_without, ...}."""
    out = {"as given": predict(workload, system, nodes, settings)["efficiency"]}
    for name, change in switches.items():
        out[name] = predict(workload, system, nodes, replace(settings, **change))["efficiency"]
    return out
