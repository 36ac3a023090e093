"""The published runs the model is checked against, built from published inputs only (each input says where it
comes from), with the mechanisms switched off one at a time to show which ones carry the result.

Inputs shared by the cases:
- FLOPs per sample and gradient size: this toolkit's Tiramisu and DeepLabv3+ at 768x1152x16 (models/flops.py;
  Tiramisu's 4.19 TFLOP matches the paper's ~4.2, docs/MODELS.md); gradients are float32.
- Per-GPU sustained rate: the `rates` of the system files (summit.yaml, piz-daint.yaml), recovered from the
  abstract's throughput and efficiency (efficiency is defined against one GPU).
- Node composition and network: the system files, every number with its source.
- Local batch: 1 sample per GPU (assumption: a 768x1152 sample of either network fills most of a 16 GB GPU).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from exascale_climate.scale.model import Settings, Workload, ablate, predict
from exascale_climate.scale.systems import load_system

TIRAMISU = Workload(model="tiramisu", flops_per_sample=4.188774518784e12, parameters=7_504_835, tensors=70,
                    batch=1, precision="float32", sample_bytes=768 * 1152 * 65, grid="768x1152")
DEEPLAB = Workload(model="deeplabv3plus", flops_per_sample=13.054995039232e12, parameters=43_724_963, tensors=215,
                   batch=1, precision="float32", sample_bytes=768 * 1152 * 65, grid="768x1152")
DEEPCAM_TRAIN_SAMPLES = 121_266  # MLPerf HPC DeepCAM training set (the published dataset's train/ split)

# The paper's runs: hierarchical allreduce (NCCL in the node, MPI across, a tree at scale), gradient lag 1,
# tree control plane; Tiramisu on Piz Daint has one GPU per node, so "hierarchical" is the inter-node stage.
PAPER_SETTINGS = Settings(algorithm="hierarchical", inter_algorithm="tree", gradient_lag=1)
SWITCHES = {
    "flat ring instead of hierarchical": {"algorithm": "ring"},
    "flat tree instead of hierarchical": {"algorithm": "tree"},
    "hierarchical with a ring across nodes": {"inter_algorithm": "ring"},
    "no gradient lag": {"gradient_lag": 0},
    "no gradient lag, no overlap": {"gradient_lag": 0, "overlap": False},
    "rank-0 coordinator control plane": {"control_plane": "coordinator"},
    "no step-to-step jitter (jitter_cv = 0)": {"jitter": False},
    "no stragglers (step_time_cv = 0)": {"stragglers": False},
}


@dataclass
class Case:
    name: str
    system: str
    nodes: int
    workload: Workload
    settings: Settings = field(default_factory=lambda: PAPER_SETTINGS)
    published_efficiency: float | None = None
    published_flops: float | None = None
    note: str = ""


CASES = [
    Case("Tiramisu, 5,300 P100, Piz Daint (SC18)", "piz-daint", 5300, TIRAMISU, published_efficiency=0.790,
         published_flops=21.0e15),
    Case("DeepLabv3+ FP32, 27,360 V100, Summit (SC18)", "summit", 4560, DEEPLAB, published_efficiency=0.907,
         published_flops=325.8e15),
    Case("DeepLabv3+ FP16, 27,360 V100, Summit (SC18)", "summit", 4560,
         Workload(**{**DEEPLAB.__dict__, "precision": "mixed_float16"}), published_flops=999.0e15,
         note="sustained; the per-GPU rate comes from the published 1.13 EF/s peak (summit.yaml)"),
]


def run_case(case: Case) -> dict:
    system = load_system(case.system)
    row = predict(case.workload, system, case.nodes, case.settings)
    out = {"case": case.name, "system": case.system, "nodes": case.nodes, "devices": row["devices"],
           "predicted_efficiency": row["efficiency"], "predicted_flops": row["flops_per_s"],
           "published_efficiency": case.published_efficiency, "published_flops": case.published_flops,
           "step_s": row["step_s"], "compute_s": row["compute_s"], "communication_s": row["communication_s"],
           "communication_exposed_s": row["communication_exposed_s"], "stragglers_s": row["stragglers_s"],
           "step_spread": row["step_spread"],
           "rate_source": row["rate_source"], "note": case.note}
    out["ablations"] = ablate(case.workload, system, case.nodes, case.settings, SWITCHES)
    return out


# Published Horovod runs on Piz Daint itself (1 P100 per node), from CSCS's regression checks of its TensorFlow +
# Horovod installation (reframe-hpc/reframe, cscs-checks/apps/tensorflow/): images/s at 8 and at 32 nodes.
# The FLOP count cancels out (the per-GPU rate is set from the measured images/s); what matters is the gradient
# (float32 bytes vs the 0.45 s step) and how throughput per GPU falls from 8 to 32 nodes.
@dataclass(frozen=True)
class Reference:
    name: str
    workload: Workload
    nodes: tuple[int, int]
    images_per_s: tuple[float, float]
    source: str


PIZ_DAINT_REFERENCES = (
    Reference("Inception v3, Horovod 0.16 / TF 1.12 (2019)",
              Workload(model="inception3", flops_per_sample=3 * 11.4e9, parameters=23_851_784, tensors=190,
                       batch=64, precision="float32"),
              (8, 32), (1134.8, 4403.0),
              "reframe-hpc/reframe cscs-checks/apps/tensorflow/tf_horovod_check.py: tf_cnn_benchmarks --model "
              "inception3 --batch_size 64 --variable_update horovod, 1 task per node on daint:gpu, references "
              "1134.8 images/s (8 nodes) and 4403.0 images/s (32 nodes); parameters from Keras Applications "
              "(InceptionV3, 23,851,784); ~5.7 G multiply-adds per 299x299 image (Szegedy et al. 2016)"),
    Reference("ResNet-50, Horovod 0.18 / TF 2.0 (2019-20)",
              Workload(model="resnet50", flops_per_sample=3 * 8.2e9, parameters=25_636_712, tensors=161,
                       batch=32, precision="float32"),
              (8, 32), (2031.6, 7976.6),
              "reframe-hpc/reframe cscs-checks/apps/tensorflow/tf2_horovod_check.py: Horovod's "
              "tensorflow2_synthetic_benchmark (ResNet-50), 1 task per node on daint:gpu, references 2031.6 "
              "images/s (8 nodes) and 7976.6 (32 nodes); batch 32 is that script's default (assumption: the "
              "check does not override it); parameters from Keras Applications (ResNet50, 25,636,712)"),
)
PIZ_DAINT_HOROVOD_SETTINGS = Settings(algorithm="ring", gradient_lag=0)  # plain Horovod: ring, no lag


def step_cv_from_reference(ref: Reference, system_name: str = "piz-daint") -> dict:
    """The per-step spread (variability.step_time_cv) that makes the model reproduce a published throughput
    drop per GPU from ref.nodes[0] to ref.nodes[1] nodes on that machine, everything else as in the system file.

    Not fitted to the paper's Tiramisu run: a different, published measurement of the same machine and software
    stack (Horovod over Aries, one GPU per node) at 8 and 32 nodes, extrapolated by the model to 5,300.
    """
    import dataclasses

    system = load_system(system_name)
    n1, n2 = ref.nodes
    drop = (ref.images_per_s[1] / n2) / (ref.images_per_s[0] / n1)

    def per_gpu(cv: float, nodes: int, rate: float) -> float:
        sys_cv = system.with_values(variability__step_time_cv=cv)
        settings = dataclasses.replace(PIZ_DAINT_HOROVOD_SETTINGS, rate=rate)
        return predict(ref.workload, sys_cv, nodes, settings)["samples_per_s"] / nodes

    rate = ref.images_per_s[0] / n1 * ref.workload.flops_per_sample
    lo = hi = 0.0
    for _ in range(4):  # the single-GPU rate: at n1 nodes the model must give the published images/s
        lo, hi = 0.0, 0.5
        for _ in range(60):
            cv = (lo + hi) / 2
            if per_gpu(cv, n2, rate) / per_gpu(cv, n1, rate) > drop:
                lo = cv
            else:
                hi = cv
        rate *= (ref.images_per_s[0] / n1) / per_gpu(hi, n1, rate)
    single = rate / ref.workload.flops_per_sample
    return {"reference": ref.name, "step_time_cv": hi, "per_gpu_drop": drop, "single_gpu_images_per_s": single,
            "efficiency": {n: per_gpu(hi, n, rate) / single for n in ref.nodes}, "source": ref.source}


def piz_daint_sensitivity() -> list[dict]:
    """Tiramisu at 5,300 P100 with the step spread derived from each published Piz Daint reference in turn."""
    case = CASES[0]
    system = load_system(case.system)
    rows = []
    for ref in PIZ_DAINT_REFERENCES:
        cv = step_cv_from_reference(ref)["step_time_cv"]
        row = predict(case.workload, system.with_values(variability__step_time_cv=cv), case.nodes, case.settings)
        rows.append({"reference": ref.name, "step_time_cv": cv, "predicted_efficiency": row["efficiency"],
                     "predicted_flops": row["flops_per_s"]})
    return rows


# Sinha et al., "Not All GPUs Are Created Equal" (SC22, arXiv 2208.11035v3): 8% average performance variation
# between identical V100s of Summit and other clusters (max 22%, outliers up to 1.5x slower than the median GPU).
# What "variation" means: the authors' artifact (github.com/hal-uw/gpu_variability_sc22_artifact,
# plot_script/plot_aggregated.py at bc84e72) computes "Percent Variability" as the span between the box plot's
# whisker fences, (Q3 + 1.5 IQR) - (Q1 - 1.5 IQR) = 4 IQR, over the median -- outliers beyond the fences excluded
# (the paper reports them separately). For a normal spread 4 IQR = 4 x 1.349 sigma, whatever the number of GPUs.
GPU_VARIATION_SC22 = 0.08
GPU_VARIATION_SC22_PROGRAM = 0.32  # the SC22 program's abstract of the same paper: "32% (max 72%)"
SUMMIT_GPUS = 27648  # OLCF Summit user guide: 4,608 nodes x 6 V100
FORMER_SUMMIT_ASSUMPTION = 0.02  # what summit.yaml assumed before the SC22 figure replaced it

# Laanait et al., "Exascale Deep Learning for Scientific Inverse Problems" (arXiv 1909.11150, 2019): synchronous
# data-parallel training on Summit (the authors' gradient grouping and decentralised orchestration; three of its
# authors are SC18's) with "an optimal overlap between computation and communication",
# "near-linear scaling (0.93) ... up to 27,600 NVIDIA V100 GPUs" (abstract).
LAANAIT_EFFICIENCY = 0.93
LAANAIT_GPUS = 27600


def iqr_sigmas() -> float:
    """The interquartile range of a normal distribution in standard deviations: 2 Phi^-1(3/4) = 1.349."""
    from statistics import NormalDist

    return 2 * NormalDist().inv_cdf(0.75)


def summit_spread(variation: float = GPU_VARIATION_SC22) -> float:
    """summit.yaml's variability.step_time_cv from the SC22 figure, read with the authors' own definition: the
    whisker span 4 IQR over the median, so sigma = variation / (4 x 1.349) (1.48% for 8%)."""
    return variation / (4 * iqr_sigmas())


def summit_spread_range_reading() -> float:
    """The former reading of the SC22 figure (before the artifact's definition was found): 8% as the range from
    the fastest to the slowest of Summit's 27,648 GPUs, sigma = 0.08 / (2 E[max of 27,648 normals]) = 0.98%."""
    from exascale_climate.scale import costs

    return GPU_VARIATION_SC22 / (2 * costs.expected_max_normal(SUMMIT_GPUS))


def summit_jitter(baseline_gpus: int = 1, device_cv: float | None = None) -> dict:
    """summit.yaml's variability.jitter_cv from Laanait et al.'s 0.93 at 27,600 V100 on Summit.

    With communication overlapped (their claim), the loss is stragglers: efficiency = (1 + z(b) s) / (1 + z(N) s)
    for a total spread s, N = 27,600 GPUs, b = the GPUs the efficiency is measured against (not stated in the
    abstract: 1 GPU, as SC18 defines it, or 1 node of 6). Solved: s = (1 - E) / (E z(N) - z(b)). The jitter is what
    the SC22 device spread leaves of it: sqrt(s^2 - device_cv^2). Not fitted to SC18's answer: another application's
    published full-machine run on the same machine, a year later. An upper bound on the jitter (any exposed
    communication in their run would be loss that is not spread)."""
    from exascale_climate.scale import costs

    device_cv = summit_spread() if device_cv is None else device_cv
    e, z = LAANAIT_EFFICIENCY, costs.expected_max_normal
    total = (1 - e) / (e * z(LAANAIT_GPUS) - z(baseline_gpus))
    jitter = max(0.0, total * total - device_cv * device_cv) ** 0.5
    return {"baseline_gpus": baseline_gpus, "total_spread": total, "device_cv": device_cv, "jitter_cv": jitter}


def summit_sensitivity() -> list[dict]:
    """Summit's runs with each reading of the published spreads: the system file's (SC22 device spread + jitter
    from Laanait et al.), the device spread alone, the jitter with a one-node baseline, the former range reading
    of SC22, the SC22 program abstract's 32%, no spread, and the former 2% assumption."""
    system = load_system("summit")
    device, jitter = system["variability.step_time_cv"], system["variability.jitter_cv"]
    readings = (
        (f"SC22 device spread {device:.2%} + jitter {jitter:.2%} (summit.yaml)", device, jitter),
        (f"SC22 device spread {device:.2%} alone (no jitter)", device, 0.0),
        (f"jitter {summit_jitter(6)['jitter_cv']:.2%} (Laanait vs one node of 6 GPUs)", device,
         summit_jitter(6)["jitter_cv"]),
        (f"former range reading of SC22, {summit_spread_range_reading():.2%}, no jitter",
         summit_spread_range_reading(), 0.0),
        (f"SC22 program abstract's 32%: {summit_spread(GPU_VARIATION_SC22_PROGRAM):.2%}, no jitter",
         summit_spread(GPU_VARIATION_SC22_PROGRAM), 0.0),
        ("no spread", 0.0, 0.0),
        (f"former assumption {FORMER_SUMMIT_ASSUMPTION:.0%}", FORMER_SUMMIT_ASSUMPTION, 0.0),
    )
    rows = []
    for case in CASES[1:]:
        for label, cv, jit in readings:
            sys_v = system.with_values(variability__step_time_cv=cv, variability__jitter_cv=jit)
            row = predict(case.workload, sys_v, case.nodes, case.settings)
            rows.append({"case": case.name, "spread": label, "step_time_cv": cv, "jitter_cv": jit,
                         "predicted_efficiency": row["efficiency"], "predicted_flops": row["flops_per_s"],
                         "published_efficiency": case.published_efficiency,
                         "published_flops": case.published_flops})
    return rows


def format_summit_sensitivity(rows: list[dict]) -> str:
    """The Summit rows of `scale paper`: every reading of the published spreads, side by side."""
    lines = ["Summit, by reading of the published spreads (efficiency, PF/s):"]
    for r in rows:
        pub = (f"published {r['published_efficiency']:.1%}" if r["published_efficiency"]
               else f"published {r['published_flops'] / 1e15:.1f} PF/s sustained")
        lines.append(f"  {r['case'].split(',')[0]:<16} {r['spread']:<62} {r['predicted_efficiency']:.1%} "
                     f"{r['predicted_flops'] / 1e15:7.1f}  ({pub})")
    return "\n".join(lines)


# Mathuriya et al., "CosmoFlow: Using Deep Learning to Learn the Universe at Scale" (SC18, arXiv 1808.04728;
# NERSC/Intel/Cray, Prabhat among them): "fully synchronous data-parallel training on 8192 nodes of Cori with 77%
# parallel efficiency, achieving 3.5 Pflop/s sustained performance" (abstract) -- TensorFlow with the Cray PE ML
# plugin on Cori's KNL nodes, the machine and node of SC17, a year later.
COSMOFLOW_EFFICIENCY = 0.77
COSMOFLOW_NODES = 8192


def cori_spread(baseline_nodes: int = 1) -> dict:
    """cori-knl.yaml's variability.step_time_cv from CosmoFlow's 77% at 8,192 Cori KNL nodes.

    As summit_jitter() reads Laanait et al.: a fully synchronous step waits for the slowest node, so with the loss
    all stragglers, efficiency = (1 + z(b) s) / (1 + z(N) s) for a per-node spread s, N = 8,192 nodes, b = the nodes
    the efficiency is measured against (not stated in the abstract; one node is the reading used). Solved:
    s = (1 - E) / (E z(N) - z(b)). A total (persistent node-to-node spread and step-to-step jitter together, as
    Piz Daint's), measured on Cori itself. An upper bound: any communication or I/O exposed in that run is loss that
    is not spread. Not fitted to SC17's answer: another application's published run on the same machine."""
    from exascale_climate.scale import costs

    e, z = COSMOFLOW_EFFICIENCY, costs.expected_max_normal
    return {"baseline_nodes": baseline_nodes, "nodes": COSMOFLOW_NODES, "efficiency": e,
            "step_time_cv": (1 - e) / (e * z(COSMOFLOW_NODES) - z(baseline_nodes))}


SC17_CLIMATE = Workload(model="semisup", flops_per_sample=1.262e12, parameters=78_606_615, tensors=31, batch=8,
                        precision="float32", grid="768x768")  # docs/MODELS.md: this toolkit's semisup at 768x768x16
SC17_NODE_RATE = 2.0e12  # SC17 abstract: "~2 TFLOP/s on a single Cori Phase-II Xeon-Phi node" (IntelCaffe)
SC17_NODES, SC17_GROUPS, SC17_SERVERS = 9608, 8, 14
SC17_PEAK, SC17_SUSTAINED = 15.07e15, 13.27e15  # SC17 abstract (climate network: the upper end of each range)
SC17_SETTINGS = Settings(algorithm="ring", inter_algorithm="tree", groups=SC17_GROUPS,
                         parameter_servers=SC17_SERVERS, rate=SC17_NODE_RATE)
SC17_SWITCHES = {
    "one synchronous group, no servers": {"groups": 1, "parameter_servers": 0},
    "tree allreduce in each group": {"algorithm": "tree"},
    "no overlap of the group allreduce": {"overlap": False},
    "no stragglers (step_time_cv = 0)": {"stragglers": False},
}


def _cv_for_flops(target: float, system, settings: Settings, workload: Workload, nodes: int) -> float:
    """The step spread at which the model gives `target` FLOP/s (bisection; FLOP/s falls as the spread grows)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        got = predict(workload, system.with_values(variability__step_time_cv=mid), nodes, settings)["flops_per_s"]
        lo, hi = (mid, hi) if got > target else (lo, mid)
    return hi


FORMER_SC17_ASSUMPTION = 0.02  # what cori-knl.yaml assumed before a published spread replaced it


def sc17_sensitivity(per_node_rate: float = SC17_NODE_RATE) -> list[dict]:
    """The SC17 hybrid run with each spread considered so far: cori-knl.yaml's (CosmoFlow, Cori's own), Piz
    Daint's derived one carried over (the previous reading), and the former 2% assumption."""
    system = load_system("cori-knl")
    settings = dataclasses.replace(SC17_SETTINGS, rate=per_node_rate)
    daint = load_system("piz-daint")["variability.step_time_cv"]
    readings = ((f"CosmoFlow on Cori, {system['variability.step_time_cv']:.2%} (cori-knl.yaml)",
                 system["variability.step_time_cv"]),
                (f"Piz Daint's derived {daint:.2%}, carried over to Cori", daint),
                (f"former assumption {FORMER_SC17_ASSUMPTION:.0%}", FORMER_SC17_ASSUMPTION))
    rows = []
    for label, cv in readings:
        row = predict(SC17_CLIMATE, system.with_values(variability__step_time_cv=cv), SC17_NODES, settings)
        rows.append({"spread": label, "step_time_cv": cv, "predicted_flops": row["flops_per_s"],
                     "predicted_efficiency": row["efficiency"]})
    return rows


def hybrid_15pf(per_node_rate: float = SC17_NODE_RATE) -> dict:
    """SC17 "Deep Learning at 15PF": 9,608 KNL nodes, 8 synchronous groups, 14 parameter servers.

    Published inputs: the single-node rate (~2 TFLOP/s, abstract), the node count, groups and servers, and the
    climate network as this toolkit builds it from the paper's description (semisup: 1.262 TFLOP per training
    sample, 78.6 M parameters = 300 MiB of float32 gradients, batch 8 per node as in the talk). The step spread is
    Cori's own, derived from CosmoFlow's published 77% at 8,192 Cori KNL nodes (cori_spread(); cori-knl.yaml);
    Aries at NERSC's published ~8 GB/s MPI bandwidth. Compared with the published 13.27 PF/s sustained and 15.07
    PF/s peak; the model's mean step is the sustained figure's counterpart. `needed` inverts the model: the spread
    (or node rate) at which it would give each published figure; `spreads` the other readings of the spread.
    """
    system = load_system("cori-knl")
    settings = dataclasses.replace(SC17_SETTINGS, rate=per_node_rate)
    rows = {"hybrid, ring in each group": predict(SC17_CLIMATE, system, SC17_NODES, settings)}
    rows["hybrid, tree in each group"] = predict(SC17_CLIMATE, system, SC17_NODES,
                                                 dataclasses.replace(settings, algorithm="tree"))
    rows["one synchronous group (tree), no servers"] = predict(
        SC17_CLIMATE, system, SC17_NODES, Settings(algorithm="tree", rate=per_node_rate))
    row = rows["hybrid, ring in each group"]
    workers = row["devices"]
    needed = {
        "step_time_cv_for_peak": _cv_for_flops(SC17_PEAK, system, settings, SC17_CLIMATE, SC17_NODES),
        "step_time_cv_for_sustained": _cv_for_flops(SC17_SUSTAINED, system, settings, SC17_CLIMATE, SC17_NODES),
        "node_rate_for_peak": per_node_rate * SC17_PEAK / row["flops_per_s"],
        "node_rate_for_sustained": per_node_rate * SC17_SUSTAINED / row["flops_per_s"],
        "published_efficiency_at_peak": SC17_PEAK / (workers * per_node_rate),
        "published_efficiency_sustained": SC17_SUSTAINED / (workers * per_node_rate),
    }
    return {"published_peak_flops": SC17_PEAK, "published_sustained_flops": SC17_SUSTAINED, "rows": rows,
            "step_time_cv": system["variability.step_time_cv"], "needed": needed,
            "ablations": ablate(SC17_CLIMATE, system, SC17_NODES, settings, SC17_SWITCHES),
            "spreads": sc17_sensitivity(per_node_rate)}


DEEPCAM_SWITCHES = {
    "flat ring instead of hierarchical": {"algorithm": "ring"},
    "no overlap with the backward pass": {"overlap": False},
    "gradient lag 1 (not in MLPerf's DeepCAM)": {"gradient_lag": 1},
    "no stragglers (step_time_cv = 0)": {"stragglers": False},
}
DEEPCAM_SETTINGS = Settings(algorithm="hierarchical", inter_algorithm="tree", gradient_lag=0)


def mlperf_deepcam(samples_per_gpu: float = 30.0, minutes: float = 0.83, gpus: int = 2048) -> dict:
    """MLPerf HPC v3.0 DeepCAM at 2,048 H100 (256 DGX H100 nodes), local batch 1, ~30 samples/s per GPU.

    Not a validation either: the published figure is the rate at scale, so the model is run backwards: which
    single-GPU rate gives 30 samples/s per GPU at 2,048 GPUs, what fraction of the H100's FP16 peak that is with
    this toolkit's DeepLabv3+ FLOP count (MLPerf's DeepCAM is a DeepLabv3+ variant; assumption), and how many
    epochs of the 121,266 training samples fit in 0.83 min at that rate.
    """
    system = load_system("dgx-h100")
    work = Workload(**{**DEEPLAB.__dict__, "precision": "mixed_float16"})
    nodes = gpus // system.devices_per_node

    def per_gpu(single: float) -> dict:
        return predict(work, system, nodes, dataclasses.replace(DEEPCAM_SETTINGS, rate=single * work.flops_per_sample))

    lo, hi = samples_per_gpu, 20 * samples_per_gpu
    for _ in range(60):  # bisection: predicted per-GPU samples/s grows with the single-GPU rate
        mid = (lo + hi) / 2
        if per_gpu(mid)["samples_per_s"] / gpus < samples_per_gpu:
            lo = mid
        else:
            hi = mid
    row = per_gpu(hi)
    settings = dataclasses.replace(DEEPCAM_SETTINGS, rate=hi * work.flops_per_sample)
    return {"single_gpu_samples_per_s": hi, "efficiency": row["efficiency"], "row": row, "gpus": gpus,
            "nodes": nodes, "published_samples_per_s_per_gpu": samples_per_gpu, "published_minutes": minutes,
            "fraction_of_fp16_peak": hi * work.flops_per_sample / system["device.peak_flops_float16"],
            "epochs_in_published_time": samples_per_gpu * gpus * minutes * 60 / DEEPCAM_TRAIN_SAMPLES,
            "ablations": ablate(work, system, nodes, settings, DEEPCAM_SWITCHES)}


def format_others(sc17: dict, deepcam: dict) -> str:
    """The SC17 and MLPerf rows of `scale paper` (consistency checks with their ablations)."""
    row, need = sc17["rows"]["hybrid, ring in each group"], sc17["needed"]
    lines = [f"SC17 climate, 9,608 KNL, 8 groups + 14 servers (Cori): {row['flops_per_s'] / 1e15:.1f} PF/s, "
             f"efficiency {row['efficiency']:.1%} at spread {sc17['step_time_cv']:.2%} (published "
             f"{sc17['published_sustained_flops'] / 1e15:.2f} sustained / {sc17['published_peak_flops'] / 1e15:.2f} "
             f"peak = {need['published_efficiency_sustained']:.1%} / {need['published_efficiency_at_peak']:.1%} of "
             f"~2 TFLOP/s per node)",
             f"  the model needs a spread of {need['step_time_cv_for_peak']:.1%} (peak) / "
             f"{need['step_time_cv_for_sustained']:.1%} (sustained), or a node rate of "
             f"{need['node_rate_for_peak'] / 1e12:.2f} / {need['node_rate_for_sustained'] / 1e12:.2f} TFLOP/s"]
    for name, eff in sc17["ablations"].items():
        lines.append(f"    {name:<42} {eff:.1%}")
    lines.append("  by reading of the spread (PF/s, efficiency):")
    for r in sc17["spreads"]:
        lines.append(f"    {r['spread']:<52} {r['predicted_flops'] / 1e15:5.2f}  {r['predicted_efficiency']:.1%}")
    lines.append(f"MLPerf HPC v3.0 DeepCAM, {deepcam['gpus']:,} H100 (run backwards from "
                 f"{deepcam['published_samples_per_s_per_gpu']:.0f} samples/s per GPU): one GPU alone "
                 f"{deepcam['single_gpu_samples_per_s']:.1f} samples/s ({deepcam['fraction_of_fp16_peak']:.0%} of FP16 "
                 f"peak), efficiency {deepcam['efficiency']:.1%}; {deepcam['published_minutes']} min = "
                 f"{deepcam['epochs_in_published_time']:.0f} epochs at that rate")
    for name, eff in deepcam["ablations"].items():
        lines.append(f"    {name:<42} {eff:.1%}")
    return "\n".join(lines)


def format_cases(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        pub_e = f"{r['published_efficiency']:.1%}" if r["published_efficiency"] else "-"
        pub_f = f"{r['published_flops'] / 1e15:.1f}" if r["published_flops"] else "-"
        lines.append(f"{r['case']}: efficiency {r['predicted_efficiency']:.1%} (published {pub_e}), "
                     f"{r['predicted_flops'] / 1e15:.1f} PF/s (published {pub_f})")
        lines.append(f"  step {r['step_s']:.3f} s = compute {r['compute_s']:.3f} + exposed allreduce "
                     f"{r['communication_exposed_s']:.4f} (of {r['communication_s']:.4f}) + stragglers "
                     f"{r['stragglers_s']:.4f} (spread {r['step_spread']:.2%})")
        for name, eff in r["ablations"].items():
            lines.append(f"    {name:<42} {eff:.1%}")
    return "\n".join(lines)
