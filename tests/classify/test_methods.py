"""`exaclimate classify`: every method learns a separable toy set, the ConvNets are the table's, bad files are named."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

TC_VARS = ["PSL", "UBOT", "VBOT", "TMQ", "U850", "V850", "T200", "T500"]
# The table, transcribed independently of exascale_climate.classify.study.
TABLE = {
    "tc": ((32, 32), 8, [("conv", (5, 5, 8)), ("pool", (2, 2)), ("conv", (5, 5, 16)), ("pool", (2, 2)), ("fc", (50,)),
                         ("fc", (2,))]),
    "ar": ((148, 224), 2, [("conv", (12, 12, 8)), ("pool", (3, 3)), ("conv", (12, 12, 16)), ("pool", (2, 2)),
                           ("fc", (200,)), ("fc", (2,))]),
    "wf": ((27, 60), 3, [("conv", (5, 5, 16)), ("pool", (2, 2)), ("conv", (5, 5, 16)), ("pool", (2, 2)),
                         ("fc", (400,)), ("fc", (2,))]),
}


def write_toy(path, n_train=120, n_test=40, size=(8, 8), variables=TC_VARS, pattern="tc", seed=0):
    """Linearly separable patches: events have a +3 bump at the centre of the first variable."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": "exaclimate-patches-1", "pattern": pattern, "variables": json.dumps(variables),
                        "size": list(size), "sources": json.dumps([])})
        for split, n in (("train", n_train), ("test", n_test)):
            y = np.arange(n) % 2
            x = rng.normal(size=(n, *size, len(variables))).astype(np.float32)
            h, w = size
            yy, xx = np.mgrid[:h, :w]
            bump = 3.0 * np.exp(-((yy - h // 2) ** 2 + (xx - w // 2) ** 2) / 4.0)
            x[y == 1, :, :, 0] += bump
            g = f.create_group(split)
            g["data"], g["label"] = x, y.astype(np.int8)
            g["source"] = g["row"] = g["col"] = np.zeros(n, np.int32)
    return path


def cli(*args, check=True):
    """The `exaclimate` command in this process (TensorFlow and scikit-learn are imported once)."""
    from click.testing import CliRunner

    from exascale_climate.cli import main

    result = CliRunner().invoke(main, list(args))
    if check:
        assert result.exit_code == 0, result.output + result.stderr + repr(result.exception)
    return result


FAST = ["--set", "classify.trials=2", "--set", "classify.epochs=6", "--set", "classify.tune_epochs=2",
        "--set", "classify.batch_size=16"]


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("classify")
    write_toy(base / "tc.h5")
    for method in ("logreg", "knn", "svm", "rf", "convnet"):
        cli("classify", "train", "--pattern", "tc", "--method", method, "--patches", str(base),
            "--run-dir", str(base / "runs" / f"tc-{method}"), *FAST)
    return base


@pytest.mark.parametrize("method", ["logreg", "knn", "svm", "rf", "convnet"])
def test_each_method_learns_a_separable_toy_set(toy_runs, method):
    run = toy_runs / "runs" / f"tc-{method}"
    result = json.loads((run / "result.json").read_text())
    assert result["test_accuracy"] >= 0.9 and result["train_accuracy"] >= 0.9
    assert result["trials"] == 2 and result["best_params"]
    # the stored predictions agree with the labels of the file, read here on their own
    pred = np.load(run / "predictions.npz")["pred"]
    with h5py.File(toy_runs / "tc.h5", "r") as f:
        labels = f["test/label"][...]
    assert (pred == labels).mean() == pytest.approx(result["test_accuracy"])
    # evaluate again from the saved model alone
    out = cli("classify", "evaluate", "--run-dir", str(run)).output
    assert f"test {100 * result['test_accuracy']:.2f}%" in out


def test_report_prints_the_talks_table_beside_ours(toy_runs, tmp_path):
    out = tmp_path / "docs" / "PATCH_STUDY.md"
    printed = cli("classify", "report", "--runs", str(toy_runs / "runs"), "--out", str(out)).output
    text = out.read_text()
    assert "99.30 / 99.10" in printed and "72.46 / 76.45" in text  # the talk's TC ConvNet and WF KNN cells
    ours = next(line for line in text.splitlines() if line.startswith("| TC | ours"))
    assert ours.count("/") == 5 and "-" not in ours.split("|", 3)[3]


@pytest.mark.parametrize("pattern", ["tc", "ar", "wf"])
def test_convnet_layers_are_the_tables(pattern):
    from exascale_climate.classify.convnet import build_convnet, layer_table

    size, channels, layers = TABLE[pattern]
    model = build_convnet(pattern, (*size, channels))
    assert layer_table(model) == layers
    assert tuple(model.input_shape[1:]) == (*size, channels) and model.output_shape[-1] == 2


@pytest.mark.parametrize("problem, expect", [("variables", "variables"), ("size", "train/data"),
                                             ("not_patches", "format")])
def test_bad_patch_file_is_named(tmp_path, problem, expect):
    path = tmp_path / "tc.h5"
    if problem == "variables":
        write_toy(path, variables=["TMQ", "PSL"])
    elif problem == "size":
        write_toy(path)
        with h5py.File(path, "a") as f:
            f.attrs["size"] = [32, 32]
    else:
        with h5py.File(path, "w") as f:
            f["climate/data"] = np.zeros((4, 4, 1))
    proc = cli("classify", "train", "--pattern", "tc", "--method", "logreg", "--patches", str(path),
               "--run-dir", str(tmp_path / "run"), check=False)
    assert proc.exit_code == 2 and str(path) in proc.stderr and expect in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run" / "result.json").exists()


@pytest.mark.slow
@pytest.mark.multirank
@pytest.mark.parametrize("launcher", ["horovodrun", "mpirun"])
def test_convnet_trains_data_parallel(tmp_path, launcher):
    """4 ranks on 2 simulated hosts (horovodrun --gloo) or 2 MPI ranks: one model, and it learns."""
    write_toy(tmp_path / "tc.h5", n_train=160)
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    if launcher == "horovodrun":
        if not shutil.which("horovodrun", path=env["PATH"]):
            pytest.skip("horovodrun not installed")
        cmd = ["horovodrun", "-np", "4", "-H", "localhost:2,127.0.0.1:2", "--gloo"]
        ranks = 4
    else:
        if not shutil.which("mpirun"):
            pytest.skip("mpirun not installed")
        cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2"]
        ranks = 2
    run = tmp_path / "run"
    proc = subprocess.run([*cmd, sys.executable, "-m", "exascale_climate.cli", "classify", "train", "--pattern", "tc",
                           "--method", "convnet", "--patches", str(tmp_path), "--run-dir", str(run), *FAST],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((run / "result.json").read_text())
    assert result["ranks"] == ranks and result["test_accuracy"] >= 0.9


def test_pca_features_and_tuning_budget(tmp_path):
    """classify.pca_components: the saved model is flatten -> scale -> PCA(k) -> SVM and takes raw patches;
    classify.tune_timeout stops the trials (one always runs); trials fit at most classify.max_tune_examples."""
    import joblib

    write_toy(tmp_path / "tc.h5", n_train=200, n_test=60)
    run = tmp_path / "svm"
    cli("classify", "train", "--pattern", "tc", "--method", "svm", "--patches", str(tmp_path), "--run-dir", str(run),
        "--set", "classify.pca_components=6", "--set", "classify.trials=40", "--set", "classify.tune_timeout=1e-6",
        "--set", "classify.max_tune_examples=100")
    result = json.loads((run / "result.json").read_text())
    assert result["trials_run"] == 1 and result["features"] == "pca6" and result["tune_fit_examples"] == 100
    model = joblib.load(run / "model.joblib")
    assert model.named_steps["pca"].components_.shape == (6, 8 * 8 * len(TC_VARS))
    with h5py.File(tmp_path / "tc.h5", "r") as f:
        x, y = f["test/data"][...], f["test/label"][...]
    assert (model.predict(x) == y).mean() >= 0.9
    # the PCA is a projection of the standardised pixels: recompute it by hand from the fitted parts
    scale, pca = model.named_steps["scale"], model.named_steps["pca"]
    z = (x.reshape(len(x), -1) - scale.mean_) / scale.scale_
    np.testing.assert_allclose(model[:-1].transform(x), (z - pca.mean_) @ pca.components_.T, rtol=1e-3, atol=1e-3)


def test_report_keeps_notes_below_the_marker(toy_runs, tmp_path):
    from exascale_climate.classify.report import NOTES_MARKER

    out = tmp_path / "PATCH_STUDY.md"
    out.write_text("old table\n" + NOTES_MARKER + "\nConditions: a shared machine.\n")
    cli("classify", "report", "--runs", str(toy_runs / "runs"), "--out", str(out))
    text = out.read_text()
    assert "old table" not in text and "| TC | ours" in text
    assert text.endswith(NOTES_MARKER + "\nConditions: a shared machine.\n")
