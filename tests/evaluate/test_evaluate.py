"""evaluate: metrics against a hand computation, the per-sample table, the report."""
import numpy as np
import pytest

from exascale_climate.evaluate.evaluate import confusion, labels_are_independent, report_tables, sample_row, scores


def test_confusion_and_scores_match_hand_computation():
    truth = np.array([[0, 0, 0, 1], [1, 2, 2, 2], [0, 0, 2, 0]])
    pred = np.array([[0, 0, 1, 1], [0, 2, 2, 0], [0, 0, 2, 2]])
    cm = confusion(truth, pred)
    # rows = truth, columns = prediction, counted by hand
    assert cm.tolist() == [[4, 1, 1], [1, 1, 0], [1, 0, 3]]
    s = scores(cm)
    # IoU = tp / (tp + fp + fn): background 4/(4+2+2), TC 1/(1+1+1), AR 3/(3+1+1)
    assert s["iou"]["background"] == pytest.approx(4 / 8)
    assert s["iou"]["tropical_cyclone"] == pytest.approx(1 / 3)
    assert s["iou"]["atmospheric_river"] == pytest.approx(3 / 5)
    assert s["mean_iou"] == pytest.approx((4 / 8 + 1 / 3 + 3 / 5) / 3)
    assert s["precision"]["tropical_cyclone"] == pytest.approx(1 / 2)  # tp / predicted TC
    assert s["recall"]["atmospheric_river"] == pytest.approx(3 / 4)  # tp / true AR
    assert s["pixel_accuracy"] == pytest.approx(8 / 12)
    assert s["pixels"] == 12


def test_absent_class_and_undefined_precision():
    truth = np.zeros((4, 4), int)
    pred = np.zeros((4, 4), int)
    pred[0, 0] = 2
    s = scores(confusion(truth, pred))
    assert s["iou"]["tropical_cyclone"] == 1.0  # absent from truth and prediction (MLPerf convention)
    assert s["iou"]["atmospheric_river"] == 0.0
    assert s["precision"]["tropical_cyclone"] is None  # nothing predicted: undefined, JSON null
    assert s["recall"]["atmospheric_river"] is None


def test_sample_row_counts_pixels(tmp_path):
    truth = np.array([[0, 1, 1, 2]])
    pred = np.array([[0, 1, 0, 2]])
    row = sample_row(tmp_path / "data-x.h5", "2000-01-01", confusion(truth, pred), None)
    assert row["file"] == "data-x.h5"
    assert row["true_pixels_tropical_cyclone"] == 2 and row["pred_pixels_tropical_cyclone"] == 1
    assert row["iou_tropical_cyclone"] == pytest.approx(0.5)
    assert row["labeller_mean_iou"] == ""


def test_labeller_made_labels_are_not_independent():
    assert labels_are_independent({"source": "CAM5"})
    assert not labels_are_independent({"label_source": "exaclimate heuristic labeller"})


def test_report_tables_render():
    from rich.console import Console

    s = scores(np.array([[5, 1, 1], [1, 1, 0], [1, 0, 3]]))
    console = Console(record=True, width=120)
    for t in report_tables({"model": s, "labeller": None}):
        console.print(t)
    text = console.export_text()
    assert "0.5556" in text and "tropical_cyclone" in text and "rows = truth" in text


# ------------------------------------------------------------------------------- with a trained model
def test_evaluate_run_on_test_split(trained_assets, tmp_path):
    import csv
    import json

    from exascale_climate.data.layouts import list_samples
    from exascale_climate.data.samples import read_sample
    from exascale_climate.data.labeller import label_fields
    from exascale_climate.evaluate.evaluate import evaluate

    report = evaluate(trained_assets.run_dir, trained_assets.test_dir, json_path=tmp_path / "m.json",
                      csv_path=tmp_path / "s.csv", labeller="on", errors=True)
    assert json.loads((tmp_path / "m.json").read_text()) == report
    files = list_samples(trained_assets.test_dir)
    samples = [read_sample(f) for f in files]
    cm = np.array(report["model"]["confusion_matrix"])
    # rows = truth: the row sums are the true class counts of the files
    true_counts = sum(np.bincount(s.labels.ravel(), minlength=3) for s in samples)
    assert cm.sum(axis=1).tolist() == true_counts.tolist()
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert sorted(r["file"] for r in rows) == sorted(f.name for f in files)
    assert [float(r["mean_iou"]) for r in rows] == sorted(float(r["mean_iou"]) for r in rows)  # worst first
    assert sum(int(r["pred_pixels_tropical_cyclone"]) for r in rows) == cm[:, 1].sum()
    # --errors splits the confusion matrix's off-diagonal AR and TC pixels; the parts add up to it
    errors = report["errors"]
    assert errors["false_ar"] == cm[:, 2].sum() - cm[2, 2] and errors["missed_ar"] == cm[2].sum() - cm[2, 2]
    assert errors["counts"]["false_tc"] == cm[:, 1].sum() - cm[1, 1]
    assert errors["counts"]["missed_tc_edge"] + errors["counts"]["missed_tc_interior"] == cm[1].sum() - cm[1, 1]
    assert errors["counts"]["true_ar_edge"] + errors["counts"]["true_ar_interior"] == cm[2].sum()
    # the labeller scored against the files' labels, computed directly
    lab_cm = sum(confusion(s.labels, label_fields(dict(zip(s.variables, np.moveaxis(s.data, -1, 0))), s.lat, s.lon))
                 for s in samples)
    assert report["labeller"]["confusion_matrix"] == lab_cm.tolist()
    assert report["labeller_samples"] == 3


def test_evaluate_cli_json_and_errors(trained_assets, tmp_path):
    import json

    from click.testing import CliRunner

    from exascale_climate.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["evaluate", "--checkpoint", str(trained_assets.run_dir), "--data",
                               str(trained_assets.test_dir), "--json", str(tmp_path / "m.json"), "--labeller", "off"])
    assert res.exit_code == 0, res.output
    assert "mean IoU" in res.output and "confusion matrix" in res.output
    assert json.loads((tmp_path / "m.json").read_text())["labeller"] is None
    res = runner.invoke(main, ["evaluate", "--checkpoint", str(trained_assets.run_dir), "--data",
                               str(trained_assets.test_dir), "--labeller", "off", "--errors"])
    assert res.exit_code == 0, res.output
    assert "false AR pixels" in res.output and "on river edges" in res.output
    res = runner.invoke(main, ["evaluate", "--checkpoint", str(tmp_path), "--data", str(trained_assets.test_dir)])
    assert res.exit_code == 2 and "no checkpoint" in res.output


@pytest.mark.multirank
@pytest.mark.parametrize("np_,controller,hosts", [
    pytest.param(2, "gloo", None, id="2-gloo"),
    pytest.param(4, "gloo", "localhost:2,127.0.0.1:2", id="4-gloo-2hosts", marks=pytest.mark.slow),
    pytest.param(2, "mpirun", None, id="2-mpirun", marks=pytest.mark.slow)])
def test_ranks_give_the_single_rank_confusion_matrix_and_errors(trained_assets, tmp_path, np_, controller, hosts):
    """3 files on 2 or 4 ranks (one rank with none on 4): the summed confusion matrix, --errors counts and
    --prior-sweep matrices equal a single process's, under horovodrun (one host, and 2 hosts x 2 ranks) and mpirun."""
    import json

    from exascale_climate.evaluate.evaluate import evaluate
    from exascale_climate.utils.launch import exaclimate, run_ranks

    single = evaluate(trained_assets.run_dir, trained_assets.test_dir, labeller="off", errors=True, prior_sweep=True)
    proc = run_ranks(np_, exaclimate("evaluate", "--checkpoint", str(trained_assets.run_dir), "--data",
                                   str(trained_assets.test_dir), "--labeller", "off", "--errors", "--prior-sweep",
                                   "--json", str(tmp_path / "m.json"), "--csv", str(tmp_path / "s.csv")),
                     controller=controller, hosts=hosts, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    multi = json.loads((tmp_path / "m.json").read_text())
    assert multi["ranks"] == np_
    assert multi["model"]["confusion_matrix"] == single["model"]["confusion_matrix"]
    assert single["errors"]["false_ar"] + single["errors"]["missed_ar"] > 0  # something to sum
    assert multi["errors"] == single["errors"]  # counts summed over ranks
    assert multi["prior_sweep"] == single["prior_sweep"]
    assert len({json.dumps(cm) for cm in single["prior_sweep"]["confusion_matrices"]}) > 1  # exponents differ
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 1 + 3  # rows from every rank
