"""Round trips through every layout, layout detection, and each bad-input case naming file and variable."""
import h5py
import netCDF4
import numpy as np
import pytest

from exascale_climate.data.layouts import detect_layout, list_samples
from exascale_climate.data.rawread import ROWS_PER_READ
from exascale_climate.data.samples import read_labels, read_sample
from exascale_climate.data.synthetic import weather_like
from exascale_climate.data.writers import write_deepcam_sample, write_gordonbell_sample, write_netcdf_sample
from exascale_climate.errors import DataError
from exascale_climate.variables import VARIABLE_NAMES, VARIABLES

H, W = 12, 18


# Plausible weather (issue 23: values outside a variable's physical range are rejected on read), hand-picked in
# VARIABLE_NAMES order.
MEAN = np.array([25, 0, 0, 0, 0, 0.01, 97000, 101000, 220, 255, 1e-7, 288, 287, 100, 11800, 60], np.float32)
SPREAD = np.array([3, 5, 5, 5, 5, 0.001, 500, 500, 3, 5, 1e-8, 5, 5, 50, 100, 2], np.float32)


def _fields(seed=0):
    rng = np.random.default_rng(seed)
    data = (rng.normal(size=(H, W, 16)) * SPREAD + MEAN).astype(np.float32)
    labels = rng.integers(0, 3, size=(H, W)).astype(np.uint8)
    return data, labels


def _grid():
    return np.linspace(-90, 90, H), np.arange(W) * 360.0 / W


def test_deepcam_round_trip_with_channels_and_metadata(tmp_path):
    data, labels = _fields()
    lat, lon = _grid()
    path = write_deepcam_sample(tmp_path / "data-1.h5", data, labels, list(VARIABLE_NAMES), source="x.nc",
                                time="2000-01-01T00:00:00", lat=lat, lon=lon)
    assert detect_layout(path) == "deepcam"
    s = read_sample(path)
    np.testing.assert_array_equal(s.data, data)
    np.testing.assert_array_equal(s.labels, labels)
    assert s.labels.dtype == np.uint8 and s.variables == list(VARIABLE_NAMES)
    assert s.time == "2000-01-01T00:00:00" and s.attrs["source"] == "x.nc"
    np.testing.assert_allclose(s.lat, lat)
    sub = read_sample(path, channels=["PSL", "TMQ"])
    np.testing.assert_array_equal(sub.data, data[..., [7, 0]])
    assert sub.variables == ["PSL", "TMQ"]
    np.testing.assert_array_equal(read_labels(path), labels)


def test_deepcam_float16_compressed_chunked(tmp_path):
    data, labels = _fields()
    data[..., 6:8] /= 100.0  # PS, PSL in hPa here (float16 ends at 65504), recorded as such
    units = [v.units for v in VARIABLES]
    units[6:8] = ["hPa", "hPa"]
    path = write_deepcam_sample(tmp_path / "data-2.h5", data, labels, list(VARIABLE_NAMES), dtype="float16",
                                compression="gzip:2", chunks=(6, 9, 16), units=units)
    with h5py.File(path) as f:
        assert f["climate/data"].dtype == np.float16 and f["climate/data"].chunks == (6, 9, 16)
        assert f["climate/data"].compression == "gzip"
        assert [u.decode() if isinstance(u, bytes) else u for u in f["climate"].attrs["units"]][6:8] == ["hPa"] * 2
    s = read_sample(path)  # back in Pa: 1 hPa = 100 Pa, by hand
    expected = data.astype(np.float64)
    expected[..., 6:8] *= 100.0
    np.testing.assert_allclose(s.data, expected, rtol=1e-3, atol=1e-2)


def test_subset_file_reports_missing_variable(tmp_path):
    data, labels = _fields()
    path = write_deepcam_sample(tmp_path / "data-3.h5", data[..., :2], labels, ["TMQ", "U850"])
    assert read_sample(path).variables == ["TMQ", "U850"]
    with pytest.raises(DataError, match=r"data-3.h5 \[PSL\].*missing"):
        read_sample(path, channels=["PSL"])


def test_gordonbell_round_trip(tmp_path):
    data, labels = _fields(1)
    path = tmp_path / "gb.h5"
    with h5py.File(path, "w") as f:  # the published layout: channels first, no variable names
        f["climate/data"] = np.moveaxis(data, -1, 0)
        f["climate/labels"] = labels.astype(np.int32)
        f["climate/stats"] = np.zeros((16, 4))
    assert detect_layout(path) == "gordonbell"
    s = read_sample(path)
    np.testing.assert_array_equal(s.data, data)
    np.testing.assert_array_equal(s.labels, labels)
    assert s.attrs["stats"].shape == (16, 4)
    path2 = write_gordonbell_sample(tmp_path / "gb2.h5", data, labels, list(VARIABLE_NAMES))
    s2 = read_sample(path2, channels=["T200"])
    np.testing.assert_array_equal(s2.data[..., 0], data[..., 8])
    np.testing.assert_allclose(s2.attrs["stats"][8, 0], data[..., 8].mean(dtype=np.float64), rtol=1e-6)


def test_netcdf_round_trip_via_xarray_view(tmp_path):
    import xarray as xr

    data, labels = _fields(2)
    lat, lon = _grid()
    path = write_netcdf_sample(tmp_path / "s.nc", data, labels, list(VARIABLE_NAMES), lat=lat, lon=lon,
                               time_hours=6.0)
    assert detect_layout(path) == "netcdf"
    s = read_sample(path)
    np.testing.assert_array_equal(s.data, data)
    np.testing.assert_array_equal(s.labels, labels)
    assert s.time.startswith("2000-01-01T06:00")
    with xr.open_dataset(path) as ds:
        assert ds["TMQ"].dims == ("time", "lat", "lon") and ds["PSL"].attrs["units"] == "Pa"
        assert set(np.unique(ds["LABELS"].values)) <= {0, 1, 2}


def test_netcdf_published_layout_many_steps_2d_labels(tmp_path):
    """ClimateNet files: float variables (time, lat, lon), LABELS (lat, lon) int64; some files hold many steps."""
    data, labels = _fields(3)
    path = tmp_path / "climatenet.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_64BIT_OFFSET") as nc:
        nc.createDimension("time", 2)
        nc.createDimension("lat", H)
        nc.createDimension("lon", W)
        nc.createVariable("lat", "f8", ("lat",))[:] = np.linspace(-90, 90, H)
        nc.createVariable("lon", "f8", ("lon",))[:] = np.arange(W) * 20.0
        for i, name in enumerate(VARIABLE_NAMES):
            v = nc.createVariable(name, "f4", ("time", "lat", "lon"))
            v[0] = data[..., i]
            v[1] = data[..., i] + SPREAD[i]
        nc.createVariable("LABELS", "i4", ("lat", "lon"))[:] = labels  # netCDF-3 has no int64
    assert detect_layout(path) == "netcdf"
    s = read_sample(path, time_index=1)
    np.testing.assert_allclose(s.data, data + SPREAD)
    np.testing.assert_array_equal(s.labels, labels)
    from exascale_climate.data.layouts import netcdf_time_steps

    assert netcdf_time_steps(path) == 2
    with pytest.raises(DataError, match="time index 2"):
        read_sample(path, time_index=2)


@pytest.mark.parametrize("case", ["nan", "inf", "labels", "missing", "shape", "truncated", "garbage"])
def test_bad_netcdf_inputs_name_file_and_variable(tmp_path, case):
    data, labels = _fields(4)
    lat, lon = _grid()
    variables = list(VARIABLE_NAMES)
    if case == "nan":
        data[3, 4, 7] = np.nan
    if case == "inf":
        data[0, 0, 0] = np.inf
    if case == "labels":
        labels[1, 1] = 3
    path = tmp_path / "bad.nc"
    if case == "labels":  # write_netcdf_sample refuses bad labels itself; write the file by hand
        write_netcdf_sample(path, data, None, variables, lat=lat, lon=lon)
        with netCDF4.Dataset(path, "a") as nc:
            nc.createVariable("LABELS", "i1", ("time", "lat", "lon"))[0] = labels
    elif case == "missing":
        write_netcdf_sample(path, data[..., 1:], labels, variables[1:], lat=lat, lon=lon)
    elif case == "shape":
        write_netcdf_sample(path, data, labels, variables, lat=lat, lon=lon)
        with netCDF4.Dataset(path, "a") as nc:
            nc.createDimension("lon2", W - 1)
            del_name = "PSL"
            nc.renameVariable(del_name, "PSL_old")
            nc.createVariable(del_name, "f4", ("time", "lat", "lon2"))[0] = data[:, :-1, 7]
    else:
        write_netcdf_sample(path, data, labels, variables, lat=lat, lon=lon)
    if case == "truncated":
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 3])
    if case == "garbage":
        path.write_bytes(b"this is not a climate file" * 10)
    expected = {"nan": r"\[PSL\].*NaN", "inf": r"\[TMQ\].*Inf", "labels": r"\[LABELS\].*0\.\.3 outside",
                "missing": r"\[TMQ\].*missing", "shape": r"\[PSL\].*shape", "truncated": "truncated or corrupt",
                "garbage": "unknown signature"}[case]
    with pytest.raises(DataError, match=r"bad\.nc.*" + expected):
        read_sample(path)


def test_bad_hdf5_inputs(tmp_path):
    data, labels = _fields(5)
    path = write_deepcam_sample(tmp_path / "data-x.h5", data, labels, list(VARIABLE_NAMES))
    with h5py.File(path, "a") as f:
        f["climate/labels_0"][0, 0] = 9
    with pytest.raises(DataError, match=r"data-x.h5 \[climate/labels_0\].*outside"):
        read_sample(path)
    with pytest.raises(DataError, match=r"\[climate/labels_0\]"):
        write_deepcam_sample(tmp_path / "data-y.h5", data, labels.astype(np.int64) - 1, list(VARIABLE_NAMES))
    assert not list(tmp_path.glob("*data-y*"))  # nothing half-written
    with h5py.File(tmp_path / "data-z.h5", "w") as f:
        f["climate/data"] = data[..., :5]
        f["climate/labels_0"] = labels
    with pytest.raises(DataError, match=r"5 channels but no `variables`"):
        read_sample(tmp_path / "data-z.h5")
    with pytest.raises(DataError, match=r"\[climate/data\].*shape"):
        write_deepcam_sample(tmp_path / "data-w.h5", data, labels, ["TMQ"])
    with pytest.raises(DataError, match="no such file"):
        read_sample(tmp_path / "nope.h5")


def test_list_samples_ignores_temps_and_stats(tmp_path):
    data, labels = _fields()
    for name in ("data-b.h5", "data-a.h5"):
        write_deepcam_sample(tmp_path / name, data, labels, list(VARIABLE_NAMES))
    (tmp_path / ".data-c.h5.tmp-1-abc").write_bytes(b"")
    (tmp_path / "stats.h5").write_bytes(b"")
    assert [p.name for p in list_samples(tmp_path)] == ["data-a.h5", "data-b.h5"]
    with pytest.raises(DataError, match="no such directory"):
        list_samples(tmp_path / "missing")


@pytest.mark.parametrize("layout", ["deepcam", "gordonbell"])
def test_hdf5_non_finite_values_name_the_variable(tmp_path, layout):
    data, labels = _fields(6)
    data[5, 6, VARIABLE_NAMES.index("T500")] = np.nan
    data[2, 3, VARIABLE_NAMES.index("Z200")] = -np.inf
    writer = write_deepcam_sample if layout == "deepcam" else write_gordonbell_sample
    path = writer(tmp_path / "data-bad.h5", data, labels, list(VARIABLE_NAMES))
    with pytest.raises(DataError, match=r"data-bad\.h5 \[T500\].*NaN"):
        read_sample(path)


def test_huge_finite_values_are_not_mistaken_for_inf(tmp_path):
    """The finite check is one float sum (of squares, or over channels); an overflow there must not call finite
    values non-finite. On read such values are implausible: named with their range, not as NaN/Inf."""
    from exascale_climate.data.validate import check_fields

    data, labels = _fields(7)
    data[0, 0, :4] = np.finfo(np.float32).max / 2
    check_fields("x.h5", data, list(VARIABLE_NAMES))  # no error: all finite
    path = write_deepcam_sample(tmp_path / "data-big.h5", data, labels, list(VARIABLE_NAMES))
    with pytest.raises(DataError, match=r"data-big\.h5 \[TMQ\]: values [\d.]+\.\.1\.701e\+38 kg m-2 outside"):
        read_sample(path)


@pytest.mark.parametrize("userblock", [0, 512])
def test_contiguous_fields_are_read_block_by_block_and_transformed_once(tmp_path, userblock):
    """The fast path (plain reads of a contiguous field, a block of rows at a time) returns what h5py reads and
    transforms every row exactly once, last partial block included, also in a file with a user block (HDF5
    data starting 512 bytes in)."""
    rng = np.random.default_rng(8)
    height = 2 * ROWS_PER_READ + 5
    data = weather_like(rng.normal(size=(height, W, 16)))
    labels = rng.integers(0, 3, size=(height, W)).astype(np.uint8)
    path = tmp_path / "data-fast.h5"
    with h5py.File(path, "w", userblock_size=userblock) as f:
        f["climate/data"] = data
        f["climate/labels_0"] = labels
    blocks = []

    def double(fields):
        blocks.append(fields.shape[0])
        fields *= 2

    sample = read_sample(path, transform=double)
    np.testing.assert_array_equal(sample.data, data * 2)
    np.testing.assert_array_equal(sample.labels, labels)
    assert blocks == [ROWS_PER_READ, ROWS_PER_READ, 5]


def test_a_non_finite_value_in_a_later_block_is_named_by_variable_with_a_transform(tmp_path):
    rng = np.random.default_rng(9)
    data = weather_like(rng.normal(size=(ROWS_PER_READ + 3, W, 16)))
    data[ROWS_PER_READ + 1, 2, VARIABLE_NAMES.index("U850")] = np.inf
    path = write_deepcam_sample(tmp_path / "data-inf.h5", data, data[..., 0] * 0, list(VARIABLE_NAMES))
    with pytest.raises(DataError, match=r"data-inf\.h5 \[U850\].*1 non-finite value\(s\) \(Inf\)"):
        read_sample(path, transform=lambda fields: fields.__imul__(2))


def test_float16_fields_with_a_transform_come_back_as_float32(tmp_path):
    data, labels = _fields(10)
    names = [n for n in VARIABLE_NAMES if n not in ("PS", "PSL")]  # in Pa beyond float16's 65504
    keep = [VARIABLE_NAMES.index(n) for n in names]
    path = write_deepcam_sample(tmp_path / "data-h.h5", data[..., keep], labels, names, dtype="float16")
    sample = read_sample(path, transform=lambda fields: fields.__isub__(1))
    assert sample.data.dtype == np.float32
    np.testing.assert_array_equal(sample.data, data[..., keep].astype(np.float16).astype(np.float32) - 1)


def _no_hdf5(monkeypatch):
    """From here on any HDF5 open fails: a read that succeeds came from the known-file path."""
    import exascale_climate.data.samples as samples

    def refuse(path):
        raise AssertionError(f"HDF5 opened for {path}")

    monkeypatch.setattr(samples, "open_hdf5", refuse)


def test_a_known_unchanged_file_is_read_again_without_hdf5(tmp_path, monkeypatch):
    """The second read of an unchanged file skips HDF5's metadata and returns the same sample; a channel
    subset is not served from what the full read learned."""
    data, labels = _fields(11)
    lat, lon = _grid()
    path = write_deepcam_sample(tmp_path / "data-known.h5", data, labels, list(VARIABLE_NAMES), source="x.nc",
                                time="2000-01-02T00:00:00", lat=lat, lon=lon)
    first = read_sample(path)
    _no_hdf5(monkeypatch)
    again = read_sample(path, transform=lambda x: x.__imul__(2))
    np.testing.assert_array_equal(again.data, first.data * 2)
    np.testing.assert_array_equal(again.labels, labels)
    assert (again.variables, again.time, again.attrs) == (first.variables, first.time, first.attrs)
    np.testing.assert_array_equal(again.lat, lat)
    again.lat[0] = 99.0  # the caller's copy: what is remembered stays intact
    np.testing.assert_array_equal(read_sample(path).lat, lat)
    with pytest.raises(AssertionError, match="HDF5 opened"):
        read_sample(path, channels=["TMQ"])


def test_a_file_replaced_under_the_same_name_is_read_afresh(tmp_path):
    """A new file renamed into place (other variable order, time and coordinates, so other offsets) is not
    read with what was learned about the old one."""
    data, labels = _fields(12)
    path = write_deepcam_sample(tmp_path / "data-change.h5", data, labels, list(VARIABLE_NAMES),
                                time="2000-01-01T00:00:00")
    read_sample(path)
    lat, lon = _grid()
    reordered = list(reversed(VARIABLE_NAMES))
    other = data[..., ::-1] * np.float32(1.01)  # other values, still plausible
    write_deepcam_sample(path, other, labels, reordered, time="2001-01-01T00:00:00", lat=lat, lon=lon)
    again = read_sample(path)
    assert again.variables == reordered and again.time == "2001-01-01T00:00:00"
    np.testing.assert_array_equal(again.data, other)
    np.testing.assert_array_equal(again.lat, lat)


def test_a_known_file_is_still_checked_for_nan(tmp_path):
    """Values are read afresh every time: a NaN written into a known file is found and named."""
    data, labels = _fields(14)
    path = write_deepcam_sample(tmp_path / "data-nan.h5", data, labels, list(VARIABLE_NAMES))
    read_sample(path)
    with h5py.File(path, "r+") as f:
        f["climate/data"][3, 4, VARIABLE_NAMES.index("PSL")] = np.nan
    with pytest.raises(DataError, match=r"data-nan\.h5 \[PSL\].*NaN"):
        read_sample(path)


def test_a_known_file_truncated_later_is_reported(tmp_path):
    data, labels = _fields(13)
    path = write_deepcam_sample(tmp_path / "data-cut.h5", data, labels, list(VARIABLE_NAMES))
    read_sample(path)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(DataError, match="data-cut.h5"):
        read_sample(path)
