"""Outputs of `exaclimate scale predict`: a text table, JSON (atomic write) and a PNG of throughput, efficiency
and the step-time breakdown against node count."""
from __future__ import annotations

import json
from pathlib import Path

from exascale_climate.utils.io import atomic_path, atomic_write_text

COLUMNS = (("nodes", "nodes", "{:d}"), ("devices", "devices", "{:d}"), ("step_s", "step s", "{:.4f}"),
           ("compute_s", "compute", "{:.4f}"), ("communication_s", "allreduce", "{:.4f}"),
           ("communication_exposed_s", "exposed", "{:.4f}"), ("horovod_polling_s", "polling", "{:.4f}"),
           ("stragglers_s", "stragglers", "{:.4f}"),
           ("io_exposed_s", "I/O", "{:.4f}"), ("samples_per_s", "samples/s", "{:.4g}"),
           ("flops_per_s", "PFLOP/s", None), ("efficiency", "efficiency", "{:.3f}"))


def format_table(result: dict) -> str:
    w, s = result["workload"], result["settings"]
    head = (f"{w['model']} {w['grid']} batch {w['batch']}/device {w['precision']}: "
            f"{w['flops_per_sample'] / 1e12:.4g} TFLOP/sample, {w['parameters'] * 4 / 1e6:.1f} MB gradients, "
            f"{w['tensors']} tensors on {result['system']}; allreduce {s['algorithm']}"
            + (f" ({s['inter_algorithm']} across nodes)" if s["algorithm"] == "hierarchical" else "")
            + f", lag {s['gradient_lag']}, fp16 compression {'on' if s['fp16_compression'] else 'off'}"
            + (f", {s['groups']} groups + {s['parameter_servers']} parameter servers"
               if s["parameter_servers"] else ""))
    rate = result["rows"][0]
    lines = [head, f"per-device rate {rate['rate_flops'] / 1e12:.4g} TFLOP/s ({rate['rate_source']})", ""]
    lines.append("  ".join(f"{label:>10}" for _, label, _ in COLUMNS))
    for row in result["rows"]:
        cells = []
        for key, _, fmt in COLUMNS:
            value = row[key]
            cells.append(f"{value / 1e15:>10.4g}" if key == "flops_per_s" else f"{fmt.format(value):>10}")
        lines.append("  ".join(cells))
    if rate["staging_s"]:
        lines.append(f"\nstaging (one-off, every file read once from the shared file system): "
                     f"{result['rows'][-1]['staging_s']:.1f} s at {result['rows'][-1]['nodes']} nodes")
    return "\n".join(lines)


def write_json(result: dict, path: str | Path) -> None:
    atomic_write_text(path, json.dumps(result, indent=1) + "\n")


def plot(result: dict, path: str | Path, measured: dict[int, float] | None = None) -> None:
    """Three panels against nodes: samples/s (with ideal), efficiency, and where the step time goes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    nodes = [r["nodes"] for r in rows]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.2), dpi=100)
    a.loglog(nodes, [r["samples_per_s"] for r in rows], "o-", label="predicted")
    single = rows[0]["samples_per_s"] / rows[0]["efficiency"] / rows[0]["devices"]
    a.loglog(nodes, [single * r["devices"] for r in rows], "k--", label="ideal (devices x one device)")
    if measured:
        a.loglog(list(measured), list(measured.values()), "s", label="measured")
    a.set(xlabel="nodes", ylabel="samples/s", title=f"throughput on {result['system']}")
    a.legend()
    b.semilogx(nodes, [r["efficiency"] for r in rows], "o-")
    b.set(xlabel="nodes", ylabel="parallel efficiency", ylim=(0, 1.05), title="efficiency vs one device")
    parts = (("compute_s", "compute"), ("communication_exposed_s", "exposed allreduce"),
             ("horovod_polling_s", "Horovod cycle wakes"),
             ("stragglers_s", "stragglers"), ("io_exposed_s", "exposed input I/O"),
             ("parameter_server_s", "parameter servers"))
    bottom = [0.0] * len(rows)
    x = range(len(rows))
    for key, label in parts:
        values = [r.get(key, 0.0) for r in rows]
        if any(values):
            c.bar(x, values, bottom=bottom, label=label)
            bottom = [u + v for u, v in zip(bottom, values)]
    c.set_xticks(list(x), [str(n) for n in nodes], rotation=45)
    c.set(xlabel="nodes", ylabel="seconds per step", title="step time breakdown")
    c.legend(fontsize="small")
    w = result["workload"]
    fig.suptitle(f"{w['model']} {w['grid']}, batch {w['batch']}/device, {w['precision']}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
