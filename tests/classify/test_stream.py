"""`exaclimate patches extract --synthetic`: patches streamed from the generator equal crops of the same steps
written by `exaclimate data synth`, are centred / event-free against those files' labels, split by time, and
do not depend on the number of workers; no field is left on disk."""
import subprocess
import sys

import h5py
import numpy as np
import pytest

from tests.classify.patch_checks import SIZES, class_mask, crop, source_fields

COUNTS = {"tc": (20, 24), "ar": (20, 24), "wf": (20, 24)}
STEPS, SEED = 40, 3


def cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "exascale_climate.cli", *args], capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _extract(out, workers):
    args = ["patches", "extract", "--synthetic", str(STEPS), "--grid", "96x144", "--synth-seed", str(SEED),
            "--workers", str(workers), "--out", str(out), "--seed", "1"]
    for key, (h, w) in SIZES.items():
        args += ["--size", f"{key}={h}x{w}", "--count", f"{key}={COUNTS[key][0]},{COUNTS[key][1]}"]
    return cli(*args).stdout


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    base = tmp_path_factory.mktemp("stream")
    out2 = _extract(base / "w2", 2)
    _extract(base / "w1", 1)
    # the same steps written to disk the ordinary way: the reference the streamed patches must equal
    cli("data", "synth", "--out", str(base / "nc"), "--samples", str(STEPS), "--grid", "96x144",
        "--seed", str(SEED))
    return base, out2


@pytest.mark.parametrize("key", ["tc", "ar", "wf"])
def test_streamed_patches_are_crops_of_the_written_steps(streamed, key):
    base, _ = streamed
    land = None
    with h5py.File(base / "w2" / f"{key}.h5", "r") as f:
        stamps = [s.decode() if isinstance(s, bytes) else s for s in f["sources"][...]]
        assert list(f.attrs["size"]) == list(SIZES[key])
        for split in ("train", "test"):
            g = f[split]
            for j in range(len(g["label"])):
                path = base / "nc" / f"data-{stamps[g['source'][j]]}.nc"
                r, c = int(g["row"][j]), int(g["col"][j])
                mask = crop(class_mask(key, str(path)), r, c, SIZES[key])
                h, w = SIZES[key]
                if g["label"][j] == 1:
                    assert mask[h // 2, w // 2], f"{key} positive {j} is not centred on an event of {path.name}"
                else:
                    assert not mask.any(), f"{key} negative {j} holds an event pixel of {path.name}"
                np.testing.assert_array_equal(g["mask"][j], mask)
                fields = source_fields(key, str(path))
                np.testing.assert_array_equal(g["data"][j][..., : fields.shape[-1]], crop(fields, r, c, SIZES[key]))
                if key == "ar":
                    if land is None:
                        from exascale_climate.data.geography import geography

                        land = geography(96, 144)[0] >= 0.5
                    np.testing.assert_array_equal(g["data"][j][..., 1], crop(land, r, c, SIZES[key]))


def test_counts_split_by_time_and_nothing_else_on_disk(streamed):
    base, out = streamed
    assert sorted(p.name for p in (base / "w2").iterdir()) == ["ar.h5", "tc.h5", "wf.h5"]  # no fields, no temps
    for key, (pos, neg) in COUNTS.items():
        with h5py.File(base / "w2" / f"{key}.h5", "r") as f:
            train_src, test_src = f["train/source"][...], f["test/source"][...]
            # every training step comes before every test step, and the cut is at 80% of the steps used
            assert train_src.max() < test_src.min()
            used = int(f.attrs["steps_used"])
            assert used <= STEPS and test_src.max() < used
            assert int(f.attrs["train_steps"]) == round(0.8 * used)
            for split, share in (("train", 0.8), ("test", 0.2)):
                label = f[f"{split}/label"][...]
                assert (int(label.sum()), int((label == 0).sum())) == (round(pos * share), round(neg * share))
            assert f.attrs["format"] == "exaclimate-patches-1" and '"seed": 3' in f.attrs["generator"]
        assert f"{key}: train {round(pos * 0.8)} + / {round(neg * 0.8)} -" in out


def test_workers_do_not_change_the_patches(streamed):
    base, _ = streamed
    for key in SIZES:
        with h5py.File(base / "w1" / f"{key}.h5", "r") as a, h5py.File(base / "w2" / f"{key}.h5", "r") as b:
            for name in ("train/data", "train/label", "test/data", "test/source", "test/row"):
                np.testing.assert_array_equal(a[name][...], b[name][...])


def test_streamed_file_trains(streamed, tmp_path):
    base, _ = streamed
    cli("classify", "train", "--pattern", "wf", "--method", "logreg", "--patches", str(base / "w2"),
        "--run-dir", str(tmp_path / "run"), "--set", "classify.trials=1")
    assert (tmp_path / "run" / "result.json").exists()


@pytest.mark.parametrize("args, expect", [
    (["--synthetic", "10", "--grid", "96x144"], "148x224"),  # the default AR size does not fit
    (["--synthetic", "10", "SOME_INPUT"], "not both"),
])
def test_bad_synthetic_options_are_named(tmp_path, args, expect):
    if "SOME_INPUT" in args:
        (tmp_path / "in").mkdir()
        args = [str(tmp_path / "in") if a == "SOME_INPUT" else a for a in args]
    proc = cli("patches", "extract", "--out", str(tmp_path / "p"), *args, check=False)
    assert proc.returncode != 0 and expect in proc.stderr and "Traceback" not in proc.stderr


def test_sigterm_writes_the_unfinished_patterns_from_the_steps_taken(tmp_path):
    """A run cut short (deadline, Ctrl-C) still leaves its patches, split by time over the steps it took."""
    import signal
    import time

    out = tmp_path / "p"
    args = [sys.executable, "-m", "exascale_climate.cli", "patches", "extract", "--synthetic", "5000", "--grid",
            "96x144", "--synth-seed", "3", "--workers", "2", "--out", str(out), "--pattern", "tc,wf",
            "--size", "tc=8x8", "--size", "wf=8x16", "--count", "tc=100000,100000", "--count", "wf=100000,100000"]
    log = tmp_path / "log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT)
        while "INFO step 24:" not in log.read_text():  # a few blocks after the pilot
            assert proc.poll() is None, log.read_text()
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=600) == 0, log.read_text()
    assert "stopped by signal" in log.read_text()
    assert sorted(p.name for p in out.iterdir()) == ["tc.h5", "wf.h5"]
    for key in ("tc", "wf"):
        with h5py.File(out / f"{key}.h5", "r") as f:
            used = int(f.attrs["steps_used"])
            assert 24 <= used < 5000 and bool(f.attrs["stopped_early"])
            train_src, test_src = f["train/source"][...], f["test/source"][...]
            assert train_src.max() < int(f.attrs["train_steps"]) <= test_src.min() and test_src.max() < used
            assert len(f["sources"]) == used
