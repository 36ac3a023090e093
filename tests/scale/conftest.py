"""Helpers for the performance-model tests: system files written by hand into tmp_path."""
import pytest
import yaml


def system_tree(**changes) -> dict:
    """A complete, valid system description (every number sourced); `changes` set dotted keys (None deletes)."""
    def num(v):
        return {"value": v, "source": "test"}

    tree = {
        "name": "testbox",
        "node": {"devices": num(4)},
        "device": {"peak_flops_float32": num(1.0e12), "sustained_fraction_float32": num(0.5)},
        "network": {"intra": {"latency_s": num(1.0e-6), "bandwidth_Bps": num(1.0e10)},
                    "inter": {"latency_s": num(1.0e-5), "bandwidth_Bps": num(1.0e9)}},
        "horovod": {"cycle_time_ms": num(0.0), "fusion_threshold_mb": num(64), "overlap": num(1.0),
                    "gradients": "grouped"},  # one fused message per 64 MiB: hand-computable
        "variability": {"step_time_cv": num(0.0)},
    }
    for dotted, value in changes.items():
        node = tree
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value
    return tree


@pytest.fixture
def write_system(tmp_path):
    def write(name="box.yaml", **changes):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(system_tree(**changes)))
        return path

    return write
