"""convert / label / split / inspect: round trips, bad inputs (named, skippable), atomic outputs and resume."""
import json

import h5py
import netCDF4
import numpy as np
import pytest

from exascale_climate.config import LabellerConfig
from exascale_climate.data.convert import convert, label_files
from exascale_climate.data.options import parse_chunk_option
from exascale_climate.data.layouts import list_samples
from exascale_climate.data.samples import read_sample
from exascale_climate.data.writers import write_deepcam_sample, write_netcdf_sample
from exascale_climate.data.inspect import format_inspection, inspect_file
from exascale_climate.data.labeller import label_fields
from exascale_climate.data.split import assign, split_counts, split_dataset
from exascale_climate.data.synthetic import Generator
from exascale_climate.config import SynthConfig
from exascale_climate.errors import DataError
from exascale_climate.variables import VARIABLE_NAMES, VARIABLES


@pytest.fixture(scope="module")
def generator():
    return Generator(SynthConfig(samples=8, grid=(96, 144), seed=5))


def write_step(generator, path, index, labels=True):
    fields = generator.fields(index)
    data = np.stack([fields[v] for v in VARIABLE_NAMES], axis=-1)
    lab = label_fields(fields, generator.grid.lat, generator.grid.lon) if labels else None
    write_netcdf_sample(path, data, lab, list(VARIABLE_NAMES), lat=generator.grid.lat, lon=generator.grid.lon,
                        time_hours=3.0 * index)
    return data, lab


def test_convert_round_trip_options_and_resume(tmp_path, generator):
    raw = tmp_path / "raw"
    expected = {}
    for i in range(3):
        expected[f"data-s{i}.h5"] = write_step(generator, raw / f"s{i}.nc", i)
    out = tmp_path / "h5"
    summary = convert(sorted(raw.glob("*.nc")), out)
    assert summary["written"] == 3 and summary["skipped"] == []
    for name, (data, labels) in expected.items():
        s = read_sample(out / name)
        np.testing.assert_array_equal(s.data, data)
        np.testing.assert_array_equal(s.labels, labels)
        assert s.attrs["source"] == name.replace("data-", "").replace(".h5", ".nc") and s.time.startswith("2000-01-01")
    (out / ".data-s9.h5.tmp-123-abcdef").write_bytes(b"half a file")  # an interrupted earlier run
    again = convert(sorted(raw.glob("*.nc")), out)
    assert again["written"] == 0 and again["existing"] == 3
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    small = convert([raw / "s0.nc"], tmp_path / "f16", channels=["T500", "TMQ", "U850"], dtype="float16",
                    compression="gzip:1", chunks=parse_chunk_option("48x72x3"))
    assert small["written"] == 1
    with h5py.File(tmp_path / "f16" / "data-s0.h5") as f:
        assert f["climate/data"].dtype == np.float16 and f["climate/data"].chunks == (48, 72, 3)
    s = read_sample(tmp_path / "f16" / "data-s0.h5")
    assert s.variables == ["T500", "TMQ", "U850"]
    np.testing.assert_allclose(s.data[..., 1], expected["data-s0.h5"][0][..., 0], rtol=2e-3, atol=2e-3)
    convert([raw / "s0.nc"], tmp_path / "f16b", dtype="float16")  # PS, PSL in Pa overflow float16: hPa instead
    with h5py.File(tmp_path / "f16b" / "data-s0.h5") as f:
        units = [u.decode() if isinstance(u, bytes) else u for u in f["climate"].attrs["units"]]
        assert f["climate/data"].dtype == np.float16 and units[6:8] == ["hPa", "hPa"] and units[0] == "kg m-2"
    s = read_sample(tmp_path / "f16b" / "data-s0.h5")  # read back in Pa
    np.testing.assert_allclose(s.data[..., 6:8], expected["data-s0.h5"][0][..., 6:8], rtol=1e-3)
    in_mm = expected["data-s0.h5"][0].copy()
    in_mm[..., VARIABLE_NAMES.index("Z200")] *= 1000.0
    with pytest.raises(DataError, match=r"\[Z200\].*float16 range"):  # no larger unit to fall back on
        write_deepcam_sample(tmp_path / "z.h5", in_mm, None, list(VARIABLE_NAMES), dtype="float16",
                             units=["mm" if v.name == "Z200" else v.units for v in VARIABLES])


def test_convert_many_time_steps_per_file(tmp_path, generator):
    data0, lab0 = write_step(generator, tmp_path / "a.nc", 0)
    data1, lab1 = write_step(generator, tmp_path / "b.nc", 1)
    path = tmp_path / "multi.nc"
    with netCDF4.Dataset(path, "w") as nc:  # ClimateNet style: time x lat x lon, several steps
        nc.createDimension("time", 2)
        nc.createDimension("lat", 96)
        nc.createDimension("lon", 144)
        nc.createVariable("lat", "f8", ("lat",))[:] = generator.grid.lat
        nc.createVariable("lon", "f8", ("lon",))[:] = generator.grid.lon
        for i, name in enumerate(VARIABLE_NAMES):
            nc.createVariable(name, "f4", ("time", "lat", "lon"))[:] = np.stack([data0[..., i], data1[..., i]])
        nc.createVariable("LABELS", "i8", ("time", "lat", "lon"))[:] = np.stack([lab0, lab1])
    convert([path], tmp_path / "out")
    files = list_samples(tmp_path / "out")
    assert [p.name for p in files] == ["data-multi-0000.h5", "data-multi-0001.h5"]
    np.testing.assert_array_equal(read_sample(files[1]).data, data1)
    np.testing.assert_array_equal(read_sample(files[1]).labels, lab1)


def test_bad_inputs_stop_or_are_skipped(tmp_path, generator):
    raw = tmp_path / "raw"
    write_step(generator, raw / "a_good.nc", 0)
    write_step(generator, raw / "b_nan.nc", 1)
    with netCDF4.Dataset(raw / "b_nan.nc", "a") as nc:
        nc.variables["T500"][0, 5, 5] = np.nan
    write_step(generator, raw / "c_trunc.nc", 2)
    blob = (raw / "c_trunc.nc").read_bytes()
    (raw / "c_trunc.nc").write_bytes(blob[: len(blob) // 2])
    write_step(generator, raw / "d_nolabels.nc", 3, labels=False)
    write_step(generator, raw / "e_good.nc", 4)
    inputs = sorted(raw.glob("*.nc"))
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"b_nan\.nc \[T500\].*NaN"):
        convert(inputs, out)
    assert [p.name for p in list_samples(out)] == ["data-a_good.h5"]  # finished work is kept, nothing half-written
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    summary = convert(inputs, out, skip_bad=True, workers=2)
    errors = {item["file"].rsplit("/", 1)[-1]: item["error"] for item in summary["skipped"]}
    assert set(errors) == {"b_nan.nc", "c_trunc.nc", "d_nolabels.nc"}
    assert "[T500]" in errors["b_nan.nc"] and "truncated or corrupt" in errors["c_trunc.nc"]
    assert "[LABELS]" in errors["d_nolabels.nc"]
    assert summary["written"] == 1 and summary["existing"] == 1
    with pytest.raises(DataError, match=r"c_trunc\.nc"):
        convert([raw / "c_trunc.nc"], out, workers=2)


def test_label_files_netcdf_and_hdf5(tmp_path, generator):
    data, labels = write_step(generator, tmp_path / "x.nc", 2, labels=False)
    summary = label_files([tmp_path / "x.nc"], tmp_path / "labelled")
    assert summary["labelled"] == 1
    s = read_sample(tmp_path / "labelled" / "x.nc")
    fields = {v: data[..., i] for i, v in enumerate(VARIABLE_NAMES)}
    expected = label_fields(fields, generator.grid.lat, generator.grid.lon)
    np.testing.assert_array_equal(s.labels, expected)
    assert "labeller" in s.attrs["label_source"]
    h5 = write_deepcam_sample(tmp_path / "data-x.h5", data, np.zeros_like(expected), list(VARIABLE_NAMES))
    label_files([h5], cfg=LabellerConfig(ar_tmq_anomaly=1e6))  # in place; no AR can pass this threshold
    relabelled = read_sample(h5).labels
    assert not (relabelled == 2).any() and (relabelled == 1).sum() == (expected == 1).sum()
    (tmp_path / "bad.nc").write_bytes(b"CDF\x01 broken")
    result = label_files([tmp_path / "bad.nc", tmp_path / "x.nc"], tmp_path / "l2", skip_bad=True)
    assert result["labelled"] == 1 and len(result["skipped"]) == 1
    with pytest.raises(DataError, match="bad.nc"):
        label_files([tmp_path / "bad.nc"], tmp_path / "l3")


def test_split_deterministic_disjoint_and_rerunnable(tmp_path):
    src = tmp_path / "all"
    data = np.zeros((4, 6, 16), np.float32)
    for i in range(20):
        write_deepcam_sample(src / f"data-{i:03d}.h5", data + i, np.zeros((4, 6), np.uint8), list(VARIABLE_NAMES))
    assert split_counts(20, (0.8, 0.1, 0.1)) == [16, 2, 2]
    assert split_counts(3, (0.8, 0.1, 0.1)) == [1, 1, 1]
    plan = assign(list_samples(src), strategy="time", gap=1)
    assert [p.name for p in plan["valid"]][0] > [p.name for p in plan["train"]][-1]  # contiguous blocks
    assert len(plan["train"]) + len(plan["valid"]) + len(plan["test"]) == 18
    counts = split_dataset(src, tmp_path, strategy="random", seed=7)
    assert counts == {"train": 16, "valid": 2, "test": 2}
    names = {k: sorted(p.name for p in list_samples(tmp_path / k)) for k in counts}
    assert not set(names["train"]) & set(names["test"]) and not set(names["valid"]) & set(names["test"])
    assert sorted(sum(names.values(), [])) == [p.name for p in list_samples(src)]
    manifest = json.loads((tmp_path / "split.json").read_text())
    assert sorted(manifest["splits"]["test"]) == names["test"]
    again = split_dataset(src, tmp_path, strategy="random", seed=7)
    assert again == counts and sorted(p.name for p in list_samples(tmp_path / "test")) == names["test"]
    split_dataset(src, tmp_path, fractions=(0.5, 0.25, 0.25), strategy="random", seed=7)  # stale files go away
    assert len(list_samples(tmp_path / "train")) == 10
    with pytest.raises(DataError, match="fractions"):
        split_dataset(src, tmp_path, fractions=(1.0, -1.0, 0.0))


def test_inspect_reports_problems_without_failing(tmp_path, generator):
    data, labels = write_step(generator, tmp_path / "s.nc", 0)
    with netCDF4.Dataset(tmp_path / "s.nc", "a") as nc:
        nc.variables["PSL"][0, 1, 1:4] = np.nan
        nc.variables["LABELS"][0, 0, 0] = 5
    info = inspect_file(tmp_path / "s.nc")
    assert info["layout"] == "netcdf" and info["variables"]["PSL"]["nan"] == 3
    assert info["labels"]["outside_range"] == 1 and info["missing_variables"] == []
    text = format_inspection(info)
    assert "non-finite" in text and "OUTSIDE 0..2" in text
    h5 = write_deepcam_sample(tmp_path / "data-s.h5", data, labels, list(VARIABLE_NAMES), compression="lzf")
    info = inspect_file(h5)
    assert info["layout"] == "deepcam" and info["data"]["shape"] == [96, 144, 16]
    assert abs(sum(info["labels"]["fractions"].values()) - 1) < 1e-9


def test_inspect_reads_both_hdf5_layouts_where_the_readers_do(tmp_path):
    """Channels-first Gordon Bell and channels-last DeepCAM files of the same fields: the same per-variable
    figures and class fractions, equal to numpy's on the arrays written."""
    from exascale_climate.data.writers import write_gordonbell_sample

    rng = np.random.default_rng(0)
    data = rng.normal(size=(12, 18, 16)).astype(np.float32) + np.arange(16, dtype=np.float32)
    labels = rng.integers(0, 3, (12, 18)).astype(np.uint8)
    for path in (write_gordonbell_sample(tmp_path / "gb.h5", data, labels, list(VARIABLE_NAMES)),
                 write_deepcam_sample(tmp_path / "dc.h5", data, labels, list(VARIABLE_NAMES))):
        info = inspect_file(path)
        for i, name in enumerate(VARIABLE_NAMES):
            assert info["variables"][name]["max"] == pytest.approx(float(data[..., i].max()))
            assert info["variables"][name]["mean"] == pytest.approx(float(data[..., i].mean()), rel=1e-6)
        assert list(info["labels"]["fractions"].values()) == pytest.approx([(labels == c).mean() for c in range(3)])
