"""The read path's validation layer (issue 23): each malformed file is made here with h5py / netCDF4 directly and
must end in one line naming the file and what is wrong; valid unusual files must still be read."""
import os

import h5py
import netCDF4
import numpy as np
import pytest
from click.testing import CliRunner

from exascale_climate.cli import main
from exascale_climate.data.grid import default_coordinates
from exascale_climate.data.samples import read_sample
from exascale_climate.data.stats import dataset_stats
from exascale_climate.errors import DataError
from exascale_climate.variables import VARIABLE_NAMES, VARIABLES

GRID = (12, 16)


def plausible_fields(grid=GRID, channels_first=False):
    """Fields in each variable's units, mid-range (hand-picked, not from the code's ranges table)."""
    typical = {"TMQ": 30, "QREFHT": 0.01, "PS": 98000, "PSL": 101000, "T200": 220, "T500": 255, "PRECT": 1e-7,
               "TS": 288, "TREFHT": 287, "Z1000": 100, "Z200": 11800, "ZBOT": 60}
    data = np.stack([np.full(grid, typical.get(n, 5.0), np.float32) for n in VARIABLE_NAMES], -1)
    return np.moveaxis(data, -1, 0) if channels_first else data


def deepcam(path, data=None, labels=None, variables=VARIABLE_NAMES, **dataset_kwargs):
    with h5py.File(path, "w") as f:
        c = f.create_group("climate")
        c.create_dataset("data", data=plausible_fields() if data is None else data, **dataset_kwargs)
        c.create_dataset("labels_0", data=np.zeros(GRID, np.uint8) if labels is None else labels)
        if variables is not None:
            c.attrs["variables"] = variables
    return path


def _scalar(f):
    del f["climate/data"]
    f["climate"].create_dataset("data", data=3.0)


def _null(f):
    del f["climate/data"]
    f["climate"].create_dataset("data", data=h5py.Empty("f4"))


def _replace(**kwargs):
    def edit(f):
        del f["climate/data"]
        f["climate"].create_dataset("data", **kwargs)
    return edit


def _climate_dataset(f):
    del f["climate"]
    f.create_dataset("climate", data=np.zeros(3))


def _data_group(f):
    del f["climate/data"]
    f["climate"].create_group("data")


def _soft(f):
    del f["climate/labels_0"]
    f["climate/labels_0"] = h5py.SoftLink("/nowhere")


def _external(f):
    del f["climate/data"]
    f["climate/data"] = h5py.ExternalLink("missing.h5", "/x")


def _attr(value):
    def edit(f):
        f["climate"].attrs["variables"] = value
    return edit


def _huge(f):
    del f["climate/data"]
    f["climate"].create_dataset("data", shape=(2**22, 2**20, 16), dtype="f4", chunks=(1, 1024, 16),
                                compression="gzip")  # 64 TiB declared, nothing written


HDF5_CASES = {
    "string dtype": (_replace(data=np.full(GRID + (16,), b"x", "S1")), "string dtype"),
    "compound dtype": (_replace(data=np.zeros(GRID + (16,), [("a", "f4"), ("b", "i4")])), "compound"),
    "complex dtype": (_replace(data=np.zeros(GRID + (16,), np.complex64)), "complex dtype"),
    "boolean dtype": (_replace(data=np.zeros(GRID + (16,), bool)), "boolean dtype"),
    "climate a dataset": (_climate_dataset, "is a dataset, expected a group"),
    "data a group": (_data_group, "is a group, expected a dataset"),
    "scalar": (_scalar, "got a scalar"),
    "null dataspace": (_null, "null dataspace"),
    "zero-size grid": (_replace(data=np.zeros((0, 16, 16), np.float32)), "zero-size"),
    "undecodable names": (_attr(np.array([b"\xff\xfe"] * 16)), "not UTF-8"),
    "unknown names": (_attr(["TMQ"] * 15 + ["FOO"]), "unknown channel name(s) ['FOO']"),
    "duplicate names": (_attr(list(VARIABLE_NAMES[:15]) + ["TMQ"]), "duplicate channel name(s) ['TMQ']"),
    "integer names": (_attr(np.arange(16)), "`variables` attribute holds int"),
    "dangling soft link": (_soft, "dangling soft link to /nowhere"),
    "dangling external link": (_external, "dangling external link to missing.h5"),
    "64 TiB declared": (_huge, "declares"),
    "labels wrong shape": (lambda f: (f["climate"].__delitem__("labels_0"),
                                      f["climate"].create_dataset("labels_0", data=np.zeros((16, 12), np.uint8))),
                           "does not match the data grid"),
}


@pytest.mark.parametrize("case", sorted(HDF5_CASES))
def test_malformed_hdf5_is_one_error_naming_the_file(tmp_path, case):
    edit, expected = HDF5_CASES[case]
    path = deepcam(tmp_path / "data-x.h5")
    with h5py.File(path, "a") as f:
        edit(f)
    with pytest.raises(DataError) as e:
        read_sample(path)
    message = str(e.value)
    assert "\n" not in message and message.startswith(str(path)) and expected in message, message


def test_corrupt_hdf5_metadata_is_one_line_through_the_cli(tmp_path):
    path = deepcam(tmp_path / "data-x.h5", chunks=(4, 4, 16))
    raw = bytearray(path.read_bytes())
    for offset in range(800, len(raw) - 2000, 97):  # scribble over the metadata after the superblock
        raw[offset:offset + 8] = b"\xde\xad\xbe\xef" * 2
    path.write_bytes(bytes(raw))
    for args in (["data", "inspect", str(path)], ["data", "convert", str(path), "--out", str(tmp_path / "o")]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code != 0 and "Traceback" not in r.output, r.output
        assert r.output.strip().count("\n") == 0 and str(path) in r.output and "corrupt" in r.output, r.output


def netcdf(path, fmt="NETCDF4", units=None, lat=None, time_units="hours since 2000-01-01", steps=1, dtype="f4",
           lon=None):
    lat_values, lon_values = default_coordinates(*GRID)
    with netCDF4.Dataset(path, "w", format=fmt) as nc:
        nc.createDimension("time", None)
        nc.createDimension("lat", GRID[0])
        nc.createDimension("lon", GRID[1])
        t = nc.createVariable("time", "f8", ("time",))
        t.units = time_units
        la = nc.createVariable("lat", "f8", ("lat",))
        la[:] = lat_values if lat is None else lat
        nc.createVariable("lon", "f8", ("lon",))[:] = lon_values if lon is None else lon
        fields = plausible_fields()
        for i, var in enumerate(VARIABLES):
            v = nc.createVariable(var.name, dtype, ("time", "lat", "lon"))
            v.units = (units or {}).get(var.name, var.units)
            v[0:steps] = np.repeat(fields[None, ..., i], steps, 0)
        lab = nc.createVariable("LABELS", "i1", ("time", "lat", "lon"))
        lab[0:steps] = np.ones((steps,) + GRID, np.int8)
        if steps:
            t[0:steps] = np.arange(steps)
    return path


def test_truncated_netcdf3_is_detected(tmp_path):
    path = netcdf(tmp_path / "s.nc", fmt="NETCDF3_64BIT_OFFSET", steps=3)
    assert read_sample(path, time_index=2).labels.max() == 1
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 1000)  # the last record half gone: netCDF reads it as zeros
    with pytest.raises(DataError, match="truncated netCDF-3"):
        read_sample(path, time_index=2)
    r = CliRunner().invoke(main, ["data", "convert", str(path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "truncated netCDF-3" in r.output, r.output


NETCDF_CASES = {
    "zero time records": (dict(steps=0), "zero"),
    "NaN latitude": (dict(lat=np.r_[np.nan, np.linspace(-80, 90, GRID[0] - 1)]), "[lat]: non-finite"),
    "latitude 0..950": (dict(lat=np.linspace(0, 950, GRID[0])), "outside -90..90"),
    "latitude not monotonic": (dict(lat=np.r_[0, 10, 5, np.linspace(20, 80, GRID[0] - 3)]), "not strictly monotonic"),
    "unparsable time": (dict(time_units="fortnights after the flood"), "[time]: time not decodable"),
    "longitude not monotonic": (dict(lon=np.r_[0, 40, 20, np.linspace(60, 350, GRID[1] - 3)]),
                                "[lon]: not strictly monotonic"),
    "NaN longitude": (dict(lon=np.r_[np.nan, np.linspace(22.5, 337.5, GRID[1] - 1)]), "[lon]: non-finite"),
    "units not convertible": (dict(units={"PSL": "m s-1"}), "[PSL]: units 'm s-1' cannot be converted to 'Pa'"),
    "units unknown": (dict(units={"TS": "bananas"}), "[TS]: units 'bananas' cannot be converted"),
    "strings in a variable": (dict(dtype=str), "string dtype"),
    "64 TiB declared": (dict(dtype="huge"), "[TMQ]: declares"),
}


@pytest.mark.parametrize("case", sorted(NETCDF_CASES))
def test_malformed_netcdf_is_one_error_naming_the_file(tmp_path, case):
    kwargs, expected = NETCDF_CASES[case]
    if kwargs.get("dtype") is str:
        path = netcdf(tmp_path / "s.nc")
        with netCDF4.Dataset(path, "a") as nc:
            nc.renameVariable("TMQ", "TMQ_old")
            nc.createVariable("TMQ", str, ("time", "lat", "lon"))[0, 0, 0] = "thirty"
    elif kwargs.get("dtype") == "huge":
        path = netcdf(tmp_path / "s.nc")
        with netCDF4.Dataset(path, "a") as nc:
            nc.createDimension("y", 2**22)
            nc.createDimension("x", 2**21)
            nc.renameVariable("TMQ", "TMQ_old")
            nc.createVariable("TMQ", "f4", ("time", "y", "x"), chunksizes=(1, 1024, 1024), zlib=True)
    else:
        path = netcdf(tmp_path / "s.nc", **kwargs)
    with pytest.raises(DataError) as e:
        read_sample(path)
    message = str(e.value)
    assert "\n" not in message and message.startswith(str(path)) and expected in message, message


def test_units_are_converted_to_the_canonical_ones(tmp_path):
    """PSL in hPa, temperatures in degC, PRECT in mm/day: values hand-converted here, not by the code's table."""
    path = netcdf(tmp_path / "s.nc", units={"PSL": "hPa", "TS": "degC", "T500": "degC", "PRECT": "mm/day",
                                            "QREFHT": "g/kg", "U850": "km h-1"})
    with netCDF4.Dataset(path, "a") as nc:
        nc["PSL"][0] = np.full(GRID, 1013.25)
        nc["TS"][0] = np.full(GRID, 15.0)
        nc["T500"][0] = np.full(GRID, -20.0)
        nc["PRECT"][0] = np.full(GRID, 8.64)
        nc["QREFHT"][0] = np.full(GRID, 12.0)
        nc["U850"][0] = np.full(GRID, 36.0)
    s = read_sample(path)
    got = {n: float(s.data[0, 0, s.variables.index(n)]) for n in ("PSL", "TS", "T500", "PRECT", "QREFHT", "U850")}
    assert got["PSL"] == pytest.approx(101325.0)
    assert got["TS"] == pytest.approx(288.15) and got["T500"] == pytest.approx(253.15)
    assert got["PRECT"] == pytest.approx(1e-7, rel=1e-5)  # 8.64 mm/day = 8.64e-3 m / 86400 s
    assert got["QREFHT"] == pytest.approx(0.012) and got["U850"] == pytest.approx(10.0)


def test_valid_unusual_files_are_still_accepted(tmp_path):
    """User block, gzip/lzf/shuffle, big-endian, Gordon Bell, netCDF-3, packed int16, spaces and unicode."""
    fields = plausible_fields()
    name = tmp_path / "dir with spaces ü"
    name.mkdir()
    paths = []
    with h5py.File(name / "data-ub ü.h5", "w", userblock_size=512) as f:
        f.create_dataset("climate/data", data=fields)
        f.create_dataset("climate/labels_0", data=np.zeros(GRID, np.uint8))
    paths.append(name / "data-ub ü.h5")
    for i, kw in enumerate([dict(compression="gzip", shuffle=True), dict(compression="lzf"),
                            dict(data=fields.astype(">f4"))]):
        kw.setdefault("data", fields)
        paths.append(deepcam(name / f"data-{i}.h5", **kw))
    with h5py.File(name / "gb.h5", "w") as f:
        f.create_dataset("climate/data", data=plausible_fields(channels_first=True))
        f.create_dataset("climate/labels", data=np.zeros(GRID, np.uint8))
        f["climate"].attrs["variables"] = VARIABLE_NAMES
    paths.append(name / "gb.h5")
    paths.append(netcdf(name / "classic.nc", fmt="NETCDF3_CLASSIC"))
    packed = netcdf(name / "packed.nc", dtype="i2")
    with netCDF4.Dataset(packed, "a") as nc:  # PS as packed int16: value = stored * scale_factor + add_offset
        nc["PS"].set_auto_maskandscale(False)
        nc["PS"].scale_factor, nc["PS"].add_offset = np.float32(2.0), np.float32(90000.0)
        nc["PS"][0] = np.full(GRID, 4000, np.int16)
        for v in VARIABLE_NAMES:
            if v != "PS":
                nc[v].set_auto_maskandscale(False)
                typical = np.float32(fields[0, 0, VARIABLE_NAMES.index(v)])
                nc[v].scale_factor, nc[v].add_offset = np.float32(1.0), typical
                nc[v][0] = np.zeros(GRID, np.int16)
    paths.append(packed)
    for path in paths:
        s = read_sample(path)
        assert s.data.shape == GRID + (16,), path
        ps = s.data[..., s.variables.index("PS")]
        assert np.allclose(ps, 98000.0), (path, ps.min())
        r = CliRunner().invoke(main, ["data", "inspect", str(path)])
        assert r.exit_code == 0 and "problems: none" in r.output, r.output


INSPECT_CASES = {
    "labels wrong shape": "does not match the data grid",
    "non-integer labels": "whole numbers",
    "bad channel names": "unknown channel name(s)",
    "broken latitude": "[lat]",
    "wrong units": "[PSL]: values",
    "impossible TMQ": "[TMQ]: values 30..3e+38",
    "negative PS": "[PS]: values -",
    "transposed fields": "[T500]: shape (1, 16, 12) does not match (lat, lon) (12, 16) (transposed?)",
}


@pytest.mark.parametrize("case", sorted(INSPECT_CASES))
def test_inspect_lists_problems_and_exits_non_zero(tmp_path, case):
    if case == "transposed fields":
        path = netcdf(tmp_path / "s.nc")
        with netCDF4.Dataset(path, "a") as nc:
            nc.renameVariable("T500", "T500_old")
            nc.createVariable("T500", "f4", ("time", "lon", "lat"))[0] = np.full(GRID[::-1], 250.0)
    elif case in ("wrong units", "broken latitude"):
        path = netcdf(tmp_path / "s.nc", lat=np.linspace(0, 950, GRID[0]) if case == "broken latitude" else None)
        if case == "wrong units":
            with netCDF4.Dataset(path, "a") as nc:
                nc["PSL"][0] = np.full(GRID, 1013.0)  # hPa values labelled Pa
    else:
        labels = np.zeros(GRID, np.float32) + (0.5 if case == "non-integer labels" else 0)
        fields = plausible_fields()
        fields[0, 0, 0] = 3e38 if case == "impossible TMQ" else fields[0, 0, 0]
        fields[1, 1, 6] = -5.0 if case == "negative PS" else fields[1, 1, 6]
        path = deepcam(tmp_path / "data-x.h5", data=fields, labels=labels,
                       variables=["TMQ", "X"] + list(VARIABLE_NAMES[2:]) if case == "bad channel names"
                       else VARIABLE_NAMES)
        if case == "labels wrong shape":
            with h5py.File(path, "a") as f:
                del f["climate/labels_0"]
                f["climate/labels_0"] = np.zeros((GRID[0] + 1, GRID[1]), np.uint8)
    r = CliRunner().invoke(main, ["data", "inspect", str(path)])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    lines = [line for line in r.output.splitlines() if line.startswith("PROBLEM")]
    assert lines and any(INSPECT_CASES[case] in line and str(path) in line for line in lines), r.output
    r = CliRunner().invoke(main, ["data", "inspect", str(path), "--report"])
    assert r.exit_code == 0 and "PROBLEM" in r.output


def test_stats_names_a_dangling_symlink(tmp_path):
    directory = tmp_path / "train"
    directory.mkdir()
    deepcam(directory / "data-0.h5")
    (directory / "data-1.h5").symlink_to(tmp_path / "gone.h5")
    with pytest.raises(DataError, match="data-1.h5: dangling symbolic link"):
        dataset_stats(directory, None, None)
    r = CliRunner().invoke(main, ["data", "stats", str(directory), "--out", str(tmp_path / "s.h5")])
    assert r.exit_code == 2 and "dangling symbolic link" in r.output and "Traceback" not in r.output


def test_a_real_process_prints_one_line_and_exits_2(tmp_path):
    """The installed entry point, as a user runs it: `data convert` and `data stats` on a 64 TiB-declared file."""
    import subprocess
    import sys

    directory = tmp_path / "in"
    directory.mkdir()
    path = deepcam(directory / "data-0.h5")
    with h5py.File(path, "a") as f:
        _huge(f)
    env = {**os.environ, "PYTHONPATH": str(__import__("pathlib").Path(__file__).resolve().parents[2])}
    for args in (["data", "convert", str(path), "--out", str(tmp_path / "o")],
                 ["data", "stats", str(directory), "--out", str(tmp_path / "s.h5")]):
        out = subprocess.run([sys.executable, "-m", "exascale_climate.cli", *args], capture_output=True, text=True,
                             env=env, timeout=300)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.strip().count("\n") == 0 and f"{path} [climate/data]: declares" in out.stderr, out.stderr
    assert not (tmp_path / "s.h5").exists()


# ----------------------------------------------------------------------------- HDF5: values, units, coordinates
def gordonbell(path, data=None, **attrs):
    with h5py.File(path, "w") as f:
        c = f.create_group("climate")
        c.create_dataset("data", data=plausible_fields(channels_first=True) if data is None else data)
        c.create_dataset("labels", data=np.zeros(GRID, np.uint8))
        c.attrs["variables"] = VARIABLE_NAMES
        for key, value in attrs.items():
            c.attrs[key] = value
    return path


@pytest.mark.parametrize("layout", ["deepcam", "gordonbell"])
@pytest.mark.parametrize("case", ["TMQ 3e38", "negative PS", "PSL in hPa labelled Pa", "NaN in Z200"])
def test_implausible_hdf5_values_are_named_on_every_read(tmp_path, layout, case):
    """The fast (contiguous DeepCAM), general (Gordon Bell) and channel-subset reads, and `data convert`."""
    variable, row, value, expected = {
        "TMQ 3e38": ("TMQ", 2, 3e38, "[TMQ]: values 30..3e+38 kg m-2 outside the plausible range 0..200"),
        "negative PS": ("PS", 5, -5.0, "[PS]: values -5..9.8e+04 Pa outside"),
        "PSL in hPa labelled Pa": ("PSL", slice(None), 1013.0, "[PSL]: values 1013..1013 Pa outside"),
        "NaN in Z200": ("Z200", 7, np.nan, "[Z200]: 1 non-finite value(s) (NaN)"),
    }[case]
    fields = plausible_fields()
    fields[row, 3 if isinstance(row, int) else slice(None), VARIABLE_NAMES.index(variable)] = value
    path = tmp_path / "data-x.h5"
    if layout == "deepcam":
        deepcam(path, data=fields)
    else:
        gordonbell(path, data=np.moveaxis(fields, -1, 0))
    for channels in (None, [variable, "TMQ" if variable != "TMQ" else "PS"]):
        with pytest.raises(DataError) as e:
            read_sample(path, channels=channels)
        assert str(e.value).startswith(f"{path} {expected}"), str(e.value)
    r = CliRunner().invoke(main, ["data", "convert", str(path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and expected in r.output, r.output
    assert not list((tmp_path / "o").glob("*.h5")) if (tmp_path / "o").exists() else True


@pytest.mark.parametrize("layout", ["deepcam", "gordonbell"])
def test_hdf5_recorded_units_are_converted(tmp_path, layout):
    """`units` beside `variables`: PSL in hPa, TS in degC, PRECT in mm/day, one per channel; hand-converted."""
    units = [v.units for v in VARIABLES]
    fields = plausible_fields()
    for name, unit, value in (("PSL", "hPa", 1013.25), ("TS", "degC", 15.0), ("PRECT", "mm/day", 8.64)):
        units[VARIABLE_NAMES.index(name)] = unit
        fields[..., VARIABLE_NAMES.index(name)] = value
    path = tmp_path / "data-u.h5"
    if layout == "deepcam":
        deepcam(path, data=fields)
        with h5py.File(path, "a") as f:
            f["climate"].attrs["units"] = units
    else:
        gordonbell(path, data=np.moveaxis(fields, -1, 0), units=units)
    for _ in range(2):  # the second read of an unchanged file too
        s = read_sample(path)
        got = {n: float(s.data[1, 1, s.variables.index(n)]) for n in ("PSL", "TS", "PRECT", "PS")}
        assert got["PSL"] == pytest.approx(101325.0) and got["TS"] == pytest.approx(288.15)
        assert got["PRECT"] == pytest.approx(1e-7, rel=1e-5) and got["PS"] == 98000.0
    assert read_sample(path, channels=["TS"]).data[0, 0, 0] == pytest.approx(288.15)
    r = CliRunner().invoke(main, ["data", "inspect", str(path)])
    assert r.exit_code == 0 and "problems: none" in r.output, r.output


HDF5_UNITS_CASES = {
    "unknown units": ({"TS": "bananas"}, "[TS]: units 'bananas' cannot be converted to 'K'"),
    "other quantity": ({"U850": "K"}, "[U850]: units 'K' cannot be converted to 'm s-1'"),
    "wind as a water flux": ({"U850": "kg m-2 s-1"}, "[U850]: units 'kg m-2 s-1' cannot be converted"),
    "wrong count": ("short", "[climate/data]: `units` names 3 units for 16 channels"),
    "not UTF-8": ("bytes", "[climate/data]: `units` attribute holds bytes that are not UTF-8"),
    "numbers": ("numbers", "[climate/data]: `units` attribute holds int"),
}


@pytest.mark.parametrize("case", sorted(HDF5_UNITS_CASES))
def test_hdf5_units_that_cannot_be_converted_are_named(tmp_path, case):
    change, expected = HDF5_UNITS_CASES[case]
    if change == "short":
        units = ["K", "K", "K"]
    elif change == "bytes":
        units = np.array([b"\xff\xfe"] * 16)
    elif change == "numbers":
        units = np.arange(16)
    else:
        units = [change.get(v.name, v.units) for v in VARIABLES]
    path = deepcam(tmp_path / "data-u.h5")
    with h5py.File(path, "a") as f:
        f["climate/data"].attrs["units"] = units
    with pytest.raises(DataError) as e:
        read_sample(path)
    assert str(e.value).startswith(f"{path} {expected}"), str(e.value)
    r = CliRunner().invoke(main, ["data", "inspect", str(path)])
    assert r.exit_code == 1 and expected in r.output, r.output


def test_unit_equivalences_by_hand():
    """Water depth = mass per area (1000 kg m-3), geopotential = height x 9.80665 m s-2; never across variables."""
    from exascale_climate.data.validate import unit_conversion

    assert unit_conversion("f", "TMQ", "mm") is None  # 1 mm of water = 1 kg m-2
    assert unit_conversion("f", "PRECT", "kg m-2 s-1") == pytest.approx((1e-3, 0.0))
    assert unit_conversion("f", "Z200", "m2 s-2") == pytest.approx((1 / 9.80665, 0.0))
    assert unit_conversion("f", "PS", "mb") == pytest.approx((100.0, 0.0))
    assert unit_conversion("f", "QREFHT", "g/kg") == pytest.approx((1e-3, 0.0))
    assert unit_conversion("f", "U850", "kt") == pytest.approx((1852 / 3600, 0.0))
    for name, units in (("U850", "kg m-2 s-1"), ("PS", "m2 s-2"), ("TMQ", "degC"), ("T500", "m")):
        with pytest.raises(DataError, match=rf"\[{name}\]: units '{units}' cannot be converted"):
            unit_conversion("f", name, units)


def test_hdf5_coordinates_of_the_wrong_length_and_regional_grids(tmp_path):
    path = deepcam(tmp_path / "data-c.h5")
    with h5py.File(path, "a") as f:
        f["climate/lat"] = np.linspace(-90, 90, GRID[0] - 1)  # one value short (95 for 96 rows)
    with pytest.raises(DataError, match=r"data-c.h5 \[climate/lat\]: shape \(11,\) does not match the data grid"):
        read_sample(path)
    lat, lon = default_coordinates(*GRID)
    for name, lons, regional in (("global", lon, False), ("regional", np.linspace(100, 160, GRID[1]), True)):
        p = deepcam(tmp_path / f"data-{name}.h5")
        with h5py.File(p, "a") as f:
            f["climate/lat"], f["climate/lon"] = lat, lons
        assert read_sample(p).attrs.get("regional", False) is regional


def test_data_label_refuses_a_truncated_netcdf3_file_and_leaves_it_alone(tmp_path):
    path = netcdf(tmp_path / "s.nc", fmt="NETCDF3_64BIT_OFFSET", steps=3)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 1000)
    before = path.read_bytes()
    r = CliRunner().invoke(main, ["data", "label", str(path)])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "truncated netCDF-3" in r.output, r.output
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["s.nc"]


def test_gordon_bell_structure_is_checked(tmp_path):
    path = gordonbell(tmp_path / "gb.h5")
    with h5py.File(path, "a") as f:
        f["climate/stats"] = np.zeros((15, 4))
    with pytest.raises(DataError, match=r"gb.h5 \[climate/stats\]: shape \(15, 4\) does not match"):
        read_sample(path)
    path = gordonbell(tmp_path / "gb2.h5")
    with h5py.File(path, "a") as f:
        del f["climate/labels"]
        f["climate/labels"] = np.zeros(GRID[::-1], np.uint8)
    with pytest.raises(DataError, match=r"gb2.h5 \[climate/labels\]: shape \(16, 12\) does not match"):
        read_sample(path)
