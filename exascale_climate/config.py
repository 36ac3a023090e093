"""One typed configuration tree for every job: dataclasses loaded from YAML, overridden with `--set k=v`.

Why hand-written: the tree is small, and the errors must name the dotted key, the bad value and what is
allowed; unknown keys are errors. Constraints live beside each field as metadata (`choices`, `min`, `max`).
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from exascale_climate.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
MAX_DEPTH = 16  # nesting of mappings/lists in a config file or a --set value (the tree itself is 4 deep)
MAX_FILE_BYTES = 1 << 20  # a config file is a few KiB; anything this large is not one
MAX_GRID = 16384  # grid rows or columns (the paper's grid is 768 x 1152)
MAX_LIST_ITEM = 10**6  # layer counts, rates and milestones in list fields


def choice(default, choices, **extra):
    return field(default=default, metadata={"choices": tuple(choices), **extra})


def bounded(default, min=None, max=None, **extra):  # noqa: A002 - mirrors the metadata keys
    return field(default=default, metadata={"min": min, "max": max, **extra})


def grid_field(default=(96, 144)):
    return field(default=default, metadata={"grid": True})


# --------------------------------------------------------------------------------------------- data
@dataclass
class SynthConfig:
    """The embedded CAM5-like generator (`exaclimate data synth`)."""

    samples: int = bounded(16, min=1, max=10**7)
    grid: tuple[int, int] = grid_field()
    seed: int = bounded(0, min=0, max=2**32 - 1)  # numpy seeds are unsigned
    workers: int = bounded(1, min=1, max=1024)
    # Expected events per time step on the global grid (Poisson means).
    cyclones_per_step: float = bounded(4.0, min=0.0, max=1000.0)
    rivers_per_step: float = bounded(10.0, min=0.0, max=1000.0)
    hours_per_step: float = bounded(3.0, min=0.25, max=8784.0)
    fronts: bool = True  # cold fronts trailing the extratropical lows (data/fronts.py)


@dataclass
class LabellerConfig:
    """TECA-style multivariate thresholds (`exaclimate data label`)."""

    # Tropical cyclones
    tc_max_abs_lat: float = bounded(45.0, min=0.0, max=90.0)
    tc_psl_anomaly_pa: float = bounded(-800.0, min=-1e5, max=0.0)  # PSL minimum below its ~1500 km surroundings
    # 850 hPa relative vorticity (1/s), cyclonic sign (TECA)
    tc_vorticity_min: float = bounded(3.5e-5, min=0.0, max=1.0)
    tc_warm_core_k: float = bounded(1.0, min=0.0, max=1000.0)  # (T200+T500)/2 anomaly near the centre
    tc_wind_min: float = bounded(17.0, min=0.0, max=1000.0)  # max lowest-level wind (m/s) within the search radius
    tc_radius_km: float = bounded(500.0, min=1.0, max=20000.0)  # labelled radius (moist part) around each centre
    tc_search_radius_km: float = bounded(400.0, min=1.0, max=20000.0)
    # Atmospheric rivers
    ar_ivt_threshold: float = bounded(250.0, min=0.0, max=1e5)  # integrated vapour transport (kg m-1 s-1)
    ar_tmq_anomaly: float = bounded(8.0, min=0.0, max=1e4)  # TMQ above the zonal-mean background (kg m-2)
    ar_min_length_km: float = bounded(2000.0, min=0.0, max=40075.0)
    ar_max_width_km: float = bounded(1000.0, min=0.0, max=40075.0)
    ar_min_aspect: float = bounded(3.0, min=1.0, max=1e4)
    ar_min_abs_lat: float = bounded(30.0, min=0.0, max=90.0)  # a river reaches at least this latitude
    # the object's long axis and its mean vapour transport differ by at most this (Guan & Waliser 2015)
    ar_max_orientation_deg: float = bounded(45.0, min=0.0, max=90.0)
    # Weather fronts (a patch class only, data/fronts.py): thermal front parameter on TREFHT (Hewson 1998)
    wf_smooth_km: float = bounded(150.0, min=0.0, max=5000.0)  # smoothing scale of TREFHT and PSL
    wf_tfp_min: float = bounded(0.3, min=0.0, max=1000.0)  # K per (100 km)^2
    wf_gradient_min: float = bounded(2.0, min=0.0, max=1000.0)  # |grad TREFHT|, K per 100 km
    wf_min_length_km: float = bounded(600.0, min=0.0, max=40075.0)
    wf_min_abs_lat: float = bounded(20.0, min=0.0, max=90.0)
    wf_max_abs_lat: float = bounded(75.0, min=0.0, max=90.0)


@dataclass
class DataConfig:
    """Where samples live and how they are read."""

    train_dir: str = "data/train"
    valid_dir: str = "data/valid"
    test_dir: str = ""
    stats_file: str = ""  # default: <train_dir>/../stats.h5
    channels: list[str] = field(default_factory=list)  # empty = all 16, in the published order
    dtype: str = choice("float32", ("float32", "float16"))
    # Semi-supervised training (model semisup): the share of training files whose labels the loss may use
    # (a seeded choice of files), and an optional directory of extra files used only as unlabelled samples.
    labelled_fraction: float = bounded(1.0, min=0.0, max=1.0)
    unlabelled_dir: str = ""
    synth: SynthConfig = field(default_factory=SynthConfig)
    labeller: LabellerConfig = field(default_factory=LabellerConfig)


# ----------------------------------------------------------------------------------------- tracking
@dataclass
class TrackConfig:
    """Linking detections over time (`exaclimate track`), as TempestExtremes' StitchNodes / TECA do."""

    tc_max_speed_km_h: float = bounded(150.0, min=1.0, max=3600.0)  # range per hour (StitchNodes' 8 degrees per 6 h)
    tc_max_gap_steps: int = bounded(1, min=0, max=1000)  # missing time steps allowed inside a track (StitchNodes maxgap)
    tc_min_lifetime_hours: float = bounded(24.0, min=0.0, max=1e5)  # StitchNodes mintime
    ar_min_overlap: float = bounded(0.1, min=0.0, max=1.0)  # shared area / the smaller object's area
    ar_max_gap_steps: int = bounded(0, min=0, max=1000)
    ar_min_lifetime_hours: float = bounded(0.0, min=0.0, max=1e5)
    min_points: int = bounded(1, min=1, max=100000)  # points a track needs (StitchNodes min_length)


@dataclass
class VerifyConfig:
    """Matching tracks to observed best tracks (`exaclimate verify`)."""

    radius_km: float = bounded(300.0, min=1.0, max=20038.0)  # a detected and an observed position this close match
    time_window_hours: float = bounded(3.0, min=0.0, max=8760.0)  # ... when their times differ by at most this
    min_matched_points: int = bounded(1, min=1, max=100000)  # points two tracks must share to be the same storm
    # [south, north, west, east] degrees: for regional inputs, only observed storms that are inside it during the
    # period count (west > east crosses the date line); empty = the whole globe
    domain: list[float] = field(default_factory=list)


# ----------------------------------------------------------------------------------------- pipeline
@dataclass
class PipelineConfig:
    """tf.data input pipeline (docs/PIPELINE.md)."""

    normalization: str = choice("zscore", ("zscore", "minmax", "none"))
    shuffle: bool = True  # a full seeded permutation of the rank's shard every epoch (one sample per file)
    readers: int = bounded(2, min=1, max=256)  # parallel HDF5 readers per rank
    reader_mode: str = choice("thread", ("thread", "process"))  # thread measured faster (bench pipeline)
    crop: tuple[int, int] | None = None  # random crop (H, W); None = full grid
    random_flip: bool = False  # longitude flip (data and labels together; negates the zonal winds)
    random_roll: bool = False  # random longitude roll (periodic in longitude)
    class_weighting: str = choice("inverse_sqrt", ("inverse", "inverse_sqrt", "inverse_power", "none"))
    class_weight_power: float = bounded(0.125, min=0.0, max=2.0)  # the exponent of "inverse_power" (MLPerf: 0.125)
    prefetch: int = bounded(-1, min=-1, max=1024)  # -1 = tf.data.AUTOTUNE
    strict: bool = False  # a bad file mid-epoch is fatal instead of skipped
    stage_dir: str = ""  # node-local staging destination; empty = read the source directly


# -------------------------------------------------------------------------------------------- model
@dataclass
class TiramisuConfig:
    """FC-DenseNet as run at scale in the paper."""

    down_layers: list[int] = field(default_factory=lambda: [2, 2, 2, 4])
    bottleneck_layers: int = bounded(5, min=0, max=100)
    up_layers: list[int] = field(default_factory=lambda: [4, 2, 2, 2])
    growth_rate: int = bounded(32, min=1, max=1024)
    kernel_size: int = bounded(5, min=1, max=31)
    initial_filters: int = bounded(64, min=1, max=4096)
    dropout: float = bounded(0.2, min=0.0, max=1.0)
    batch_norm: bool = False


@dataclass
class DeepLabConfig:
    """DeepLabv3+ with the paper's full-resolution decoder."""

    resnet_blocks: list[int] = field(default_factory=lambda: [3, 4, 6, 3])  # ResNet-50
    base_filters: int = bounded(64, min=1, max=4096)
    output_stride: int = choice(8, (8, 16))
    aspp_rates: list[int] = field(default_factory=lambda: [12, 24, 36])
    aspp_filters: int = bounded(256, min=1, max=4096)
    decoder_filters: int = bounded(256, min=1, max=4096)
    low_level_filters: int = bounded(48, min=1, max=4096)
    batch_norm: bool = True


@dataclass
class SemisupConfig:
    """The SC17 semi-supervised climate network (docs/MODELS.md): a strided-convolution encoder, a
    transposed-convolution decoder that reconstructs the input, and box heads on the encoder's features.

    The default is the paper's size (9 convolutions + 5 deconvolutions, ~79 M parameters at 768x768x16);
    each entry of `encoder_filters` is one stride-2 convolution and one mirrored stride-2 deconvolution.
    """

    encoder_filters: list[int] = field(default_factory=lambda: [128, 256, 512, 768, 1024])
    feature_filters: int = bounded(1088, min=1, max=65536)  # the stride-1 convolution the heads read (sized to ~302 MiB)
    kernel_size: int = bounded(5, min=1, max=31)
    head_kernel_size: int = bounded(3, min=1, max=31)
    # Loss weights (ExtremeWeather's YOLO-style terms); reconstruction_weight 0 = the supervised-only baseline.
    reconstruction_weight: float = bounded(1.0, min=0.0, max=1e6)
    confidence_weight: float = bounded(1.0, min=0.0, max=1e6)
    no_object_weight: float = bounded(0.1, min=0.0, max=1e6)  # confidence term on cells without an event centre
    class_weight: float = bounded(1.0, min=0.0, max=1e6)
    box_weight: float = bounded(1.0, min=0.0, max=1e6)
    score_threshold: float = bounded(0.5, min=0.0, max=1.0)  # detections kept at inference
    nms_iou: float = bounded(0.3, min=0.0, max=1.0)


@dataclass
class ModelConfig:
    name: str = choice("tiramisu", ("tiramisu", "deeplabv3plus", "semisup"))
    num_classes: int = bounded(3, min=2, max=256)
    # None = the model's paper value (Tiramisu 1e-4, DeepLabv3+ 5e-4)
    weight_decay: float | None = bounded(None, min=0.0, max=1.0)
    tiramisu: TiramisuConfig = field(default_factory=TiramisuConfig)
    deeplabv3plus: DeepLabConfig = field(default_factory=DeepLabConfig)
    semisup: SemisupConfig = field(default_factory=SemisupConfig)

    def check(self) -> None:
        """Bounds on the items of list fields (field metadata bounds only apply to scalars)."""
        for key, values, lowest in (("tiramisu.down_layers", self.tiramisu.down_layers, 0),
                                    ("tiramisu.up_layers", self.tiramisu.up_layers, 0),
                                    ("deeplabv3plus.resnet_blocks", self.deeplabv3plus.resnet_blocks, 1),
                                    ("deeplabv3plus.aspp_rates", self.deeplabv3plus.aspp_rates, 1),
                                    ("semisup.encoder_filters", self.semisup.encoder_filters, 1)):
            if not values:
                raise ConfigError(f"model.{key}: must not be empty")
            highest = 100 if "layers" in key or "blocks" in key else 65536 if "filters" in key else 1000
            if any(not lowest <= v <= highest for v in values):
                raise ConfigError(f"model.{key}: {_show(values)} is not allowed; every item must be in "
                                  f"{lowest}..{highest}")


# ---------------------------------------------------------------------------------------- optimizer
@dataclass
class LarcConfig:
    """Layer-wise adaptive rate control (You et al.), as used in the paper."""

    enabled: bool = False
    eta: float = bounded(0.002, min=0.0, max=1.0)
    mode: str = choice("clip", ("clip", "scale"))
    epsilon: float = bounded(1e-8, min=0.0, max=1.0)
    exclude_bias_and_norm: bool = True


@dataclass
class ScheduleConfig:
    name: str = choice("constant", ("constant", "polynomial", "cosine", "multistep"))
    warmup_steps: int = bounded(0, min=0, max=10**9)
    decay_steps: int = bounded(1000, min=1, max=10**9)
    power: float = bounded(1.0, min=0.0, max=100.0)  # polynomial
    end_factor: float = bounded(0.0, min=0.0, max=1.0)  # final lr as a fraction of the base lr
    milestones: list[int] = field(default_factory=list)  # multistep
    gamma: float = bounded(0.1, min=0.0, max=10.0)  # multistep factor


@dataclass
class OptimizerConfig:
    name: str = choice("adam", ("sgd", "adam", "rmsprop"))
    learning_rate: float = bounded(1e-3, min=0.0, max=100.0)
    momentum: float = bounded(0.9, min=0.0, max=1.0)
    beta_1: float = bounded(0.9, min=0.0, max=1.0)
    beta_2: float = bounded(0.999, min=0.0, max=1.0)
    epsilon: float = bounded(1e-7, min=0.0, max=1.0)
    scale_lr_by_world_size: bool = True
    larc: LarcConfig = field(default_factory=LarcConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


# -------------------------------------------------------------------------------------------- train
@dataclass
class CheckpointConfig:
    every_steps: int = bounded(0, min=0, max=10**9)  # 0 = at the end of every epoch only
    every_epochs: int = bounded(1, min=0, max=10**6)  # also at the end of every N-th epoch; 0 = only every_steps/final
    keep: int = bounded(3, min=1, max=10**4)
    keep_best: bool = True


@dataclass
class MllogConfig:
    """MLPerf HPC-style `mllog` events (train/mlperf.py) beside metrics.jsonl, for MLCommons' compliance checker."""

    enabled: bool = False
    file: str = "mllog.log"  # in the run directory
    benchmark: str = choice("deepcam", ("deepcam",))
    org: str = "exascale_climate"
    platform: str = ""  # empty = this host's CPU model and core count
    division: str = choice("open", ("open", "closed"))  # closed needs the published DeepCAM dataset
    status: str = choice("research", ("onprem", "cloud", "preview", "research"))


@dataclass
class TrainConfig:
    batch_size: int = bounded(2, min=1, max=65536)  # per rank
    epochs: int = bounded(1, min=1, max=10**6)
    max_steps: int = bounded(0, min=0, max=10**9)  # 0 = no limit beyond epochs
    gradient_accumulation: int = bounded(1, min=1, max=4096)
    validate_every_steps: int = bounded(0, min=0, max=10**9)  # 0 = once per epoch
    target_iou: float = bounded(0.0, min=0.0, max=1.0)  # early stop when reached; 0 = off
    # stop at the first validation after this many seconds of training (MLPerf's clock: set-up excluded); 0 = off
    time_budget_s: float = bounded(0.0, min=0.0, max=10**9)
    # the same in rank 0's process CPU seconds: on a shared machine, the quiet-machine time of a rank; 0 = off
    cpu_budget_s: float = bounded(0.0, min=0.0, max=10**9)
    # mixed_bfloat16: bfloat16 compute (native on CPUs with AVX512_BF16/AMX), float32 variables, no loss scaling
    precision: str = choice("float32", ("float32", "mixed_float16", "mixed_bfloat16"))
    loss_scale: str = "dynamic"  # "dynamic" or a number (static scale), used with mixed_float16 only
    loss: str = choice("weighted_ce", ("weighted_ce", "focal"))
    focal_gamma: float = bounded(2.0, min=0.0, max=100.0)
    loss_scale_init: float = bounded(32768.0, min=1.0, max=1e38)  # dynamic scaling: starting scale
    loss_scale_growth_steps: int = bounded(2000, min=1, max=10**9)  # dynamic scaling: finite steps before doubling
    max_bad_steps: int = bounded(5, min=1, max=10**6)  # consecutive non-finite steps before aborting
    seed: int = bounded(0, min=0, max=2**31 - 1)  # TF and numpy both take it
    deterministic: bool = False
    # XLA for the forward+backward pass (the collectives and the update stay outside): "auto" = off on CPU
    # hosts, where it measured 1.25-4.5x slower than oneDNN (docs/PERFORMANCE.md), on when a GPU is visible
    jit_compile: str | bool = choice("auto", ("auto", True, False))
    log_every_steps: int = bounded(10, min=1, max=10**9)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    mllog: MllogConfig = field(default_factory=MllogConfig)


# -------------------------------------------------------------------------------------- distributed
@dataclass
class DistributedConfig:
    allreduce: str = choice("flat", ("flat", "hierarchical"))
    ranks_per_node: int = bounded(0, min=0, max=4096)  # 0 = the nodes Horovod reports; N = checked override rank // N
    gradient_lag: int = choice(0, (0, 1))
    fp16_compression: bool = False
    # HOROVOD_FUSION_THRESHOLD; None = Horovod's default
    fusion_threshold_mb: float | None = bounded(None, min=0.0, max=65536.0)
    # HOROVOD_CYCLE_TIME; None = 10 on CPU-only nodes, else Horovod's 1
    cycle_time_ms: float | None = bounded(None, min=0.0, max=60000.0)
    horovod_hierarchical: bool = False  # Horovod's own HOROVOD_HIERARCHICAL_ALLREDUCE (GPU/NCCL builds)
    stall_timeout_s: int = bounded(60, min=1, max=7 * 86400)  # a rank silent this long fails the job
    # How a surviving rank learns which peer died (docs/RELIABILITY.md): "auto" = pids on this machine, heartbeat
    # files in <run_dir>/heartbeats (a shared file system) for peers elsewhere; "pid" = pids only; "heartbeat" =
    # files for every peer. A heartbeat unchanged for heartbeat_stale_s while this rank is blocked names its rank.
    liveness: str = choice("auto", ("auto", "pid", "heartbeat"))
    heartbeat_interval_s: float = bounded(0.5, min=0.05, max=600.0)
    heartbeat_stale_s: float = bounded(10.0, min=0.5, max=86400.0)
    # every N steps the ranks agree whether one got SIGUSR1/SIGTERM (one 8-byte allreduce, about one Horovod cycle;
    # every step halved the demo's throughput: docs/RELIABILITY.md). A stop waits at most N steps.
    stop_check_every_steps: int = bounded(20, min=1, max=1_000_000)
    threads_per_rank: int = bounded(0, min=0, max=4096)  # 0 = cores // ranks on this node
    # Hybrid sync/async training (SC17 "Deep Learning at 15PF", docs/TRAINING.md): the ranks but the last
    # `parameter_servers` form `groups` equal synchronous groups; the servers hold the model sharded by layer and
    # apply every group's averaged gradient as it arrives. 1 group = fully synchronous. Needs an MPI launch.
    mode: str = choice("sync", ("sync", "hybrid"))
    groups: int = bounded(1, min=1, max=100_000)
    parameter_servers: int = bounded(1, min=1, max=10_000)
    # a group's gradient is applied at most this many updates after the version it was computed on (the group
    # waits otherwise); must be >= groups - 1, or the groups could never all be computing at once
    max_staleness: int = bounded(8, min=0, max=1_000_000)
    # "inverse": lr / (1 + staleness), the staleness-dependent rate of Zhang et al., IJCAI 2016 (alpha / tau)
    staleness_lr: str = choice("none", ("none", "inverse"))
    # benchmark only: this (global) rank sleeps straggler_delay_s after every step, -1 = nobody
    straggler_rank: int = bounded(-1, min=-1, max=10**7)
    straggler_delay_s: float = bounded(0.0, min=0.0, max=3600.0)
    # debug/tests only: every group root writes what it pushed (gradient, versions) and the weights it started
    # from as .npz files into this directory, for an independent replay of the servers' updates; "" = off
    debug_push_dir: str = ""


# --------------------------------------------------------------------------------------------- job
@dataclass
class JobConfig:
    """A batch job (`exaclimate submit`): resources, where the run and its logs go, and what it runs."""

    scheduler: str = choice("slurm", ("slurm", "lsf"))
    template: str = ""  # empty = the scheduler's generic template (see `exaclimate submit -h`)
    nodes: int = bounded(1, min=1, max=10**6)
    tasks_per_node: int = bounded(1, min=1, max=1024)  # ranks per node (Summit: 6, one per GPU)
    cpus_per_task: int = bounded(0, min=0, max=4096)  # cores per rank; 0 = the template's default / cores // ranks
    gpus_per_task: int = bounded(0, min=0, max=64)
    time: str = "00:30:00"  # wall clock HH:MM:SS
    account: str = ""
    partition: str = ""  # SLURM partition or LSF queue
    constraint: str = ""  # SLURM --constraint, e.g. "gpu" on Perlmutter / Piz Daint
    job_name: str = "exaclimate"
    run_dir: str = "runs/exaclimate"
    log_dir: str = ""  # scheduler logs; empty = <run_dir>/logs
    stage: bool = True  # copy the data to node-local storage before training
    stage_root: str = ""  # node-local storage; empty = the template's ($TMPDIR, /mnt/bb/$USER on Summit)
    evaluate: bool = True  # evaluate the trained model on the test split (valid when there is none)
    modules: list[str] = field(default_factory=list)  # `module load` these first
    srun_mpi: str = "pmix"  # SLURM `srun --mpi=` plugin; empty = the cluster's default
    # the scheduler signals the job this long before its time limit; training checkpoints, the job requeues. 0 = off
    warn_before_s: int = bounded(300, min=0, max=86400)


# -------------------------------------------------------------------------------------------- scale
@dataclass
class ScaleConfig:
    """The performance model (`exaclimate scale predict`, docs/PERFORMANCE.md); the rest comes from distributed."""

    system: str = "summit"  # bundled system name or a system YAML file
    nodes: list[int] = field(default_factory=lambda: [1, 6, 24, 96, 384, 1536, 4560])
    grid: tuple[int, int] = grid_field((768, 1152))
    algorithm: str = choice("", ("", "ring", "tree", "hierarchical"))  # "" = from distributed.allreduce
    inter_algorithm: str = choice("tree", ("ring", "tree"))  # across nodes in the hierarchical allreduce
    control_plane: str = choice("", ("", "tree", "coordinator"))  # "" = the system's
    groups: int = bounded(1, min=1, max=1_000_000)  # hybrid scheme (SC17): synchronous groups ...
    parameter_servers: int = bounded(0, min=0, max=1_000_000)  # ... and parameter-server nodes
    staging: bool = True  # node-local staged input vs the shared file system every step
    stragglers: bool = True  # the slowest rank sets the pace (system's variability.step_time_cv and jitter_cv)
    jitter: bool = True  # step-to-step jitter (variability.jitter_cv) on top of the device-to-device spread
    rate_flops: float | None = bounded(None, min=0.0, max=1e21)  # sustained FLOP/s per device; None = the system's rates / assumption
    dataset_samples: int = bounded(0, min=0, max=10**12)  # for the one-off staging time; 0 = not reported


@dataclass
class ClassifyConfig:
    """The 2017 patch study (`exaclimate patches extract`, `exaclimate classify`)."""

    trials: int = bounded(12, min=1, max=10000)  # hyper-parameter trials per method (optuna TPE): the fixed budget
    tune_fraction: float = bounded(0.2, min=0.05, max=0.5)  # last part (in time) of train used to score trials
    max_tune_examples: int = bounded(4000, min=50, max=10**7)  # trials of every method fit at most this many examples
    tune_timeout: float = bounded(0.0, min=0.0, max=1e7)  # seconds of tuning per method; no new trial after (0: none)
    # Baselines on PCA features: >0 projects the standardised pixels onto this many principal components (fitted
    # on at most pca_fit_examples training patches) before tuning and fitting; 0 keeps the raw pixels.
    pca_components: int = bounded(0, min=0, max=100000)
    pca_fit_examples: int = bounded(4000, min=2, max=10**7)
    epochs: int = bounded(8, min=1, max=10000)  # ConvNet epochs, final fit
    tune_epochs: int = bounded(3, min=1, max=10000)  # ConvNet epochs per trial
    batch_size: int = bounded(64, min=1, max=65536)  # per rank
    seed: int = bounded(0, min=0, max=2**31 - 1)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    job: JobConfig = field(default_factory=JobConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)

    def validate(self) -> "Config":
        """Cross-field checks that a single field's metadata cannot express."""
        if self.train.precision == "mixed_float16" and self.train.loss_scale != "dynamic":
            try:
                if not 0 < float(self.train.loss_scale) <= 1e38:  # float32's range; also False for NaN
                    raise ValueError
            except ValueError:
                raise ConfigError(
                    f"train.loss_scale: {_show(self.train.loss_scale)} is not allowed; "
                    "use 'dynamic' or a number in (0, 1e38]"
                ) from None
        d = self.distributed
        if d.heartbeat_stale_s < 2 * d.heartbeat_interval_s:  # else a live rank between two beats looks stale
            raise ConfigError(f"distributed.heartbeat_stale_s: {_show(d.heartbeat_stale_s)} is not allowed; it must "
                              f"be at least 2 x distributed.heartbeat_interval_s ({2 * d.heartbeat_interval_s:g})")
        if any(not 0 <= m <= 10**9 for m in self.optimizer.schedule.milestones):
            raise ConfigError(f"optimizer.schedule.milestones: {_show(self.optimizer.schedule.milestones)} is not "
                              "allowed; every item must be in 0..1000000000")
        if self.pipeline.crop is not None and any(not 1 <= c <= MAX_GRID for c in self.pipeline.crop):
            raise ConfigError(f"pipeline.crop: {_show(list(self.pipeline.crop))} is not allowed; both sizes must "
                              f"be in 1..{MAX_GRID}")
        if len(self.model.tiramisu.down_layers) != len(self.model.tiramisu.up_layers):
            raise ConfigError(
                "model.tiramisu.up_layers: must have as many blocks as model.tiramisu.down_layers "
                f"({len(self.model.tiramisu.up_layers)} vs {len(self.model.tiramisu.down_layers)})"
            )
        dom = self.verify.domain
        if dom and (len(dom) != 4 or not -90 <= dom[0] < dom[1] <= 90 or any(abs(x) > 360 for x in dom[2:])):
            raise ConfigError(f"verify.domain: {_show(list(dom))} is not allowed; give [south, north, west, east] "
                              "in degrees with -90 <= south < north <= 90 (or [] for the globe)")
        self.model.check()
        d = self.distributed
        if d.mode == "hybrid" and d.max_staleness < d.groups - 1:
            raise ConfigError(f"distributed.max_staleness: {d.max_staleness} is too small for {d.groups} groups; "
                              f"must be >= groups - 1 = {d.groups - 1} (else every group waits for the others)")
        from exascale_climate.variables import channel_indices

        try:
            channel_indices(self.data.channels)
        except ConfigError as e:
            raise ConfigError(f"data.channels: {e}") from None
        return self

    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ------------------------------------------------------------------------------------ load / merge
def _to_plain(value):
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _short_repr():
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxtuple, short.maxdict, short.maxstring, short.maxother = 3, 6, 6, 6, 60, 60
    return short


_SHORT_REPR = _short_repr()


def _show(value) -> str:
    """repr() for an error message, cut short: a value may be a megabyte long, or a YAML alias "bomb" whose
    full repr has billions of items (reprlib stops at a few items and levels)."""
    text = _SHORT_REPR.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _depth(value, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of lists/dicts, counted without recursion (stops just past `limit`)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (list, tuple, dict)):
            level += 1
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            stack.extend((v, level) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


def _yaml_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of a YAML document from PyYAML's event stream (its parser keeps an explicit stack, so
    this cannot hit Python's recursion limit the way composing the document does)."""
    depth = deepest = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return deepest


def _describe(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _parse_grid(key: str, value) -> tuple[int, int]:
    if isinstance(value, str):
        parts = value.lower().replace(",", "x").split("x")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = []
    try:
        h, w = (int(p) for p in parts)
        if not (0 < h <= MAX_GRID and 0 < w <= MAX_GRID):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{key}: {_show(value)} is not a grid; use HxW with integers in 1..{MAX_GRID}, "
                          "e.g. 96x144") from None
    return h, w


def parse_grid(value) -> tuple[int, int]:
    """Parse "HxW" (CLI) or [H, W] (YAML)."""
    return _parse_grid("grid", value)


def _coerce(key: str, tp, value):
    """Convert a YAML value to the annotated type, or raise ConfigError naming the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, arg, value)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {_show(value)} is not a {_describe(tp)}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: {_show(value)} is not a list")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: {_show(value)} must have {len(args)} items")
            return tuple(_coerce(f"{key}[{i}]", a, v) for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        return origin(_coerce(f"{key}[{i}]", item, v) for i, v in enumerate(value))
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: {_show(value)} is not a boolean; use true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: {_show(value)} is not an integer")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int beyond float range, e.g. 10**400
                number = math.inf
        elif isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{key}: {_show(value)} is not a number")
        if not math.isfinite(number):
            raise ConfigError(f"{key}: {_show(value)} is not allowed; must be a finite number")
        return number
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: {_show(value)} is not a string")
    return value


def _check_metadata(key: str, meta, value) -> None:
    if value is None:
        return
    if "choices" in meta and value not in meta["choices"]:
        allowed = ", ".join(repr(c) for c in meta["choices"])
        raise ConfigError(f"{key}: {_show(value)} is not allowed; choose one of {allowed}")
    lo, hi = meta.get("min"), meta.get("max")
    allowed = f" (allowed: {lo}..{hi})" if lo is not None and hi is not None else ""
    if lo is not None and value < lo:
        raise ConfigError(f"{key}: {_show(value)} is too small; must be >= {lo}{allowed}")
    if hi is not None and value > hi:
        raise ConfigError(f"{key}: {_show(value)} is too large; must be <= {hi}{allowed}")


def _build(cls, data, prefix: str = ""):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"{where}{unknown[0]}: unknown key; allowed keys here: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        meta = fields[name].metadata
        value = _parse_grid(key, value) if meta.get("grid") else _coerce(key, hints[name], value)
        _check_metadata(key, meta, value)
        kwargs[name] = value
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {_show(part)} is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """`train.batch_size=4` -> ("train.batch_size", 4); values are parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set {_show(item)}: expected KEY=VALUE, e.g. train.batch_size=4")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {_show(item)}: empty key")
    if key.count(".") >= MAX_DEPTH:
        raise ConfigError(f"--set {_show(key)}: nested deeper than {MAX_DEPTH} levels")
    try:
        if _yaml_depth(raw) > MAX_DEPTH:
            raise ConfigError(f"--set {_show(key)}: the value is nested deeper than {MAX_DEPTH} levels")
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def resolve_config_path(path: str | Path) -> Path:
    """A file path, or the name of a bundled config (`tiramisu`, `demo.yaml`)."""
    p = Path(path)
    if p.is_file():  # not exists(): `--config demo` run beside a demo/ directory means the bundled config
        return p
    for candidate in (CONFIG_DIR / p.name, CONFIG_DIR / f"{p.name}.yaml"):
        if candidate.exists():
            return candidate
    bundled = ", ".join(sorted(c.stem for c in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"{path}: no such config file (bundled configs: {bundled})")


def read_config_text(path: Path) -> str:
    """The file as UTF-8 text (a UTF-8 byte-order mark is allowed), or one line saying why it is not."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: {size} bytes is too large for a config file (at most {MAX_FILE_BYTES})")
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        hint = " (it looks like UTF-16)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in raw[:64] else ""
        raise ConfigError(f"{path}: not UTF-8 text{hint}: byte 0x{raw[e.start]:02x} at offset {e.start}; "
                          "save the file as UTF-8") from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- YAML file <- `--set` overrides, then validated."""
    tree: dict = {}
    if path:
        p = resolve_config_path(path)
        text = read_config_text(p)
        try:
            if _yaml_depth(text) > MAX_DEPTH:
                raise ConfigError(f"{p}: nested deeper than {MAX_DEPTH} levels; a config is sections of keys")
            tree = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({' '.join(str(e).split())})") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(tree, key, value)
    return _build(Config, tree).validate()


def config_from_dict(tree: dict) -> Config:
    return _build(Config, tree).validate()


def save_config(cfg: Config, path: str | Path) -> None:
    from exascale_climate.utils.io import atomic_write_text

    atomic_write_text(path, cfg.to_yaml())
