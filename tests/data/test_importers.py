"""`data import` on hand-made ERA5-, CMIP- and GRIB-style inputs: unit conversions and derived variables against
hand values, latitude/longitude normalisation, provenance, regridding conservation, and bad input named."""
import math
from pathlib import Path
import subprocess
import sys

import netCDF4
import numpy as np
import pytest
import xarray as xr

from exascale_climate.data.grid import cell_areas_km2, default_coordinates
from exascale_climate.data.importers import import_files, regrid
from exascale_climate.errors import DataError

LAT = np.arange(90.0, -90.1, -10.0)  # descending, as ERA5
LON = np.arange(-180.0, 180.0, 20.0)  # -180..160, as many netCDF exports
TIMES = np.array(["2005-08-28T00", "2005-08-28T06"], "datetime64[ns]")


def surface(value, units, name, **attrs):
    data = np.full((len(TIMES), len(LAT), len(LON)), value, np.float64)
    return xr.DataArray(data, dims=("valid_time", "latitude", "longitude"), attrs={"units": units, **attrs})


def levels(values_by_level, units):
    plev = np.array([1000.0, 850.0, 500.0, 200.0])
    data = np.stack([np.full((len(TIMES), len(LAT), len(LON)), values_by_level[p]) for p in plev], 1)
    return xr.DataArray(data, dims=("valid_time", "pressure_level", "latitude", "longitude"),
                        coords={"pressure_level": ("pressure_level", plev, {"units": "hPa"})},
                        attrs={"units": units})


def era5_files(tmp_path, msl_units="Pa"):
    coords = {"valid_time": TIMES, "latitude": LAT, "longitude": LON}
    msl = surface(1005.0 if msl_units == "hPa" else 100500.0, msl_units, "msl")
    msl[:, 3, 4] = 950.0 if msl_units == "hPa" else 95000.0  # a marked point: lat 60N, lon -100 (260 E)
    single = xr.Dataset({
        "msl": msl, "sp": surface(100000.0, "Pa", "sp"), "t2m": surface(288.0, "K", "t2m"),
        "d2m": surface(293.15, "K", "d2m"), "skt": surface(290.0, "K", "skt"), "u10": surface(5.0, "m s**-1", "u"),
        "v10": surface(-3.0, "m s**-1", "v"), "tcwv": surface(40.0, "kg m**-2", "tcwv"),
        "tp": surface(0.0036, "m", "tp"),
    }, coords=coords)
    pressure = xr.Dataset({
        "z": levels({1000.0: 980.0, 850.0: 14700.0, 500.0: 56000.0, 200.0: 117000.0}, "m**2 s**-2"),
        "t": levels({1000.0: 290.0, 850.0: 283.0, 500.0: 260.0, 200.0: 220.0}, "K"),
        "u": levels({1000.0: 1.0, 850.0: 12.0, 500.0: 20.0, 200.0: 30.0}, "m s**-1"),
        "v": levels({1000.0: 0.0, 850.0: -4.0, 500.0: 0.0, 200.0: 0.0}, "m s**-1"),
    }, coords=coords)
    single.to_netcdf(tmp_path / "era5_single.nc")
    pressure.to_netcdf(tmp_path / "era5_pressure.nc")
    return [tmp_path / "era5_single.nc", tmp_path / "era5_pressure.nc"]


def read_var(path, name):
    with netCDF4.Dataset(path) as nc:
        return np.asarray(nc[name][0]), {k: nc[name].getncattr(k) for k in nc[name].ncattrs()}, \
            np.asarray(nc["lat"][:]), np.asarray(nc["lon"][:])


@pytest.mark.parametrize("msl_units", ["Pa", "hPa"])
def test_era5_names_units_derivations_and_provenance(tmp_path, msl_units):
    result = import_files(era5_files(tmp_path, msl_units), tmp_path / "out")
    assert [p.rsplit("/", 1)[1] for p in result["written"]] == ["data-2005-08-28-00-00.nc", "data-2005-08-28-06-00.nc"]
    out = result["written"][0]
    psl, attrs, lat, lon = read_var(out, "PSL")
    assert list(lat) == sorted(LAT) and list(lon) == sorted(LON % 360)  # ascending, 0..360
    assert psl[list(lat).index(60.0), list(lon).index(260.0)] == pytest.approx(95000.0)
    assert (attrs["provenance"], attrs["source_variables"]) == ("exact", "msl")
    hand = {  # hand values
        "Z200": 117000.0 / 9.80665, "Z1000": 980.0 / 9.80665, "T500": 260.0, "U850": 12.0, "V850": -4.0,
        "TMQ": 40.0, "PRECT": 0.0036 / 3600.0, "TS": 290.0, "TREFHT": 288.0, "UBOT": 5.0, "VBOT": -3.0,
        "PS": 100000.0,
        # Bolton: e(20 C) = 611.2 exp(17.67 * 20 / 263.5) = 2337.1 Pa; q = 0.622 e / (p - 0.378 e)
        "QREFHT": 0.622 * 2337.1 / (100000.0 - 0.378 * 2337.1),
    }
    for name, value in hand.items():
        field, _, _, _ = read_var(out, name)
        assert field[5, 5] == pytest.approx(value, rel=2e-4), name
    q = hand["QREFHT"]
    zbot, attrs, _, _ = read_var(out, "ZBOT")
    assert zbot[5, 5] == pytest.approx(287.04 * 288.0 * (1 + 0.608 * q) / 9.80665 * math.log(1 / 0.9925), rel=1e-4)
    assert 60 < zbot[5, 5] < 70  # CAM5's lowest level is ~60-65 m up
    assert attrs["provenance"] == "derived" and "TREFHT" in attrs["derivation"]
    kinds = result["provenance"]
    assert kinds["UBOT"] == "approximate" and kinds["QREFHT"] == "derived" and kinds["PRECT"] == "derived"
    assert sorted(k for k, v in kinds.items() if v == "exact") == sorted(
        ["PSL", "PS", "TREFHT", "TS", "TMQ", "U850", "V850", "T200", "T500", "Z1000", "Z200"])


def test_cmip_names_rates_and_cli_regridding(tmp_path):
    coords = {"time": TIMES[:1], "lat": LAT[::-1], "lon": LON % 360}

    def one(v, units):
        return xr.DataArray(np.full((1, len(LAT), len(LON)), v), dims=("time", "lat", "lon"), attrs={"units": units})

    def plev(vals, units):
        p = np.array([100000.0, 85000.0, 50000.0, 20000.0])  # Pa, as CMIP
        return xr.DataArray(np.stack([np.full((1, len(LAT), len(LON)), x) for x in vals], 1),
                            dims=("time", "plev", "lat", "lon"), coords={"plev": ("plev", p, {"units": "Pa"})},
                            attrs={"units": units})

    xr.Dataset({"psl": one(101000.0, "Pa"), "ps": one(99000.0, "Pa"), "tas": one(15.0, "degC"), "ts": one(289.0, "K"),
                "huss": one(12.0, "g/kg"), "prw": one(30.0, "kg m-2"), "pr": one(2e-4, "kg m-2 s-1"),
                "uas": one(1.0, "m s-1"), "vas": one(2.0, "m s-1"),
                "ta": plev([290.0, 285.0, 255.0, 215.0], "K"), "ua": plev([0, 10.0, 0, 0], "m s-1"),
                "va": plev([0, 3.0, 0, 0], "m s-1"), "zg": plev([100.0, 1500.0, 5600.0, 11800.0], "m")},
               coords=coords).to_netcdf(tmp_path / "cmip.nc")
    proc = subprocess.run([sys.executable, "-m", "exascale_climate.cli", "data", "import", tmp_path / "cmip.nc",
                           "--out", tmp_path / "out", "--grid", "96x144"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out" / "data-2005-08-28-00-00.nc"
    prect, _, lat, lon = read_var(out, "PRECT")
    assert prect.shape == (96, 144) and list(lat) == list(default_coordinates(96, 144)[0])
    assert np.allclose(prect, 2e-7)  # kg m-2 s-1 / 1000 kg m-3
    assert np.allclose(read_var(out, "TREFHT")[0], 288.15)
    assert np.allclose(read_var(out, "QREFHT")[0], 0.012)
    assert np.allclose(read_var(out, "Z200")[0], 11800.0)
    # and the rest of the toolkit reads and labels it
    proc = subprocess.run([sys.executable, "-m", "exascale_climate.cli", "data", "label", out],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr


def test_regridding_keeps_a_constant_and_the_global_mean_of_a_smooth_field():
    lat = np.linspace(-89.5, 89.5, 180)  # cell centres of a 1-degree grid (no pole rows)
    lon = np.arange(0.5, 360.0, 1.0)
    lat_out, lon_out = default_coordinates(96, 144)
    const = regrid(np.full((180, 360), 287.5), lat, lon, lat_out, lon_out)
    assert np.all(const == 287.5)
    phi, lam = np.meshgrid(np.deg2rad(lat), np.deg2rad(lon), indexing="ij")
    smooth = 280.0 + 20.0 * np.cos(phi) ** 2 + 5.0 * np.sin(phi) * np.cos(2 * lam) + 3.0 * np.sin(3 * lam)
    out = regrid(smooth, lat, lon, lat_out, lon_out)
    w_in, w_out = cell_areas_km2(lat, lon), cell_areas_km2(lat_out, lon_out)
    mean_in, mean_out = (smooth * w_in).sum() / w_in.sum(), (out * w_out).sum() / w_out.sum()
    exact = 280.0 + 20.0 * 2.0 / 3.0  # the sphere mean of cos^2(lat) is 2/3; the other terms average to 0
    assert mean_in == pytest.approx(exact, abs=2e-3)
    assert mean_out == pytest.approx(mean_in, rel=2e-4)
    # periodic: the seam column (0 E) interpolates between 359.5 and 0.5 E
    assert out[48, 0] == pytest.approx(0.5 * (smooth[:, 0] + smooth[:, -1])[np.abs(lat - lat_out[48]).argmin()],
                                       abs=0.05)


def _hand_areas(lat, lon):
    """Cell areas written out here (not data/grid.py): edges half-way between centres, poles and the seam closed."""
    lat_e = np.deg2rad(np.r_[-90.0, (lat[1:] + lat[:-1]) / 2, 90.0])
    return np.outer(np.diff(np.sin(lat_e)), np.full(len(lon), 2 * np.pi / len(lon)))


@pytest.mark.parametrize("src", ["cell centres", "pole rows"])
def test_conservative_regridding_keeps_a_constant_exactly_and_the_global_mean(src):
    if src == "cell centres":
        lat, lon = np.linspace(-89.5, 89.5, 180), np.arange(0.5, 360.0, 1.0)
    else:  # the CAM finite-volume convention: first and last rows centred on the poles
        lat, lon = default_coordinates(181, 288)
    lat_out, lon_out = default_coordinates(96, 144)
    const = regrid(np.full((len(lat), len(lon)), 287.5), lat, lon, lat_out, lon_out, "conservative")
    np.testing.assert_allclose(const, 287.5, rtol=1e-13, atol=0)  # every cell, the pole rows included
    phi, lam = np.meshgrid(np.deg2rad(lat), np.deg2rad(lon), indexing="ij")
    smooth = 280.0 + 20.0 * np.cos(phi) ** 2 + 5.0 * np.sin(phi) * np.cos(2 * lam) + 3.0 * np.sin(3 * lam)
    out = regrid(smooth, lat, lon, lat_out, lon_out, "conservative")
    w_in, w_out = _hand_areas(lat, lon), _hand_areas(lat_out, lon_out)
    mean_in, mean_out = (smooth * w_in).sum() / w_in.sum(), (out * w_out).sum() / w_out.sum()
    assert mean_in == pytest.approx(280.0 + 20.0 * 2.0 / 3.0, abs=0.02)  # the sphere mean of cos^2 is 2/3
    assert mean_out == pytest.approx(mean_in, rel=1e-12)
    assert smooth.min() <= out.min() and out.max() <= smooth.max()  # means of source cells: no new extremes


def test_conservative_regridding_matches_hand_overlaps():
    lat, lon = np.linspace(-89.5, 89.5, 180), np.arange(0.5, 360.0, 1.0)
    lat_out, lon_out = default_coordinates(96, 144)  # 2.5 degree columns centred on 0, 2.5, ... E
    stripe = np.where(lon < 10.0, 1.0, 0.0)[None].repeat(len(lat), 0)
    out = regrid(stripe, lat, lon, lat_out, lon_out, "conservative")
    # the seam cell spans 358.75..1.25 E: half of it over the stripe (0..1.25), half over 358.75..360 (zero)
    assert out[48, 0] == pytest.approx(0.5, abs=1e-12)
    assert out[48, 1] == pytest.approx(1.0) and out[48, 3] == pytest.approx(1.0)  # 1.25..3.75, 6.25..8.75 E
    assert out[48, 4] == pytest.approx(0.5, abs=1e-12)  # 8.75..11.25 E: half over the stripe
    assert out[48, 5] == 0.0 and out[48, 143] == 0.0
    # a field of latitude bands: a 2-degree output row is the area-weighted mean of its two 1-degree rows
    lat2 = np.linspace(-89.0, 89.0, 90)
    band = np.sin(np.deg2rad(lat))[:, None].repeat(len(lon), 1) ** 2
    out2 = regrid(band, lat, lon, lat2, np.arange(1.0, 360.0, 2.0), "conservative")
    k = 60  # rows 120 and 121 of the 1-degree grid
    w = np.diff(np.sin(np.deg2rad([lat[120] - 0.5, lat[120] + 0.5, lat[121] + 0.5])))
    assert out2[k, 7] == pytest.approx((band[120, 0] * w[0] + band[121, 0] * w[1]) / w.sum(), rel=1e-12)


def test_auto_regridding_is_conservative_for_fluxes_and_coarsening_bilinear_when_refining():
    from exascale_climate.data.importers import choose_method

    fine, coarse = default_coordinates(192, 288), default_coordinates(96, 144)
    assert choose_method("PRECT", *coarse, *fine) == "conservative"
    assert choose_method("TMQ", *coarse, *fine) == "bilinear"
    assert choose_method("TMQ", *fine, *coarse) == "conservative"
    assert choose_method("TMQ", *coarse, *coarse) == "conservative"
    assert choose_method("PRECT", *fine, *coarse, method="bilinear") == "bilinear"


def test_tmq_from_a_humidity_profile_and_fill_on_request(tmp_path):
    """ERA5 without tcwv but with q on levels: TMQ integrated by hand; without skt and 2 m fields, the error names
    them and suggests --fill-from; with it, they are FILE's zonal means (hand values) marked `filled`."""
    single, pressure = era5_files(tmp_path)
    with xr.open_dataset(single) as ds:
        ds = ds.load()
    ds.drop_vars(["tcwv", "skt", "t2m", "d2m"]).to_netcdf(tmp_path / "single.nc")
    with xr.open_dataset(pressure) as ds:
        ds = ds.load()
    ds["q"] = ds["t"] * 0 + xr.DataArray([0.012, 0.008, 0.002, 0.0001], dims="pressure_level")
    ds["q"].attrs["units"] = "kg kg**-1"
    ds.to_netcdf(tmp_path / "pressure.nc")
    with pytest.raises(DataError) as e:
        import_files([tmp_path / "single.nc", tmp_path / "pressure.nc"], tmp_path / "out")
    assert "TREFHT" in str(e.value) and "--fill-from" in str(e.value) and "TMQ" not in str(e.value).split("from")[0]
    # a reference CAM5 file: TREFHT = 250 + lat/10 K (so its zonal mean is that), TS, QREFHT constant
    lat_ref = np.linspace(-90.0, 90.0, 19)
    ref = xr.Dataset({"TREFHT": (("time", "lat", "lon"), (250.0 + lat_ref / 10.0)[None, :, None] * np.ones((1, 19, 8))),
                      "TS": (("time", "lat", "lon"), np.full((1, 19, 8), 300.0)),
                      "QREFHT": (("time", "lat", "lon"), np.full((1, 19, 8), 0.01))},
                     coords={"lat": lat_ref, "lon": np.arange(8) * 45.0})
    ref.to_netcdf(tmp_path / "ref.nc")
    out = import_files([tmp_path / "single.nc", tmp_path / "pressure.nc"], tmp_path / "out",
                       fill_from=tmp_path / "ref.nc")["written"][0]
    tmq, attrs, lat, lon = read_var(out, "TMQ")
    p = np.array([1000.0, 850.0, 500.0, 200.0]) * 100
    q = np.array([0.012, 0.008, 0.002, 0.0001])
    hand = np.sum(0.5 * (q[1:] + q[:-1]) * (p[:-1] - p[1:])) / 9.80665  # sp = 1000 hPa: no layer below
    assert attrs["provenance"] == "derived" and tmq[5, 5] == pytest.approx(hand, rel=1e-5)
    trefht, attrs, _, _ = read_var(out, "TREFHT")
    assert attrs["provenance"] == "filled" and "ref.nc" in attrs["derivation"]
    np.testing.assert_allclose(trefht[:, 3], 250.0 + lat / 10.0, rtol=1e-6)
    assert read_var(out, "TS")[1]["provenance"] == "filled"
    zbot = read_var(out, "ZBOT")[1]
    assert zbot["provenance"] == "derived" and "filled inputs" in zbot["derivation"]


def test_unknown_variable_names_are_named(tmp_path):
    coords = {"time": TIMES[:1], "lat": LAT, "lon": LON}
    xr.Dataset({"foo": (("time", "lat", "lon"), np.zeros((1, len(LAT), len(LON)))),
                "msl": (("time", "lat", "lon"), np.full((1, len(LAT), len(LON)), 1e5), {"units": "Pa"})},
               coords=coords).to_netcdf(tmp_path / "odd.nc")
    with pytest.raises(DataError) as e:
        import_files([tmp_path / "odd.nc"], tmp_path / "out")
    msg = str(e.value)
    assert "odd.nc" in msg and "TMQ" in msg and "'foo'" in msg and "PSL" not in msg.split("from")[0]
    proc = subprocess.run([sys.executable, "-m", "exascale_climate.cli", "data", "import", tmp_path / "odd.nc",
                           "--out", tmp_path / "out"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_bad_units_are_named(tmp_path):
    files = era5_files(tmp_path)
    with xr.open_dataset(files[0]) as ds:
        ds = ds.load()
    ds["t2m"].attrs["units"] = "furlongs"
    ds.to_netcdf(tmp_path / "bad_units.nc")
    with pytest.raises(DataError, match=r"bad_units.nc \[t2m\].*furlongs"):
        import_files([tmp_path / "bad_units.nc", files[1]], tmp_path / "out")


def test_input_without_pressure_levels_is_named(tmp_path):
    single, _ = era5_files(tmp_path)
    with pytest.raises(DataError) as e:
        import_files([single], tmp_path / "out")
    msg = str(e.value)
    assert "era5_single.nc" in msg and "no pressure levels" in msg
    assert all(v in msg for v in ("U850", "V850", "T200", "T500", "Z200"))
    assert "Z1000" not in msg  # derived from PSL and TREFHT (hypsometric) when 1000 hPa is missing


GRIB_WRITER = """
import sys, numpy as np, eccodes
out, spec = sys.argv[1], eval(sys.argv[2])
with open(out, "wb") as f:
    for name, level, value in spec:
        h = eccodes.codes_grib_new_from_samples("regular_ll_sfc_grib2" if level is None else "regular_ll_pl_grib2")
        for key, v in (("Ni", 36), ("Nj", 19), ("latitudeOfFirstGridPointInDegrees", 90.0),
                       ("longitudeOfFirstGridPointInDegrees", 0.0), ("latitudeOfLastGridPointInDegrees", -90.0),
                       ("longitudeOfLastGridPointInDegrees", 350.0), ("iDirectionIncrementInDegrees", 10.0),
                       ("jDirectionIncrementInDegrees", 10.0), ("dataDate", 20050828), ("dataTime", 0),
                       ("shortName", name)):
            eccodes.codes_set(h, key, v)
        if level is not None:
            eccodes.codes_set(h, "typeOfLevel", "isobaricInhPa")
            eccodes.codes_set(h, "level", level)
        lat = np.linspace(90.0, -90.0, 19)[:, None] * np.ones((1, 36))
        eccodes.codes_set_values(h, (value + 0.01 * lat).ravel())  # north first, as GRIB scans
        f.write(eccodes.codes_get_message(h))
        eccodes.codes_release(h)
"""


def write_grib(path, spec):
    """GRIB2 messages made with ecCodes' samples, in a child process (ecCodes and pyproj must not meet)."""
    import importlib.util

    if importlib.util.find_spec("eccodes") is None:  # found, not imported: ecCodes stays out of this process
        pytest.skip("eccodes is not installed")
    proc = subprocess.run([sys.executable, "-c", GRIB_WRITER, str(path), repr(spec)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return path


SURFACE = [("msl", None, 101000.0), ("2t", None, 288.0), ("sp", None, 100000.0), ("skt", None, 290.0),
           ("10u", None, 3.0), ("10v", None, 1.0), ("tcwv", None, 30.0), ("2d", None, 285.0)]


def test_grib_without_pressure_levels_is_named(tmp_path):
    surface = write_grib(tmp_path / "surface_only.grib2", SURFACE)
    with pytest.raises(DataError) as e:
        import_files([surface], tmp_path / "out")
    msg = str(e.value)
    assert "surface_only.grib2" in msg and "no pressure levels" in msg
    for var in ("U850", "V850", "T200", "T500", "Z200"):
        assert var in msg


def test_grib_with_levels_imports_and_mixes_with_netcdf(tmp_path):
    surface = write_grib(tmp_path / "surface.grib2", SURFACE)
    levels = write_grib(tmp_path / "levels.grib2", [("u", 850, 10.0), ("v", 850, -2.0), ("t", 200, 218.0),
                                                    ("t", 500, 262.0), ("gh", 200, 11900.0), ("gh", 1000, 90.0)])
    # precipitation from a netCDF on the same grid and time (inputs of both formats mix)
    xr.Dataset({"pr": (("time", "lat", "lon"), np.full((1, 19, 36), 1e-4), {"units": "kg m-2 s-1"})},
               coords={"time": TIMES[:1], "lat": np.arange(-90.0, 91.0, 10.0), "lon": np.arange(0.0, 360.0, 10.0)}
               ).to_netcdf(tmp_path / "pr.nc")
    result = import_files([surface, levels, tmp_path / "pr.nc"], tmp_path / "out")
    out = result["written"][0]
    assert out.endswith("data-2005-08-28-00-00.nc")
    t500, _, lat, _ = read_var(out, "T500")
    assert list(lat) == list(np.arange(-90.0, 91.0, 10.0))  # GRIB's north-first rows now ascending
    assert np.allclose(t500, 262.0 + 0.01 * lat[:, None], atol=1e-3)  # each row kept its own value
    assert np.allclose(read_var(out, "Z200")[0], 11900.0 + 0.01 * lat[:, None], atol=1e-2)
    assert np.allclose(read_var(out, "PRECT")[0], 1e-7)
    assert result["provenance"]["QREFHT"] == "derived" and result["provenance"]["UBOT"] == "approximate"


# ---------------------------------------------------------------------------------------------- real fields
REAL = Path(__file__).parent / "real" / "era5_levels_members01.nc"  # ERA5 sample from cfgrib's sdist


def test_real_era5_sample_is_read_and_what_it_lacks_is_named(tmp_path):
    from exascale_climate.data.importers import open_fields

    fields = {f.name: f for f in open_fields(REAL)}
    t = fields["t"]
    assert t.values.shape == (4, 2, 61, 120) and list(t.levels_hpa) == [850.0, 500.0]
    assert t.lat[0] == -90.0 and t.lat[-1] == 90.0
    with netCDF4.Dataset(REAL) as nc:  # independent read: member 0, 12 UTC on Jan 2, 500 hPa, north first
        raw = np.asarray(nc["t"][0, 3, 1], np.float64)
    assert np.array_equal(t.values[3, 1], raw[::-1])
    assert 200.0 < raw.min() < raw.max() < 280.0  # real 500 hPa temperatures
    with pytest.raises(DataError) as e:
        import_files([REAL], tmp_path / "out")
    msg = str(e.value)
    assert "era5_levels_members01.nc" in msg and "['t', 'z']" in msg
    for var in ("TMQ", "PSL", "U850", "T200", "Z1000"):
        assert var in msg.split("from")[0]


def test_real_field_regridded_keeps_its_global_mean():
    from exascale_climate.data.importers import open_fields

    t = next(f for f in open_fields(REAL) if f.name == "t")
    t500 = t.values[0, 1]
    lat_out, lon_out = default_coordinates(96, 144)
    out = regrid(t500, t.lat, t.lon, lat_out, lon_out)
    w_in, w_out = cell_areas_km2(t.lat, t.lon), cell_areas_km2(lat_out, lon_out)
    assert (out * w_out).sum() / w_out.sum() == pytest.approx((t500 * w_in).sum() / w_in.sum(), abs=0.05)
    assert t500.min() <= out.min() and out.max() <= t500.max()  # bilinear: no new extremes


# ------------------------------------------------------------------------------------------ real GRIB (NCL data)
NCL = Path("/usr/share/ncarg/data")  # Debian package libncarg-data (scripts/setup.sh installs it)
WAFS = NCL / "grb" / "wafsgfs_L_t06z_intdsk60.grib2"
needs_ncl = pytest.mark.skipif(not WAFS.exists(), reason="real GRIB files need the Debian package libncarg-data "
                                                         "(apt-get install libncarg-data; scripts/setup.sh does it)")

READ_WAFS = """
import sys, json, numpy as np, eccodes
want, out = {}, {}
with open(sys.argv[1], "rb") as f:
    while (h := eccodes.codes_grib_new_from_file(f)) is not None:
        key = (eccodes.codes_get(h, "shortName"), eccodes.codes_get(h, "typeOfLevel"), eccodes.codes_get(h, "level"))
        out["|".join(map(str, key))] = {"values": eccodes.codes_get_values(h).tolist(),
                                        "pl": eccodes.codes_get_array(h, "pl").tolist()}
        eccodes.codes_release(h)
json.dump(out, open(sys.argv[2], "w"))
"""


@needs_ncl
def test_real_gfs_grib2_quasi_regular_imports_all_variables(tmp_path):
    """NCEP's WAFS GFS forecast (GRIB2, 2007-01-10 06 UTC + 60 h, quasi-regular 1.25 degree rows over 0-90 N,
    240-330 E) as NCL ships it: every CAM5 variable exact, approximate or derived (none filled), checked against
    the messages decoded here independently (ecCodes in a child process) and hand integrals."""
    import json

    result = import_files([WAFS], tmp_path / "out")
    assert [Path(p).name for p in result["written"]] == ["data-2007-01-12-18-00.nc"]
    assert "filled" not in result["provenance"].values()
    assert {v for v, p in result["provenance"].items() if p == "derived"} == {"PRECT", "QREFHT", "TMQ", "ZBOT"}
    subprocess.run([sys.executable, "-c", READ_WAFS, WAFS, tmp_path / "raw.json"], check=True, timeout=600,
                   capture_output=True)
    raw = json.loads((tmp_path / "raw.json").read_text())
    out = result["written"][0]
    psl, attrs, lat, lon = read_var(out, "PSL")
    assert lat[0] == 0.0 and lat[-1] == 90.0 and lon[0] == 240.0 and lon[-1] == 330.0 and psl.shape == (73, 73)
    msl = np.asarray(raw["prmsl|meanSea|0"]["values"])
    pl = np.asarray(raw["prmsl|meanSea|0"]["pl"], int)
    np.testing.assert_allclose(psl[0], msl[:73], rtol=1e-6)  # the equator row is complete (73 points)
    row = int(np.flatnonzero(pl == 3)[0])  # a row of 3 points at 240, 285, 330 E: 285 E is its middle point
    start = int(pl[:row].sum())
    assert psl[row, 36] == pytest.approx(msl[start + 1], rel=1e-6)
    assert psl[row, 18] == pytest.approx(0.5 * (msl[start] + msl[start + 1]), rel=1e-6)  # 262.5 E: half-way
    # TMQ at a sea point with PS >= 1000 hPa: trapezoids of q (from r, t) over the 11 levels + the bottom layer
    ps = read_var(out, "PS")[0]
    j = int(np.flatnonzero(pl == 73)[-1])  # the most northern complete row
    i = 50  # 302.5 E (western Atlantic)
    k = int(pl[:j].sum()) + i
    assert ps[j, i] >= 100000.0 and lat[j] <= 30.0
    levels = [1000, 850, 700, 600, 500, 400, 300, 250, 200, 150, 100]
    p = np.array(levels) * 100.0
    t = np.array([raw[f"t|isobaricInhPa|{lv}"]["values"][k] for lv in levels])
    r = np.array([raw[f"r|isobaricInhPa|{lv}"]["values"][k] for lv in levels])
    e = r / 100.0 * 611.2 * np.exp(17.67 * (t - 273.15) / (t - 29.65))
    q = 0.622 * e / (p - 0.378 * e)
    hand = (np.sum(0.5 * (q[1:] + q[:-1]) * (p[:-1] - p[1:])) + q[0] * (ps[j, i] - p[0])) / 9.80665
    assert read_var(out, "TMQ")[0][j, i] == pytest.approx(hand, rel=1e-5)
    assert 20.0 < hand < 60.0  # a tropical column
    # QREFHT from the 2 m relative humidity and temperature (Bolton) and PS
    rh2, t2 = raw["2r|heightAboveGround|2"]["values"][k], raw["2t|heightAboveGround|2"]["values"][k]
    e2 = rh2 / 100.0 * 611.2 * math.exp(17.67 * (t2 - 273.15) / (t2 - 29.65))
    assert read_var(out, "QREFHT")[0][j, i] == pytest.approx(0.622 * e2 / (ps[j, i] - 0.378 * e2), rel=1e-5)
    # PRECT: the 54-60 h accumulation (kg m-2) over 6 h
    tp = np.asarray(raw["tp|surface|0"]["values"][:73])
    np.testing.assert_allclose(read_var(out, "PRECT")[0][0], tp * 1e-3 / 21600.0, rtol=1e-5, atol=1e-12)
    # a regional source cannot fill a global grid: named, nothing written
    with pytest.raises(DataError, match=r"wafsgfs.*global grid reaches beyond the source's domain \(0..90 N"):
        import_files([WAFS], tmp_path / "global", grid=(96, 144))
    assert not (tmp_path / "global").exists() or not list((tmp_path / "global").iterdir())


@needs_ncl
def test_real_grib_on_an_unsupported_grid_is_named(tmp_path):
    """Real NCEP files on grids the importer does not read (Lambert conformal; a GRIB1 predefined grid with no
    description): a one-line error naming the file and gridType, exit code 2, nothing written."""
    for name, kind in (("fh.0012_tl.press_gr.awp211.grb2", "lambert"), ("ced1.lf00.t00z.eta.grb", "undefined")):
        proc = subprocess.run([sys.executable, "-m", "exascale_climate.cli", "data", "import", NCL / "grb" / name,
                               "--out", tmp_path / "out"], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        line = proc.stderr.strip().splitlines()[-1]
        assert name in line and "[gridType]" in line and kind in line
        assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_bad_time_option_is_one_line(tmp_path):
    files = era5_files(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "exascale_climate.cli", "data", "import", *files, "--out",
                           tmp_path / "out", "--time", "yesterday"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--time" in proc.stderr.strip().splitlines()[-1] and "yesterday" in proc.stderr
