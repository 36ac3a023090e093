"""Bad options of the data commands end before any work: one line naming the option and what is allowed, exit 2,
nothing written (the output directory is not even created)."""
import numpy as np
import pytest
from click.testing import CliRunner

from exascale_climate.cli import main
from exascale_climate.data.writers import write_deepcam_sample, write_netcdf_sample
from exascale_climate.data.grid import default_coordinates
from exascale_climate.variables import VARIABLE_NAMES


# Plausible weather (issue 23: values outside a variable's physical range are rejected on read), hand-picked in
# VARIABLE_NAMES order.
MEAN = np.array([25, 0, 0, 0, 0, 0.01, 97000, 101000, 220, 255, 1e-7, 288, 287, 100, 11800, 60], np.float32)
SPREAD = np.array([3, 5, 5, 5, 5, 0.001, 500, 500, 3, 5, 1e-8, 5, 5, 50, 100, 2], np.float32)


@pytest.fixture
def nc_input(tmp_path):
    h, w = 96, 144
    data = (np.random.default_rng(0).normal(size=(h, w, 16)) * SPREAD + MEAN).astype(np.float32)
    lat, lon = default_coordinates(h, w)
    return write_netcdf_sample(tmp_path / "in.nc", data, np.zeros((h, w), np.uint8), list(VARIABLE_NAMES),
                               lat=lat, lon=lon, time_hours=0.0)


def run(args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output.strip()


@pytest.mark.parametrize("extra, message", [
    (["--compression", "gzip:99"],
     "--compression 'gzip:99': not allowed; use none, lzf, gzip or gzip:L with L in 0..9"),
    (["--compression", "gzip:"], "--compression 'gzip:': not allowed"),
    (["--compression", "zstd"], "--compression 'zstd': not allowed"),
    (["--chunks", "96x144x99"], "--chunks '96x144x99': larger than the data of"),
    (["--chunks", "97x1x1"], "each of H, W, C must be at most 96, 144, 16"),
    (["--chunks", "8x8x4", "--channels", "TMQ,PSL"], "(96x144x2)"),
    (["--chunks", "8x8"], "--chunks '8x8': not a chunk shape; use none, auto or HxWxC"),
    (["--chunks", "0x8x8"], "--chunks '0x8x8': not a chunk shape"),
    (["--chunks", "axbxc"], "--chunks 'axbxc': not a chunk shape"),
])
def test_convert_rejects_bad_compression_and_chunks_first(nc_input, tmp_path, extra, message):
    out = tmp_path / "out"
    code, output = run(["data", "convert", nc_input, "--out", out, *extra])
    assert code == 2
    assert len(output.splitlines()) == 1 and output.startswith("error: ") and message in output
    assert not out.exists()


def test_valid_chunks_and_compression_still_convert(nc_input, tmp_path):
    import h5py

    code, output = run(["data", "convert", nc_input, "--out", tmp_path / "out", "--chunks", "96x144x16",
                        "--compression", "gzip:9"])
    assert code == 0, output
    with h5py.File(next((tmp_path / "out").glob("*.h5"))) as f:
        assert f["climate/data"].chunks == (96, 144, 16) and f["climate/data"].compression_opts == 9


def test_out_that_is_a_file_or_below_a_file(nc_input, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    for args, message in [
        (["data", "convert", nc_input, "--out", blocker], "--out '{b}': is a file, not a directory"),
        (["data", "convert", nc_input, "--out", blocker / "sub" / "dir"], "{b} is a file, so no directory"),
        (["data", "label", nc_input, "--out", blocker], "--out '{b}': is a file, not a directory"),
        (["data", "stats", tmp_path, "--out", blocker / "stats.h5"], "{b} is a file, so no directory"),
        (["data", "stats", tmp_path, "--out", tmp_path], "is a directory; give a file name"),
        (["data", "synth", "--out", blocker, "--samples", "1"], "is a file, not a directory"),
        (["predict", "--checkpoint", tmp_path, nc_input, "--out", blocker], "is a file, not a directory"),
    ]:
        code, output = run(args)
        assert code == 2, (args, output)
        assert output == f"error: {output[7:]}" and message.format(b=blocker) in output, output
        assert len(output.splitlines()) == 1
    assert blocker.read_text() == "x"


def test_gordon_bell_input_shape_is_channels_first(tmp_path):
    from exascale_climate.data.writers import write_gordonbell_sample
    from exascale_climate.data.options import input_shape

    data = np.zeros((96, 144, 16), np.float32)
    gb = write_gordonbell_sample(tmp_path / "gb.h5", data, np.zeros((96, 144), np.uint8), list(VARIABLE_NAMES))
    dc = write_deepcam_sample(tmp_path / "dc.h5", data, np.zeros((96, 144), np.uint8), list(VARIABLE_NAMES))
    assert input_shape(gb) == input_shape(dc) == (96, 144, 16)
    (tmp_path / "junk.nc").write_bytes(b"not a file")
    assert input_shape(tmp_path / "junk.nc") is None
