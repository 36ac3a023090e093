"""`exaclimate model summary`: parameters, a layer table and FLOPs per sample for a configured network."""
from __future__ import annotations

from exascale_climate.config import Config

PAPER_TRAIN_STEP_FLOPS = {"tiramisu": 4.2e12}  # per sample at 768x1152 (Kurth et al., SC18)
PAPER_PARAMETER_MIB = {"semisup": 302.0}  # the SC17 talk's climate network, 768x768x16 input


def input_channels(cfg: Config) -> int:
    return len(cfg.data.channels) or 16


def model_summary(cfg: Config, grid: tuple[int, int], graph: bool = True) -> dict:
    """Build the model of `cfg.model` on `grid` and count its parameters and FLOPs (analytic and graph)."""
    from exascale_climate.models import build_model
    from exascale_climate.models.flops import count_flops

    shape = (grid[0], grid[1], input_channels(cfg))
    model = build_model(cfg.model, shape, precision="float32")
    flops = count_flops(model, shape, graph=graph)
    summary = {
        "model": cfg.model.name,
        "input_shape": list(shape),
        "num_classes": cfg.model.num_classes,
        "parameters": int(model.count_params()),
        "trainable_parameters": int(sum(int(v.numpy().size) for v in model.trainable_variables)),
        "forward_flops": flops["forward"],
        "train_step_flops": flops["train_step"],
        "layers": [dict(r, output_shape=list(r["output_shape"])) for r in flops["layers"]],
    }
    if graph:
        summary["graph_forward_flops"] = flops["graph_forward"]
        summary["graph_train_step_flops"] = flops["graph_train_step"]
    paper = PAPER_TRAIN_STEP_FLOPS.get(cfg.model.name)
    if paper and tuple(grid) == (768, 1152):
        summary["paper_train_step_flops"] = paper
    if cfg.model.name in PAPER_PARAMETER_MIB:
        summary["parameter_mib"] = summary["parameters"] * 4 / 2**20
        summary["paper_parameter_mib"] = PAPER_PARAMETER_MIB[cfg.model.name]
    return summary


def _tflop(value: float) -> str:
    return f"{value / 1e12:.4f} TFLOP" if value >= 1e11 else f"{value / 1e9:.4f} GFLOP"


def format_summary(summary: dict) -> str:
    """A text report: the layers that hold parameters or FLOPs, then the totals."""
    lines = [f"{summary['model']}  input {'x'.join(map(str, summary['input_shape']))}  "
             f"classes {summary['num_classes']}", ""]
    header = f"{'layer':<28} {'type':<20} {'output':<20} {'params':>11} {'GFLOP fwd':>11}"
    lines += [header, "-" * len(header)]
    hidden = 0
    for row in summary["layers"]:
        if not row["params"] and not row["forward_flops"]:
            hidden += 1
            continue
        shape = "x".join(str(d) for d in row["output_shape"])
        lines.append(f"{row['name']:<28} {row['type']:<20} {shape:<20} {row['params']:>11,} "
                     f"{row['forward_flops'] / 1e9:>11.3f}")
    lines += ["-" * len(header), f"({hidden} layers without parameters or counted FLOPs not shown)", "",
              f"parameters:              {summary['parameters']:,} "
              f"({summary['trainable_parameters']:,} trainable)",
              f"forward FLOPs/sample:    {_tflop(summary['forward_flops'])} (analytic)",
              f"train-step FLOPs/sample: {_tflop(summary['train_step_flops'])} (analytic)"]
    if "graph_forward_flops" in summary:
        lines += [f"graph forward:           {_tflop(summary['graph_forward_flops'])} (TF profiler)",
                  f"graph train step:        {_tflop(summary['graph_train_step_flops'])} (TF profiler)"]
    if "paper_parameter_mib" in summary:
        lines.append(f"float32 weights:         {summary['parameter_mib']:.1f} MiB "
                     f"(paper: ~{summary['paper_parameter_mib']:.0f} MiB)")
    if "paper_train_step_flops" in summary:
        lines.append(f"paper train step:        {_tflop(summary['paper_train_step_flops'])} (Kurth et al.)")
    return "\n".join(lines)
