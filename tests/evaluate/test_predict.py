"""predict: CF-conventions mask files with the input's coordinates, padding for any grid, event tables."""
import numpy as np
import pytest

from exascale_climate.evaluate.predict import _input_coordinates, pad_for_model, write_mask_netcdf
from exascale_climate.data.samples import read_sample


def check_cf_mask(path, lat, lon, with_time=True):
    """The CF-1.8 points a reader (ncview, CDO, xarray) relies on."""
    import netCDF4

    with netCDF4.Dataset(path) as nc:
        assert nc.getncattr("Conventions") == "CF-1.8"
        mask = nc.variables["mask"]
        assert mask.dimensions == ("time", "lat", "lon")
        flags = np.asarray(mask.flag_values)
        assert flags.dtype == mask.dtype  # CF: flag_values has the variable's type
        assert len(mask.flag_meanings.split()) == len(flags)
        assert mask.flag_meanings == "background tropical_cyclone atmospheric_river"
        np.testing.assert_allclose(nc.variables["lat"][:], lat)
        np.testing.assert_allclose(nc.variables["lon"][:], lon)
        assert nc.variables["lat"].units == "degrees_north" and nc.variables["lon"].units == "degrees_east"
        assert nc.variables["lat"].standard_name == "latitude"
        assert "_FillValue" not in nc.variables["lat"].ncattrs()
        if with_time:
            assert "since" in nc.variables["time"].units
        return np.asarray(mask[:])


def test_mask_file_copies_the_input_coordinates(nc_sample, tmp_path):
    import xarray as xr

    path, _, labels, lat, lon = nc_sample
    sample = read_sample(path)
    coords = _input_coordinates(path, sample, steps=1)
    out = write_mask_netcdf(tmp_path / "m.nc", labels[None].astype(np.int8), coords,
                            probabilities=np.full(labels.shape + (3,), 1 / 3, np.float32)[None])
    mask = check_cf_mask(out, lat, lon)
    np.testing.assert_array_equal(mask[0], labels)
    with xr.open_dataset(out) as ds, xr.open_dataset(path) as src:
        assert ds["time"].values[0] == src["time"].values[0]  # decodes to the same instant
        assert ds["time"].attrs.get("calendar", ds["time"].encoding.get("calendar")) == "noleap"
        assert ds["probability"].dims == ("time", "class", "lat", "lon")
        assert float(ds["probability"].sum("class").mean()) == pytest.approx(1.0)


def test_padding_wraps_longitude_and_crops_back():
    x = np.arange(2 * 5 * 7 * 1, dtype=np.float32).reshape(1, 5, 7, 2)[..., :1].repeat(2, -1)
    padded, (rows, cols) = pad_for_model(x, 4)
    assert padded.shape[1] % 4 == 0 and padded.shape[2] % 4 == 0
    np.testing.assert_array_equal(padded[:, rows, cols], x)
    # longitude padding comes from the other side of the globe
    np.testing.assert_array_equal(padded[:, rows, cols.stop], x[:, :, 0])
    regional, (rows, cols) = pad_for_model(x, 4, periodic_lon=False)
    np.testing.assert_array_equal(regional[:, rows, cols.stop], x[:, :, -2])  # reflected, not wrapped
    untouched, crop = pad_for_model(np.zeros((1, 8, 8, 3)), 4)
    assert untouched.shape == (1, 8, 8, 3) and crop == (slice(0, 8), slice(0, 8))


# ------------------------------------------------------------------------------- with a trained model
def read_events(path):
    import csv

    return list(csv.DictReader(open(path)))


def hand_area_km2(lat, lon, mask):
    """Sum over mask pixels of R^2 * (sin(top) - sin(bottom)) * dlon, edges half-way between centres."""
    import math

    from exascale_climate.data.grid import EARTH_RADIUS_KM

    total = 0.0
    for i, j in zip(*np.nonzero(mask)):
        top = 90.0 if i == len(lat) - 1 else (lat[i] + lat[i + 1]) / 2
        bottom = -90.0 if i == 0 else (lat[i] + lat[i - 1]) / 2
        dlon = 360.0 / len(lon)
        total += EARTH_RADIUS_KM**2 * (math.sin(math.radians(top)) - math.sin(math.radians(bottom))) * math.radians(dlon)
    return total


def test_predict_netcdf_gives_cf_masks_and_consistent_event_areas(trained_assets, nc_sample, tmp_path):
    from exascale_climate.evaluate.predict import predict

    path, _, _, lat, lon = nc_sample
    result = predict(trained_assets.run_dir, [path], tmp_path / "out", probabilities=True)
    out = tmp_path / "out" / "sample-2000-01-01.mask.nc"
    assert result["outputs"] == [str(out)]
    mask = check_cf_mask(out, lat, lon)[0]
    events = read_events(tmp_path / "out" / "events.csv")
    assert len(events) == result["events"]
    for cls, name in ((1, "tropical_cyclone"), (2, "atmospheric_river")):
        got = sum(float(e["area_km2"]) for e in events if e["event_class"] == name)
        assert got == pytest.approx(hand_area_km2(lat, lon, mask == cls), rel=1e-9, abs=1e-6)
        assert sum(int(e["pixels"]) for e in events if e["event_class"] == name) == int((mask == cls).sum())


def force_tc_everywhere(run_dir, target):
    """A copy of the run's checkpoint whose output layer says "tropical cyclone" for every pixel."""
    import shutil

    from exascale_climate.train.checkpoints import WEIGHTS, load_for_inference, resolve_checkpoint

    ckpt = shutil.copytree(resolve_checkpoint(run_dir), target)
    model, _ = load_for_inference(ckpt)
    last = [layer for layer in model.layers if getattr(layer, "bias", None) is not None][-1]
    kernel, bias = last.get_weights()
    last.set_weights([np.zeros_like(kernel), np.array([0.0, 20.0, 0.0], bias.dtype)])
    model.save_weights(str(ckpt / WEIGHTS))
    return ckpt


def test_event_table_on_a_known_mask_any_grid(trained_assets, fields_factory, tmp_path):
    """All-TC prediction on a 45x70 grid (not a multiple of the model's 8): one TC covering the whole sphere,
    with the global PSL minimum and wind maximum."""
    import math

    from exascale_climate.data.writers import write_netcdf_sample
    from exascale_climate.data.grid import EARTH_RADIUS_KM
    from exascale_climate.data.grid import default_coordinates
    from exascale_climate.evaluate.predict import predict
    from exascale_climate.variables import VARIABLE_NAMES

    data, labels = fields_factory((45, 70), seed=5)
    lat, lon = default_coordinates(45, 70)
    src = write_netcdf_sample(tmp_path / "odd.nc", data, labels, list(VARIABLE_NAMES), lat=lat, lon=lon)
    ckpt = force_tc_everywhere(trained_assets.run_dir, tmp_path / "ckpt-forced")
    predict(ckpt, [src], tmp_path / "out", stats_file=trained_assets.stats_file)
    mask = check_cf_mask(tmp_path / "out" / "odd.mask.nc", lat, lon)[0]
    assert (mask == 1).all()
    (event,) = read_events(tmp_path / "out" / "events.csv")
    assert event["event_class"] == "tropical_cyclone" and int(event["pixels"]) == 45 * 70
    assert float(event["area_km2"]) == pytest.approx(4 * math.pi * EARTH_RADIUS_KM**2, rel=1e-9)
    v = list(VARIABLE_NAMES)
    assert float(event["min_psl_pa"]) == pytest.approx(data[..., v.index("PSL")].min())
    assert float(event["max_wind_ms"]) == pytest.approx(np.hypot(data[..., v.index("UBOT")],
                                                                 data[..., v.index("VBOT")]).max(), rel=1e-6)


def test_predict_cli_on_an_hdf5_directory_uses_the_files_grid(trained_assets, tmp_path):
    import xarray as xr
    from click.testing import CliRunner

    from exascale_climate.cli import main

    res = CliRunner().invoke(main, ["predict", "--checkpoint", str(trained_assets.run_dir),
                                    str(trained_assets.test_dir), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "3 file(s)" in res.output
    outputs = sorted((tmp_path / "out").glob("*.mask.nc"))
    assert len(outputs) == 3 and (tmp_path / "out" / "events.csv").exists()
    sample = read_sample(trained_assets.test_dir / "data-2000-01-09-00-00-00.h5")
    with xr.open_dataset(outputs[0]) as ds:
        np.testing.assert_allclose(ds["lat"].values, sample.lat)
        assert str(ds["time"].values[0]).startswith("2000-01-09")
        assert ds["mask"].shape == (1, 48, 72)


def test_predict_bad_input_names_the_file(trained_assets, tmp_path):
    from exascale_climate.errors import DataError
    from exascale_climate.evaluate.predict import predict

    from exascale_climate.errors import ExaclimateError

    bad = tmp_path / "broken.nc"
    bad.write_bytes(b"CDF\x01 not really")
    with pytest.raises(DataError, match="broken.nc"):
        predict(trained_assets.run_dir, [bad], tmp_path / "out", strict=True)
    with pytest.raises(ExaclimateError, match="none of the 1 input file.s. could be read; the first: .*broken.nc"):
        predict(trained_assets.run_dir, [bad], tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.nc"))
    with pytest.raises(DataError, match="--stats"):
        predict(trained_assets.run_dir, [bad], tmp_path / "out", stats_file=tmp_path / "missing-stats.h5")


def _mixed_inputs(trained_assets, directory):
    """The 3 test samples with a broken file sorted between them and one with a missing variable after them."""
    import shutil

    directory.mkdir()
    good = sorted(trained_assets.test_dir.glob("*.h5"))
    for p in good:
        shutil.copy(p, directory / p.name)
    (directory / "data-2000-01-09-30-00-00.h5").write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    import h5py

    implausible = directory / "data-2000-12-30-00-00-00.h5"  # a whole file with one impossible value
    shutil.copy(good[0], implausible)
    with h5py.File(implausible, "r+") as f:
        f["climate/data"][2, 3, 0] = 3e38  # TMQ

    with h5py.File(directory / "data-2000-12-31-00-00-00.h5", "w") as f:  # no climate/data
        f.create_dataset("other", data=[1, 2])
    return good


def _events(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def test_predict_names_and_skips_bad_files_and_writes_events_for_the_rest(trained_assets, tmp_path):
    from click.testing import CliRunner

    from exascale_climate.cli import main
    from exascale_climate.evaluate.predict import predict

    good = _mixed_inputs(trained_assets, tmp_path / "in")
    res = CliRunner().invoke(main, ["predict", "--checkpoint", str(trained_assets.run_dir),
                                                    str(tmp_path / "in"), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output + res.stderr
    assert "3 file(s)" in res.stdout and "3 skipped" in res.stdout
    skipped = [line for line in res.stderr.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == 3
    assert "data-2000-01-09-30-00-00.h5" in skipped[0] and "data-2000-12-31-00-00-00.h5" in skipped[2]
    assert "data-2000-12-30-00-00-00.h5 [TMQ]: values" in skipped[1] and "outside the plausible range" in skipped[1]
    assert "Traceback" not in res.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mask.nc")) == sorted(
        f"{p.stem}.mask.nc" for p in good)
    # the event table is the one a run on the good files alone writes
    predict(trained_assets.run_dir, good, tmp_path / "alone")
    assert _events(tmp_path / "out" / "events.csv") == _events(tmp_path / "alone" / "events.csv")


def test_predict_strict_stops_at_the_bad_file_but_keeps_the_table_of_what_it_did(trained_assets, tmp_path):
    from click.testing import CliRunner

    from exascale_climate.cli import main
    from exascale_climate.evaluate.predict import predict

    good = _mixed_inputs(trained_assets, tmp_path / "in")
    res = CliRunner().invoke(main, ["predict", "--strict", "--checkpoint",
                                                    str(trained_assets.run_dir), str(tmp_path / "in"),
                                                    "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "data-2000-01-09-30-00-00.h5" in errors[0] and "Traceback" not in res.stderr
    before = [p for p in good if p.name < "data-2000-01-09-30-00-00.h5"]
    assert before and sorted(p.name for p in (tmp_path / "out").glob("*.mask.nc")) == sorted(
        f"{p.stem}.mask.nc" for p in before)
    predict(trained_assets.run_dir, before, tmp_path / "alone")
    assert _events(tmp_path / "out" / "events.csv") == _events(tmp_path / "alone" / "events.csv")


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_predict_stops_on_a_signal_with_masks_and_events_consistent(trained_assets, tmp_path, sig):
    """The real CLI in a subprocess on 60 inputs; SIGINT or SIGTERM once the first mask file is complete."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import netCDF4

    src = sorted(trained_assets.test_dir.glob("*.h5"))[0]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(60):
        os.link(src, inputs / f"data-{i:03d}.h5")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "exascale_climate.cli", "predict", "--checkpoint",
                             str(trained_assets.run_dir), str(inputs), "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while proc.poll() is None and not (out.exists() and list(out.glob("*.mask.nc"))):
            time.sleep(0.002)
        proc.send_signal(signal.Signals[sig])
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.Signals[sig], err.decode()
    assert err.decode().strip().splitlines()[-1].startswith(f"error: interrupted by {sig}")
    assert "Traceback" not in err.decode()  # e.g. an interruption h5py wrapped in a SystemError (8dfb5b5)
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    masks = sorted(out.glob("*.mask.nc"))
    assert 1 <= len(masks) < 60
    for p in masks:
        with netCDF4.Dataset(p) as nc:
            assert nc.variables["mask"].shape == (1, 48, 72)
    done = {p.name[: -len(".mask.nc")] + ".h5" for p in masks}
    assert {row["source"] for row in _events(out / "events.csv")} <= done
