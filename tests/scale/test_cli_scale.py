"""`exaclimate scale predict|fit|paper` end to end as a user runs them (real subprocesses, files on disk)."""
import json
import subprocess
import sys

import pytest

TINY = ["--set", "model.tiramisu.down_layers=[1,1]", "--set", "model.tiramisu.up_layers=[1,1]",
        "--set", "model.tiramisu.bottleneck_layers=1", "--set", "model.tiramisu.growth_rate=4",
        "--set", "model.tiramisu.initial_filters=8", "--set", "model.tiramisu.kernel_size=3"]


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "exascale_climate.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_predict_writes_table_json_and_png(tmp_path):
    out_json, out_png = tmp_path / "scale.json", tmp_path / "scale.png"
    done = cli("scale", "predict", "--config", "demo", *TINY, "--system", "perlmutter", "--nodes", "1,2,16",
               "--grid", "48x72", "--set", "train.batch_size=3", "--json", str(out_json), "--png", str(out_png))
    assert done.returncode == 0, done.stderr
    assert "efficiency" in done.stdout and "perlmutter" in done.stdout
    result = json.loads(out_json.read_text())
    rows = result["rows"]
    assert [r["nodes"] for r in rows] == [1, 2, 16]
    assert [r["devices"] for r in rows] == [4, 8, 64]  # 4 A100 per Perlmutter node
    assert result["workload"]["batch"] == 3 and result["workload"]["grid"] == "48x72"
    for r in rows:  # throughput is devices x batch per step, efficiency at most 1
        assert r["samples_per_s"] == pytest.approx(r["devices"] * 3 / r["step_s"])
        assert 0 < r["efficiency"] <= 1
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp*"))  # written under temporary names, then renamed


@pytest.mark.parametrize("change, key", [
    (("bandwidth_Bps: {value: 23.0e9", "bandwidth_Bps: {value: -23.0e9"), "network.inter.bandwidth_Bps"),
    (("  devices: {value: 6,", "  gpus: {value: 6,"), "node.devices"),  # missing
    (("jitter_cv: {value: 0.0110,", "jitter_cv: {value: -0.0110,"), "variability.jitter_cv"),  # negative
    (("  jitter_cv: {value: 0.0110,", "  jitter_cv:\n  unused: {value: 0.0110,"), "variability.jitter_cv"),  # no value
])
def test_bad_system_file_is_one_line_error_naming_the_key(tmp_path, change, key):
    bad = tmp_path / "mine.yaml"
    text = open(__import__("exascale_climate.scale.systems", fromlist=["x"]).SYSTEM_DIR / "summit.yaml").read()
    assert change[0] in text
    bad.write_text(text.replace(*change))
    done = cli("scale", "predict", "--config", "demo", "--system", str(bad), "--nodes", "1,2", "--grid", "48x72")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert str(bad) in lines[0] and key in lines[0]


def test_too_many_nodes_for_the_system_is_an_error():
    done = cli("scale", "predict", "--config", "demo", "--system", "summit", "--nodes", "1,5000", "--grid", "48x72")
    assert done.returncode == 2 and "max_nodes" in done.stderr


def test_paper_command_prints_every_case_and_ablation(tmp_path):
    done = cli("scale", "paper", "--json", str(tmp_path / "paper.json"))
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "paper.json").read_text())
    cases = result["sc18"]
    assert len(cases) == 3 and all("no gradient lag" in c["ablations"] for c in cases)
    assert "one synchronous group, no servers" in result["sc17"]["ablations"]
    assert "flat ring instead of hierarchical" in result["mlperf_deepcam"]["ablations"]
    assert "SC17 climate" in done.stdout and "MLPerf HPC v3.0 DeepCAM" in done.stdout
    # Summit: the jitter switched off on its own, and every reading of the published spreads
    assert "no step-to-step jitter (jitter_cv = 0)" in cases[1]["ablations"]
    readings = [r["spread"] for r in result["summit_spreads"]]
    assert any("summit.yaml" in r for r in readings) and "no spread" in readings
    assert "by reading of the published spreads" in done.stdout
