"""A Workload from a training config: the model's own FLOP count (models/flops.py), its gradient size and tensor
count, the per-rank batch and the bytes of one input sample. Builds the Keras model (no training), so callers
import TensorFlow; the rest of scale/ does not."""
from __future__ import annotations

from exascale_climate.config import Config
from exascale_climate.errors import ConfigError
from exascale_climate.scale.model import Workload


def workload_from_config(cfg: Config, grid: tuple[int, int], batch: int | None = None) -> Workload:
    """Workload of cfg.model on `grid` with cfg.train.batch_size (or `batch`) samples per device."""
    from exascale_climate.utils.runtime import configure_threads

    configure_threads()
    import keras

    from exascale_climate.models import build_model
    from exascale_climate.models.flops import analytic_flops
    from exascale_climate.models.summary import input_channels

    channels = input_channels(cfg)
    shape = (grid[0], grid[1], channels)
    keras.backend.clear_session()
    model = build_model(cfg.model, shape, precision="float32")
    flops = analytic_flops(model)
    variables = model.trainable_variables
    parameters = int(sum(int(v.shape.num_elements()) for v in variables))
    itemsize = 2 if cfg.data.dtype == "float16" else 4
    sample_bytes = grid[0] * grid[1] * (channels * itemsize + 1)  # fields + a uint8-sized label map
    return Workload(model=cfg.model.name, flops_per_sample=float(flops["train_step"]), parameters=parameters,
                    tensors=len(variables), batch=batch or cfg.train.batch_size, precision=cfg.train.precision,
                    sample_bytes=float(sample_bytes), grid=f"{grid[0]}x{grid[1]}")


def settings_from_config(cfg: Config):
    """Model settings from the config's scale and distributed sections (what the training job would use)."""
    from exascale_climate.scale.model import Settings

    sc, d = cfg.scale, cfg.distributed
    algorithm = sc.algorithm or ("hierarchical" if d.allreduce == "hierarchical" else "ring")
    return Settings(algorithm=algorithm, inter_algorithm=sc.inter_algorithm, gradient_lag=d.gradient_lag,
                    fp16_compression=d.fp16_compression, fusion_threshold_mb=d.fusion_threshold_mb,
                    cycle_time_ms=d.cycle_time_ms, control_plane=sc.control_plane or None,
                    stragglers=sc.stragglers, jitter=sc.jitter, staging=sc.staging, groups=sc.groups,
                    parameter_servers=sc.parameter_servers, rate=sc.rate_flops).check()


def predict_from_config(cfg: Config, system_name: str | None = None, nodes: list[int] | None = None,
                        grid: tuple[int, int] | None = None) -> dict:
    """`exaclimate scale predict`: the workload of cfg on cfg.scale.system (or `system_name`) at every node count."""
    import dataclasses

    from exascale_climate.scale.model import sweep
    from exascale_climate.scale.systems import load_system

    system = load_system(system_name or cfg.scale.system)
    settings = settings_from_config(cfg)
    counts = sorted(set(nodes or cfg.scale.nodes))
    if not counts or counts[0] < 1:
        raise ConfigError(f"--nodes: {counts[:1]} is not a node count; use positive integers")
    limit = system["max_nodes"]
    if limit and counts[-1] > limit:
        raise ConfigError(f"--nodes: {counts[-1]} is more than {system.name}'s {int(limit)} nodes (max_nodes)")
    work = workload_from_config(cfg, grid or cfg.scale.grid)  # checks done first: this builds the model
    work = dataclasses.replace(work, dataset_samples=cfg.scale.dataset_samples)
    return sweep(work, system, counts, settings)
