"""The `exaclimate data ...` commands end to end (the demo's data steps), and their one-line errors."""
import h5py
import netCDF4
import numpy as np
from click.testing import CliRunner

from exascale_climate.cli import main
from exascale_climate.data.layouts import list_samples
from exascale_climate.data.samples import read_sample
from exascale_climate.data.stats import read_stats


def run(*args):
    return CliRunner().invoke(main, list(map(str, args)), catch_exceptions=False)


def test_demo_data_steps(tmp_path):
    raw, data = tmp_path / "raw", tmp_path / "data"
    r = run("data", "synth", "--out", raw, "--samples", 6, "--grid", "96x144", "--seed", 2, "--workers", 1)
    assert r.exit_code == 0, r.output
    assert "6 written" in r.output and "atmospheric_river" in r.output
    inputs = sorted(raw.glob("data-*.nc"))
    assert len(inputs) == 6
    r = run("data", "convert", *inputs, "--out", data / "all")
    assert r.exit_code == 0 and "6 written" in r.output
    r = run("data", "split", data / "all", "--out", data, "--fractions", "4,1,1")
    assert r.exit_code == 0 and "train 4, valid 1, test 1" in r.output
    r = run("data", "stats", data / "train", "--out", data / "stats.h5")
    assert r.exit_code == 0 and "class weights (inverse_sqrt)" in r.output
    stats = read_stats(data / "stats.h5")
    first = read_sample(list_samples(data / "train")[0])
    assert stats.count[0] == 4 * 96 * 144 and stats.variables == first.variables
    assert "labeller" in first.attrs["label_source"] and first.attrs["calendar"] == "noleap"
    r = run("data", "inspect", list_samples(data / "test")[0])
    assert r.exit_code == 0 and "layout deepcam" in r.output and "PSL" in r.output
    r = run("data", "label", inputs[0], "--out", tmp_path / "relabelled", "--set", "labeller.ar_tmq_anomaly=1000")
    assert r.exit_code == 0, r.output
    assert not (read_sample(tmp_path / "relabelled" / inputs[0].name).labels == 2).any()


def test_bad_input_is_one_line_error(tmp_path):
    raw = tmp_path / "raw"
    run("data", "synth", "--out", raw, "--samples", 2, "--grid", "96x144")
    bad = sorted(raw.glob("*.nc"))[1]
    with netCDF4.Dataset(bad, "a") as nc:
        nc.variables["LABELS"][0, 3, 3] = 7
    r = CliRunner().invoke(main, ["data", "convert", *map(str, sorted(raw.glob("*.nc"))), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0 and bad.name in r.output and "[LABELS]" in r.output
    assert "Traceback" not in r.output
    r = run("data", "convert", *sorted(raw.glob("*.nc")), "--out", tmp_path / "o", "--skip-bad")
    assert r.exit_code == 0 and "1 skipped" in r.output
    with h5py.File(list_samples(tmp_path / "o")[0]) as f:
        assert np.isfinite(f["climate/data"][()]).all()
    r = CliRunner().invoke(main, ["data", "convert", str(bad), "--out", str(tmp_path / "p"), "--chunks", "9x9"])
    assert r.exit_code == 2 and "--chunks" in r.output
    r = CliRunner().invoke(main, ["data", "synth", "--out", str(tmp_path / "q"), "--grid", "96by144"])
    assert r.exit_code == 2 and "grid" in r.output


def test_convert_and_label_take_directories(tmp_path):
    """A directory stands for its data files (not stats.h5, not temporaries): the outputs are those of the
    files given one by one."""
    raw = tmp_path / "raw"
    assert run("data", "synth", "--out", raw, "--samples", 2, "--grid", "96x144", "--seed", 4).exit_code == 0
    files = sorted(raw.glob("data-*.nc"))
    (raw / "stats.h5").write_bytes(b"not a sample")
    (raw / "notes.txt").write_text("not data")
    r = run("data", "convert", raw, "--out", tmp_path / "from_dir")
    assert r.exit_code == 0 and "2 written" in r.output, r.output
    run("data", "convert", *files, "--out", tmp_path / "from_files")
    names = [p.name for p in list_samples(tmp_path / "from_files")]
    assert [p.name for p in list_samples(tmp_path / "from_dir")] == names and len(names) == 2
    for name in names:
        assert (tmp_path / "from_dir" / name).read_bytes() == (tmp_path / "from_files" / name).read_bytes()
    r = run("data", "label", tmp_path / "from_dir", "--out", tmp_path / "relabelled", "--set",
            "labeller.ar_tmq_anomaly=1000")
    assert r.exit_code == 0 and "2 labelled" in r.output, r.output
    for name in names:
        assert not (read_sample(tmp_path / "relabelled" / name).labels == 2).any()
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(main, ["data", "convert", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "empty" in r.output and "no data files" in r.output
    assert r.output.strip().count("\n") == 0
