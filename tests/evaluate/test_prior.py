"""evaluate/prior.py: classes from probabilities / trained class weights ^ a, in `predict` masks and in
`evaluate` (one exponent, or the sweep), checked against numpy on the probabilities `predict` writes."""
import json

import numpy as np
import pytest

from exascale_climate.errors import ExaclimateError
from exascale_climate.evaluate.prior import check_exponent, corrected_classes, format_sweep, sweep_report


def test_corrected_classes_by_hand():
    p = np.array([[0.30, 0.45, 0.25], [0.10, 0.20, 0.70]], np.float32)
    w = np.array([0.5, 4.0, 2.0])
    assert corrected_classes(p, w, 0.0).tolist() == [1, 2]
    # a = 1: [0.6, 0.1125, 0.125] and [0.2, 0.05, 0.35]; a = 0.5: [0.424, 0.225, 0.177] and [0.141, 0.1, 0.495]
    assert corrected_classes(p, w, 1.0).tolist() == [0, 2]
    assert corrected_classes(p, w, 0.5).tolist() == [0, 2]
    assert corrected_classes(p, w, 0.1).tolist() == [1, 2]  # 0.45 / 4^0.1 = 0.392 > 0.30 / 0.5^0.1 = 0.322


@pytest.mark.parametrize("bad", [-0.25, 1.5, float("nan")])
def test_exponent_outside_0_1_is_refused_naming_the_option(bad):
    with pytest.raises(ExaclimateError, match="--prior-correction"):
        check_exponent(bad)


def test_sweep_names_the_best_exponent():
    good = np.diag([10, 10, 10])
    poor = np.array([[10, 5, 5], [5, 10, 0], [5, 0, 10]])
    sweep = sweep_report((0.0, 0.5, 1.0), np.stack([poor, good, poor]), np.array([0.5, 4.0, 2.0]))
    assert sweep["best"] == 0.5 and sweep["mean_iou"][1] == 1.0
    assert "a=0.5   mean IoU 1.0000" in format_sweep(sweep) and "--prior-correction 0.5" in format_sweep(sweep)


def _numpy_confusion(labels, predictions):
    return np.bincount(3 * labels.ravel().astype(int) + predictions.ravel(), minlength=9).reshape(3, 3)


def test_predict_and_evaluate_divide_by_the_runs_training_weights(trained_assets, tmp_path):
    import h5py
    import xarray as xr
    import yaml

    from exascale_climate.data.layouts import list_samples
    from exascale_climate.data.samples import read_sample
    from exascale_climate.evaluate.evaluate import evaluate
    from exascale_climate.evaluate.predict import predict

    files = list_samples(trained_assets.test_dir)
    predict(trained_assets.run_dir, files, tmp_path / "raw", probabilities=True)
    predict(trained_assets.run_dir, files, tmp_path / "half", prior_correction=0.5)
    # the weights a second way: the run's scheme from its config file, the class counts from stats.h5 with h5py
    run_cfg = yaml.safe_load((trained_assets.run_dir / "config.yaml").read_text())
    assert run_cfg["pipeline"]["class_weighting"] == "inverse_sqrt"
    with h5py.File(trained_assets.root / "data" / "stats.h5", "r") as f:
        weights = f["climate/class_counts"][...].astype(np.float64) ** -0.5  # a common scale leaves argmax alone

    expected = {a: np.zeros((3, 3), np.int64) for a in (0.0, 0.5, 1.0)}
    changed = 0
    for path in files:
        with xr.open_dataset(tmp_path / "raw" / f"{path.stem}.mask.nc") as raw, \
                xr.open_dataset(tmp_path / "half" / f"{path.stem}.mask.nc") as half:
            p = np.moveaxis(raw["probability"].values[0], 0, -1).astype(np.float64)  # (H, W, K)
            assert np.array_equal(raw["mask"].values[0], p.argmax(-1))
            assert np.array_equal(half["mask"].values[0], (p / weights ** 0.5).argmax(-1))
            assert "^ 0.5" in half.attrs["prior_correction"] and "prior_correction" not in raw.attrs
        labels = read_sample(path).labels
        for a in expected:
            expected[a] += _numpy_confusion(labels, (p / weights ** a).argmax(-1))
        changed += int(((p / weights).argmax(-1) != p.argmax(-1)).sum())
    assert changed > 0  # the correction moves pixels on this model: the comparisons above can fail

    report = evaluate(trained_assets.run_dir, trained_assets.test_dir, labeller="off", prior_correction=0.5,
                      prior_sweep=True, json_path=tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == report
    assert report["prior_correction"] == 0.5
    assert report["model"]["confusion_matrix"] == expected[0.5].tolist()
    sweep = report["prior_sweep"]
    assert sweep["exponents"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    for a in expected:
        assert sweep["confusion_matrices"][sweep["exponents"].index(a)] == expected[a].tolist(), a
    assert sweep["best"] == sweep["exponents"][int(np.argmax(sweep["mean_iou"]))]


def test_cli_refuses_a_bad_exponent_and_prints_the_sweep(trained_assets, tmp_path):
    from click.testing import CliRunner

    from exascale_climate.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["evaluate", "--checkpoint", str(trained_assets.run_dir), "--data",
                               str(trained_assets.test_dir), "--labeller", "off", "--prior-sweep"])
    assert res.exit_code == 0, res.output
    assert "prior correction" in res.output and "<- best" in res.output
    res = runner.invoke(main, ["predict", str(trained_assets.test_dir), "--checkpoint", str(trained_assets.run_dir),
                               "--out", str(tmp_path / "p"), "--prior-correction", "2"])
    assert res.exit_code == 2 and "--prior-correction 2: must lie in [0, 1]" in res.output
