"""The one demo dataset builder: what `exaclimate data demo` writes is byte for byte what the four public data
commands write (the oracle: data synth -> convert -> split -> stats run one by one), and a rerun keeps it."""
import hashlib
import subprocess

from exascale_climate.data.demo import DemoDataset, build_demo_dataset
from exascale_climate.utils.launch import exaclimate


def _digests(root, skip=("split.json",)):
    """Relative path -> sha256 of every file (split.json records its own source path, so it differs)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in skip}


def _run(*args):
    done = subprocess.run(exaclimate(*args), text=True, capture_output=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_data_demo_writes_what_the_four_data_commands_write(tmp_path):
    one = tmp_path / "one"
    out = _run("data", "demo", "--out", str(one), "--samples", "5", "--seed", "3")
    assert "class fractions" in out
    steps = tmp_path / "steps"
    _run("data", "synth", "--out", str(steps / "raw"), "--samples", "5", "--grid", "96x144", "--seed", "3")
    _run("data", "convert", *map(str, sorted((steps / "raw").glob("*.nc"))), "--out", str(steps / "data" / "all"))
    _run("data", "split", str(steps / "data" / "all"), "--out", str(steps / "data"))
    _run("data", "stats", str(steps / "data" / "train"), "--out", str(steps / "data" / "stats.h5"))
    built = _digests(one)
    assert built == _digests(steps)
    demo = DemoDataset(one)
    assert demo.complete() and demo.stats_file.exists() and any(demo.test_dir.glob("data-*.h5"))
    assert len([k for k in built if k.startswith("raw/")]) == 5


def test_a_complete_demo_dataset_is_kept(tmp_path):
    demo = build_demo_dataset(tmp_path, samples=4, progress=False)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = build_demo_dataset(tmp_path, samples=4, progress=False)
    assert again == demo
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before
