"""System descriptions for the performance model: small YAML files in which every number carries its source.

A number is written `{value: 23.0e9, source: "where it comes from"}`; a value that is an assumption says so in
its source. Bundled systems live in scale/systems/*.yaml (`--system summit`); `exaclimate scale fit` writes one
for this host. A missing, non-numeric, negative or unsourced number is a one-line error naming file and key.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from exascale_climate.errors import ConfigError

SYSTEM_DIR = Path(__file__).parent / "systems"

# (dotted key, required, allow zero, default)
NUMBERS = (
    ("node.devices", True, False, None),
    ("node.shared_cores", False, False, None),  # ranks of all nodes time-share these cores (simulated hosts)
    ("device.peak_flops_float32", True, False, None),
    ("device.peak_flops_float16", False, False, None),
    ("device.sustained_fraction_float32", False, False, None),  # of peak, when no published/fitted rate
    ("device.sustained_fraction_float16", False, False, None),
    ("device.memory_bandwidth_Bps", False, False, None),
    ("compute.overhead_s", False, True, 0.0),  # fixed cost per sample (fitted on CPUs: small ops, launch)
    ("network.intra.latency_s", True, True, None),
    ("network.intra.bandwidth_Bps", True, False, None),
    ("network.inter.latency_s", True, True, None),
    ("network.inter.bandwidth_Bps", True, False, None),  # per node (injection bandwidth)
    ("horovod.cycle_time_ms", True, True, None),
    ("horovod.fusion_threshold_mb", True, True, None),
    ("horovod.overlap", False, True, 1.0),  # share of the overlap window communication can really use
    ("horovod.tensor_cost_s", False, True, 0.0),  # per tensor and step: negotiation, fusion-buffer copies
    ("horovod.cycle_cost_s", False, True, 0.0),  # per wake of the background thread, taken from compute
    ("variability.step_time_cv", False, True, 0.0),  # persistent device-to-device spread (or the total)
    ("variability.jitter_cv", False, True, 0.0),  # step-to-step jitter, independent of it (added in quadrature)
    ("io.local_read_Bps", False, False, None),  # per node, node-local storage (staged data)
    ("io.fs_read_Bps", False, False, None),  # aggregate, shared parallel file system
    ("io.fs_node_read_Bps", False, False, None),  # what one node can read from the shared file system
    ("max_nodes", False, False, None),
)
STRINGS = (("horovod.control_plane", "tree", ("tree", "coordinator")),
           # as_ready: gradients are reduced as the backward pass produces them (Horovod's DistributedOptimizer);
           # grouped: all at once after the backward pass (this toolkit's TrainStep)
           ("horovod.gradients", "as_ready", ("as_ready", "grouped")))


@dataclass
class System:
    """A machine as the model sees it: devices per node, two link levels, Horovod settings, variability."""

    name: str
    path: str
    values: dict[str, float | None]
    sources: dict[str, str]
    strings: dict[str, str]
    rates: dict[str, float] = field(default_factory=dict)  # published/fitted FLOP/s per "model/precision"
    description: str = ""

    def __getitem__(self, key: str):
        return self.values.get(key, self.strings.get(key))

    @property
    def devices_per_node(self) -> int:
        return int(self.values["node.devices"])

    @property
    def intra(self) -> tuple[float, float]:
        return self.values["network.intra.latency_s"], 1.0 / self.values["network.intra.bandwidth_Bps"]

    @property
    def inter(self) -> tuple[float, float]:
        return self.values["network.inter.latency_s"], 1.0 / self.values["network.inter.bandwidth_Bps"]

    def with_values(self, **changes) -> "System":
        """A copy with some numbers replaced (dotted keys with '__' for '.'), e.g. network__inter__bandwidth_Bps."""
        values = dict(self.values)
        for key, value in changes.items():
            values[key.replace("__", ".")] = value
        return System(self.name, self.path, values, dict(self.sources), dict(self.strings), dict(self.rates),
                      self.description)


def bundled_systems() -> list[str]:
    return sorted(p.stem for p in SYSTEM_DIR.glob("*.yaml"))


def resolve_system(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    candidate = SYSTEM_DIR / f"{p.name}.yaml"
    if candidate.is_file():
        return candidate
    raise ConfigError(f"{name_or_path}: no such system file (bundled systems: {', '.join(bundled_systems())})")


ABSENT = object()


def _lookup(tree: dict, dotted: str, absent=None):
    """The entry at a dotted key; `absent` where the key is not there (a key written without a value is None)."""
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return absent
        node = node[part]
    return node


def _number(path: Path, key: str, entry, allow_zero: bool) -> tuple[float, str]:
    if not isinstance(entry, dict) or "value" not in entry:
        raise ConfigError(f"{path}: {key}: expected {{value: NUMBER, source: TEXT}}, got {entry!r}")
    value, source = entry["value"], entry.get("source")
    if isinstance(value, str):
        try:
            value = float(value)  # YAML reads 23e9 (no dot) as a string
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{path}: {key}: value {entry['value']!r} is not a finite number")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{path}: {key}: value {value!r} must be {'>= 0' if allow_zero else '> 0'}")
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(f"{path}: {key}: the number needs a source (say 'assumption: ...' if it is one)")
    return float(value), source.strip()


def load_system(name_or_path: str | Path) -> System:
    """Read and validate a system YAML (bundled name or file path)."""
    path = resolve_system(name_or_path)
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    values, sources, strings = {}, {}, {}
    for key, required, allow_zero, default in NUMBERS:
        entry = _lookup(tree, key, ABSENT)
        if entry is None:  # `key:` written with nothing after it: a number left out, not a default
            raise ConfigError(f"{path}: {key}: missing value (write {{value: NUMBER, source: TEXT}} or leave the key out)")
        if entry is ABSENT:
            if required:
                raise ConfigError(f"{path}: {key}: missing")
            values[key] = default
            continue
        values[key], sources[key] = _number(path, key, entry, allow_zero)
    for key, default, choices in STRINGS:
        value = _lookup(tree, key)
        value = default if value is None else value
        if value not in choices:
            raise ConfigError(f"{path}: {key}: {value!r} is not allowed; choose one of {', '.join(choices)}")
        strings[key] = value
    rates = {}
    for name, entry in (tree.get("rates") or {}).items():
        rates[name], sources[f"rates.{name}"] = _number(path, f"rates.{name}", entry, False)
    return System(name=str(tree.get("name") or path.stem), path=str(path), values=values, sources=sources,
                  strings=strings, rates=rates, description=str(tree.get("description") or ""))


def system_to_yaml(name: str, description: str, numbers: dict[str, tuple[float, str]],
                   strings: dict[str, str] | None = None, rates: dict[str, tuple[float, str]] | None = None) -> str:
    """Write a system file from {dotted key: (value, source)} (what `scale fit` produces)."""
    tree: dict = {"name": name, "description": description}

    def put(dotted, item):
        node = tree
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = item

    for key, (value, source) in numbers.items():
        put(key, {"value": float(value), "source": source})
    for key, value in (strings or {}).items():
        put(key, value)
    if rates:
        tree["rates"] = {k: {"value": float(v), "source": s} for k, (v, s) in rates.items()}
    return yaml.safe_dump(tree, sort_keys=False, width=110)
