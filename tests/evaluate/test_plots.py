"""Plots: PNG files of exactly the requested size, for a field map and for truth/prediction/error panels."""
import numpy as np
import pytest

from exascale_climate.errors import ExaclimateError
from exascale_climate.evaluate.plots import error_map, parse_size, plot_file
from exascale_climate.evaluate.predict import write_mask_netcdf

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def test_field_map_with_truth_contours_has_requested_size(nc_sample, tmp_path):
    path = nc_sample[0]
    out = plot_file(path, tmp_path / "tmq.png", var="TMQ", truth=True, size=(640, 400))
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert png_size(out) == (640, 400)
    assert out.stat().st_size > 10_000  # a real map, not a blank canvas


def test_truth_prediction_error_panels(nc_sample, tmp_path):
    import xarray as xr

    path, _, labels, lat, lon = nc_sample
    pred = labels.copy()
    pred[:, :12] = 0  # miss part of the TC
    coords = {"lat": xr.Variable(("lat",), lat), "lon": xr.Variable(("lon",), lon)}
    pred_path = write_mask_netcdf(tmp_path / "pred.nc", pred[None], coords)
    out = plot_file(path, tmp_path / "panels.png", var="PSL", truth=True, pred_path=pred_path, size=(1000, 800))
    assert png_size(out) == (1000, 800)
    assert out.stat().st_size > 20_000


def test_error_map_codes():
    truth = np.array([[0, 1, 2, 0, 1]])
    pred = np.array([[0, 1, 0, 2, 2]])
    assert error_map(truth, pred).tolist() == [[0, 1, 2, 3, 4]]


def test_bad_arguments(nc_sample, tmp_path):
    with pytest.raises(ExaclimateError, match="--size"):
        parse_size("big")
    assert parse_size("800x600") == (800, 600)
    with pytest.raises(ExaclimateError, match="--var"):
        plot_file(nc_sample[0], tmp_path / "x.png", var="NOPE")
    assert not (tmp_path / "x.png").exists()


def test_plot_cli(nc_sample, tmp_path):
    from click.testing import CliRunner

    from exascale_climate.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["plot", str(nc_sample[0]), "--truth", "--var", "PSL", "--out",
                               str(tmp_path / "p.png"), "--size", "500x300"])
    assert res.exit_code == 0, res.output
    assert png_size(tmp_path / "p.png") == (500, 300)
    res = runner.invoke(main, ["plot", str(nc_sample[0]), "--pred", str(nc_sample[0]), "--out",
                               str(tmp_path / "q.png")])
    assert res.exit_code == 2
    assert "no 'mask' variable" in res.output and str(nc_sample[0]) in res.output
    assert not (tmp_path / "q.png").exists()
