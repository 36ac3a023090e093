"""Every notebook runs top to bottom in a real IPython kernel (the venv's ipykernel) and draws its figures.

The kernel gets a fresh EXACLIMATE_DEMO_DIR, so the notebooks build their own small dataset and tiny trained
model exactly as on a fresh clone; the three notebooks share it (the first one that needs it makes it).
"""
import base64
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
KERNEL = "exaclimate-test"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory, monkeypatch_module):
    """A kernel spec for this interpreter in a private Jupyter path, and private IPython/matplotlib dirs."""
    root = tmp_path_factory.mktemp("jupyter")
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix", str(root), "--name", KERNEL],
                   check=True, capture_output=True)
    monkeypatch_module.setenv("JUPYTER_PATH", str(root / "share" / "jupyter"))
    monkeypatch_module.setenv("IPYTHONDIR", str(root / "ipython"))
    monkeypatch_module.setenv("MPLCONFIGDIR", str(root / "matplotlib"))
    monkeypatch_module.setenv("EXACLIMATE_DEMO_DIR", str(root / "demo"))
    monkeypatch_module.delenv("EXACLIMATE_BENCH_DIR", raising=False)
    monkeypatch_module.delenv("MPLBACKEND", raising=False)  # the kernel picks its inline backend
    return root


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def execute(name: str, cwd: Path):
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name=KERNEL, resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def images(nb) -> list[bytes]:
    return [base64.b64decode(out["data"]["image/png"]) for cell in nb.cells if cell.cell_type == "code"
            for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]


def errors(nb) -> list[str]:
    return [out.get("ename", "") for cell in nb.cells if cell.cell_type == "code"
            for out in cell.get("outputs", []) if out.get("output_type") == "error"]


@pytest.mark.parametrize("name, min_figures", [
    ("01_explore_dataset.ipynb", 3),
    ("02_inspect_model.ipynb", 3),
    ("03_performance_scaling.ipynb", 2),  # + the predicted scaling curves (scale/)
    ("04_semisup_boxes.ipynb", 3),
    ("05_patch_study.ipynb", 2),  # examples + at least one figure of misclassified patches
])
def test_notebook_runs_and_draws(name, min_figures, kernel_env, tmp_path):
    nb = execute(name, tmp_path)
    assert not errors(nb)
    figures = images(nb)
    assert len(figures) >= min_figures
    assert all(f.startswith(b"\x89PNG") and len(f) > 5000 for f in figures)


def test_notebooks_are_stored_without_outputs():
    """Committed notebooks carry no outputs or execution counts (no hidden state from a previous run)."""
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name
