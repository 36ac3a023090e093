"""The published runs: Piz Daint's step spread derived from CSCS's published Horovod checks (not from the paper's
answer), Tiramisu at 5,300 P100 within 5 points, the straggler term by hand, the SC17 inputs."""
import dataclasses
import math
from statistics import NormalDist

import pytest
import yaml

from exascale_climate.scale import paper
from exascale_climate.scale.model import Settings, Workload, predict
from exascale_climate.scale.systems import SYSTEM_DIR, load_system


def test_piz_daint_spread_in_the_system_file_is_what_the_derivation_gives():
    """The YAML holds a number; the derivation from the published 8- and 32-node images/s recomputes it."""
    written = yaml.safe_load((SYSTEM_DIR / "piz-daint.yaml").read_text())["variability"]["step_time_cv"]["value"]
    derived = paper.step_cv_from_reference(paper.PIZ_DAINT_REFERENCES[0])
    assert derived["step_time_cv"] == pytest.approx(written, abs=5e-4)


@pytest.mark.parametrize("ref", paper.PIZ_DAINT_REFERENCES, ids=lambda r: r.name.split(",")[0])
def test_derived_spread_reproduces_the_published_drop_per_gpu(ref):
    derived = paper.step_cv_from_reference(ref)
    system = load_system("piz-daint").with_values(variability__step_time_cv=derived["step_time_cv"])
    rate = derived["single_gpu_images_per_s"] * ref.workload.flops_per_sample
    settings = Settings(algorithm="ring", gradient_lag=0, rate=rate)
    per_gpu = {n: predict(ref.workload, system, n, settings)["samples_per_s"] / n for n in ref.nodes}
    published = {n: v / n for n, v in zip(ref.nodes, ref.images_per_s)}  # images/s per GPU, by hand
    assert per_gpu[ref.nodes[1]] / per_gpu[ref.nodes[0]] == pytest.approx(
        published[ref.nodes[1]] / published[ref.nodes[0]], rel=1e-4)
    assert per_gpu[ref.nodes[0]] == pytest.approx(published[ref.nodes[0]], rel=1e-3)


def test_tiramisu_on_piz_daint_within_five_points_and_what_carries_it():
    case = paper.run_case(paper.CASES[0])
    assert abs(case["predicted_efficiency"] - 0.790) < 0.05
    ablations = case["ablations"]
    assert ablations["no stragglers (step_time_cv = 0)"] == pytest.approx(1.0, abs=1e-3)
    assert ablations["flat ring instead of hierarchical"] < case["predicted_efficiency"] - 0.1
    assert ablations["no gradient lag, no overlap"] < ablations["as given"]
    # The later software stack's check gives a smaller spread and a higher prediction: reported, not hidden.
    old, new = paper.piz_daint_sensitivity()
    assert old["predicted_efficiency"] == pytest.approx(case["predicted_efficiency"], abs=1e-3)
    assert new["step_time_cv"] < old["step_time_cv"] and new["predicted_efficiency"] > old["predicted_efficiency"]


def test_straggler_term_by_hand(write_system):
    """No communication cost: efficiency = 1 / (1 + cv x E[max of p normals]), Blom's approximation by hand."""
    system = load_system(write_system(**{"node.devices": {"value": 1, "source": "t"},
                                         "network.inter.latency_s": {"value": 0.0, "source": "t"},
                                         "network.inter.bandwidth_Bps": {"value": 1e30, "source": "t"},
                                         "variability.step_time_cv": {"value": 0.05, "source": "t"}}))
    work = Workload(model="w", flops_per_sample=1e12, parameters=1000, tensors=1)
    for p in (2, 100, 5300):
        z = NormalDist().inv_cdf((p - 0.375) / (p + 0.25))
        row = predict(work, system, p, Settings(algorithm="ring", gradient_lag=1))
        assert row["efficiency"] == pytest.approx(1 / (1 + 0.05 * z), rel=1e-6)


def test_summit_spread_in_the_system_file_is_the_sc22_figure_read_as_the_whisker_span():
    """summit.yaml's device spread is SC22's 8% read with the authors' definition (whisker fences 4 IQR apart, over
    the median), worked out by hand: a normal's IQR is 2 x 0.6745 sigma, so sigma = 0.08 / (4 x 1.349)."""
    written = yaml.safe_load((SYSTEM_DIR / "summit.yaml").read_text())["variability"]["step_time_cv"]["value"]
    sigma = 0.08 / (4 * 2 * 0.6744897501960817)
    assert sigma == pytest.approx(0.014826, abs=1e-6)
    assert written == pytest.approx(sigma, abs=5e-5) and paper.summit_spread() == pytest.approx(sigma, rel=1e-9)
    # the former reading (range over all 27,648 GPUs) is kept for comparison
    rng = 0.08 / (2 * NormalDist().inv_cdf((27648 - 0.375) / (27648 + 0.25)))
    assert paper.summit_spread_range_reading() == pytest.approx(rng, rel=1e-9)


def test_summit_jitter_in_the_system_file_is_what_laanait_et_al_give():
    """summit.yaml's jitter: the total spread that turns 27,600 GPUs into 0.93 efficiency (no communication
    exposed), minus the device spread in quadrature; worked out by hand with Blom's E[max of 27,600 normals]."""
    written = yaml.safe_load((SYSTEM_DIR / "summit.yaml").read_text())["variability"]["jitter_cv"]["value"]
    z = NormalDist().inv_cdf((27600 - 0.375) / (27600 + 0.25))
    total = (1 / 0.93 - 1) / z
    device = 0.08 / (4 * 2 * 0.6744897501960817)
    jitter = math.sqrt(total ** 2 - device ** 2)
    assert written == pytest.approx(jitter, abs=5e-5)
    got = paper.summit_jitter()
    assert got["total_spread"] == pytest.approx(total, rel=1e-9) and got["jitter_cv"] == pytest.approx(jitter)
    # against one node of 6 GPUs instead: 0.93 = (1 + z(6) s) / (1 + z(27600) s)
    z6 = NormalDist().inv_cdf((6 - 0.375) / (6 + 0.25))
    s6 = 0.07 / (0.93 * z - z6)
    assert paper.summit_jitter(6)["total_spread"] == pytest.approx(s6, rel=1e-9)
    # and the model, run at that total spread on 27,600 GPUs with nothing else, gives back 0.93
    system = load_system("summit").with_values(variability__step_time_cv=device, variability__jitter_cv=jitter)
    free = dataclasses.replace(paper.PAPER_SETTINGS, rate=1e12)
    tiny = Workload(model="t", flops_per_sample=1e12, parameters=1, tensors=1)
    row = predict(tiny, system.with_values(network__inter__latency_s=0.0, network__intra__latency_s=0.0),
                  4600, free)
    assert row["efficiency"] == pytest.approx(0.93, abs=2e-4)


def test_summit_within_five_points_from_sourced_inputs_and_what_carries_it():
    fp32 = paper.run_case(paper.CASES[1])
    assert abs(fp32["predicted_efficiency"] - 0.907) < 0.05
    abl = fp32["ablations"]
    # the device spread alone (SC22, no jitter) is within 5 points too: the claim does not rest on the jitter
    assert abs(abl["no step-to-step jitter (jitter_cv = 0)"] - 0.907) < 0.05
    assert abl["no step-to-step jitter (jitter_cv = 0)"] > abl["as given"]
    assert abl["no stragglers (step_time_cv = 0)"] == pytest.approx(1.0, abs=1e-3)
    assert abl["flat ring instead of hierarchical"] < 0.1 and abl["rank-0 coordinator control plane"] < 0.1
    # efficiency from the stragglers alone, by hand: 1 / (1 + z(27,360) sqrt(cv^2 + jitter^2)), nothing exposed
    z = NormalDist().inv_cdf((27360 - 0.375) / (27360 + 0.25))
    system = load_system("summit")
    spread = math.hypot(system["variability.step_time_cv"], system["variability.jitter_cv"])
    assert fp32["communication_exposed_s"] == 0.0
    assert fp32["predicted_efficiency"] == pytest.approx(1 / (1 + z * spread), rel=1e-9)
    rows = paper.summit_sensitivity()
    by = {r["spread"]: r for r in rows if "FP32" in r["case"]}
    own = next(r for k, r in by.items() if "summit.yaml" in k)
    assert own["predicted_efficiency"] == pytest.approx(fp32["predicted_efficiency"])
    assert by["no spread"]["predicted_efficiency"] == pytest.approx(1.0, abs=1e-3)
    former = next(r for k, r in by.items() if k.startswith("former range"))
    assert former["predicted_efficiency"] > own["predicted_efficiency"]


def test_15pf_uses_the_published_node_rate_and_the_climate_network():
    result = paper.hybrid_15pf()
    row = result["rows"]["hybrid, ring in each group"]
    assert row["rate_flops"] == 2.0e12
    assert row["gradient_bytes"] == 4 * 78_606_615
    assert row["devices"] == (9608 - 14) // 8 * 8  # 8 groups of 1,199 nodes after 14 servers
    assert math.isfinite(row["flops_per_s"]) and result["published_sustained_flops"] == 13.27e15
    # the spread is Cori's own (cori-knl.yaml, derived from CosmoFlow), not Piz Daint's carried over
    cori = yaml.safe_load((SYSTEM_DIR / "cori-knl.yaml").read_text())["variability"]["step_time_cv"]["value"]
    assert result["step_time_cv"] == cori
    need = result["needed"]
    assert need["published_efficiency_at_peak"] == pytest.approx(15.07e15 / (9592 * 2e12))
    # run the model at the spread it says it needs: it gives the published figures
    system = load_system("cori-knl")
    for key, target in (("step_time_cv_for_peak", 15.07e15), ("step_time_cv_for_sustained", 13.27e15)):
        got = predict(paper.SC17_CLIMATE, system.with_values(variability__step_time_cv=need[key]), 9608,
                      paper.SC17_SETTINGS)["flops_per_s"]
        assert got == pytest.approx(target, rel=1e-6)
    abl = result["ablations"]
    assert abl["no stragglers (step_time_cv = 0)"] > abl["as given"] > abl["no overlap of the group allreduce"]
    # the groups are what keeps the stragglers down: one synchronous group of all nodes does worse
    assert abl["one synchronous group, no servers"] < abl["as given"]


def test_cori_spread_in_the_system_file_is_what_cosmoflow_gives():
    """cori-knl.yaml's spread: the per-node spread that turns 8,192 synchronous Cori KNL nodes into CosmoFlow's
    published 77% (nothing else lost, efficiency against one node), worked out by hand with Blom's E[max]."""
    written = yaml.safe_load((SYSTEM_DIR / "cori-knl.yaml").read_text())["variability"]["step_time_cv"]["value"]
    z = NormalDist().inv_cdf((8192 - 0.375) / (8192 + 0.25))
    assert z == pytest.approx(3.787, abs=1e-3)
    spread = (1 / 0.77 - 1) / z
    assert written == pytest.approx(spread, abs=5e-5)
    assert paper.cori_spread()["step_time_cv"] == pytest.approx(spread, rel=1e-9)
    # against two nodes instead: 0.77 = (1 + z(2) s) / (1 + z(8192) s) gives a larger spread
    z2 = NormalDist().inv_cdf((2 - 0.375) / (2 + 0.25))
    assert paper.cori_spread(2)["step_time_cv"] == pytest.approx(0.23 / (0.77 * z - z2), rel=1e-9)
    # the model, fully synchronous over 8,192 nodes with nothing but that spread, gives back 0.77
    system = load_system("cori-knl").with_values(network__inter__latency_s=0.0, variability__step_time_cv=spread)
    tiny = Workload(model="t", flops_per_sample=1e12, parameters=1, tensors=1)
    row = predict(tiny, system, 8192, Settings(algorithm="tree", gradient_lag=1, rate=1e12))
    assert row["efficiency"] == pytest.approx(0.77, abs=2e-4)


def test_15pf_by_reading_of_the_spread():
    """Every reading is reported; a larger spread gives fewer FLOP/s; Cori's own spread brings the prediction to
    within 1% of the published peak, the carried-over one leaves it 7% above, and none reaches the sustained
    13.27 PF/s (the remaining gap is stated in docs/PERFORMANCE.md, not tuned away)."""
    rows = paper.sc17_sensitivity()
    assert [r["step_time_cv"] for r in rows] == sorted((r["step_time_cv"] for r in rows), reverse=True)
    flops = [r["predicted_flops"] for r in rows]
    assert flops == sorted(flops)
    cori, daint, former = rows
    daint_cv = yaml.safe_load((SYSTEM_DIR / "piz-daint.yaml").read_text())["variability"]["step_time_cv"]["value"]
    assert daint["step_time_cv"] == daint_cv and former["step_time_cv"] == 0.02
    assert abs(cori["predicted_flops"] / 15.07e15 - 1) < 0.01
    assert daint["predicted_flops"] > 1.05 * 15.07e15
    assert min(flops) > 13.27e15
    # efficiency is throughput over (workers x the published 2 TFLOP/s), by hand
    assert cori["predicted_efficiency"] == pytest.approx(cori["predicted_flops"] / (9592 * 2e12), rel=1e-9)


def test_mlperf_deepcam_run_backwards_by_hand():
    result = paper.mlperf_deepcam()
    assert result["nodes"] == 256  # 2,048 H100 in DGX H100 nodes of 8
    # the single-GPU rate x efficiency x GPUs is the published 30 samples/s per GPU
    assert result["single_gpu_samples_per_s"] * result["efficiency"] == pytest.approx(30.0, rel=1e-6)
    assert result["epochs_in_published_time"] == pytest.approx(30 * 2048 * 0.83 * 60 / 121266)
    assert result["fraction_of_fp16_peak"] == pytest.approx(
        result["single_gpu_samples_per_s"] * paper.DEEPLAB.flops_per_sample / 989e12)
    abl = result["ablations"]
    assert abl["flat ring instead of hierarchical"] < abl["as given"] < abl["no stragglers (step_time_cv = 0)"]
    assert abl["no overlap with the backward pass"] < abl["as given"]
