"""Bad files met by a running job: node-local copies damaged AFTER `exaclimate stage` (one truncated, one with
one flipped bit in its label map, one with a NaN written into one variable). `exaclimate train` names each
(file and dataset or variable) and skips it with a warning, and finishes; with `--strict` it stops at the first
one with a one-line error naming it, exit status 2, no traceback. Observed from outside: the files the test
damaged, the command's output and exit status, the checkpoints on disk."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import CHANNELS, blob_overrides
from exascale_climate.train.checkpoints import list_checkpoints
from exascale_climate.utils.launch import exaclimate, rank_env


def run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=rank_env(1), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=900)


@pytest.fixture(scope="module")
def damaged(blob_data, tmp_path_factory) -> tuple[Path, dict[Path, str]]:
    """A staged copy of the blob dataset with three damaged training files: {file: what names the damage}."""
    stage = tmp_path_factory.mktemp("bad") / "stage"
    done = run(exaclimate("stage", "--src", str(blob_data), "--dst", str(stage)))
    assert done.returncode == 0, done.stdout[-3000:]
    files = sorted((stage / "train").glob("data-*.h5"))
    assert len(files) == 16
    truncated, flipped, nan = files[5], files[9], files[12]
    with open(truncated, "r+b") as f:  # cut inside the fields: the header is intact, the data is not
        f.truncate(truncated.stat().st_size * 6 // 10)
    with h5py.File(flipped, "r") as f:  # where the label map's bytes are (contiguous, uncompressed)
        offset = f["climate/labels_0"].id.get_offset() + 100
    with open(flipped, "r+b") as f:  # one flipped bit: a class id of 128 or more
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x80]))
    with h5py.File(nan, "r+") as f:  # one value of one variable (channels last: U850 is index 1)
        f["climate/data"][10, 20, CHANNELS.index("U850")] = np.nan
    return stage, {truncated: "", flipped: "climate/labels_0", nan: "U850"}


def argv(stage: Path, run_dir: Path, blob_data: Path, *extra: str) -> list[str]:
    sets = blob_overrides(blob_data, **{"pipeline.stage_dir": stage, "train.checkpoint.every_steps": 4})
    return exaclimate("train", "--run-dir", str(run_dir), *extra, *sum((["--set", s] for s in sets), []))


def test_damaged_staged_files_are_named_and_skipped_or_fatal_with_strict(damaged, blob_data, tmp_path):
    stage, bad = damaged
    lenient = run(argv(stage, tmp_path / "lenient", blob_data))
    assert lenient.returncode == 0, lenient.stdout[-4000:]
    warnings = [line for line in lenient.stdout.splitlines() if "skipping unreadable sample" in line]
    for path, field in bad.items():
        named = [line for line in warnings if str(path) in line]
        assert named, f"{path} not named:\n{lenient.stdout[-4000:]}"
        if field:  # the dataset (flipped bit) or the variable (NaN) is named beside the file
            assert f"{path} [{field}]" in named[0], named[0]
    assert "1 non-finite value(s) (NaN)" in " ".join(w for w in warnings if str(list(bad)[2]) in w)
    assert "truncated" in " ".join(w for w in warnings if str(list(bad)[0]) in w)
    assert "outside 0..2" in " ".join(w for w in warnings if str(list(bad)[1]) in w)
    assert "Traceback" not in lenient.stdout
    # the run went on to its end: 16 files / batch 2 = 8 steps, checkpoints written
    assert list_checkpoints(tmp_path / "lenient" / "checkpoints")[-1].name == "ckpt-8"
    reads = [json.loads(line) for line in (tmp_path / "lenient" / "metrics.jsonl").read_text().splitlines()
             if '"epoch_reads"' in line]
    assert reads and reads[0]["unreadable_files"] == 3 and reads[0]["distinct_samples"] == 13

    strict = run(argv(stage, tmp_path / "strict", blob_data, "--strict"))
    assert strict.returncode == 2, strict.stdout[-4000:]
    assert "Traceback" not in strict.stdout
    errors = [line for line in strict.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].endswith("(pipeline.strict is set)"), strict.stdout[-3000:]
    first = [path for path in bad if errors[0].startswith(f"error: {path}")]  # the first one read stops it
    assert len(first) == 1, errors
    if bad[first[0]]:
        assert errors[0].startswith(f"error: {first[0]} [{bad[first[0]]}]: "), errors
    saved = list_checkpoints(tmp_path / "strict" / "checkpoints")
    assert not saved or saved[-1].name != "ckpt-8"


def test_nan_in_a_source_sample_is_named_with_file_and_variable(blob_data, tmp_path):
    """Without staging: a NaN in the training data itself, strict -> the file and the variable in one line."""
    data = tmp_path / "data"
    shutil.copytree(blob_data, data)
    victim = sorted((data / "train").glob("data-*.h5"))[0]
    with h5py.File(victim, "r+") as f:
        f["climate/data"][0, 0, CHANNELS.index("PSL")] = np.inf
    done = run(exaclimate("train", "--run-dir", str(tmp_path / "run"), "--strict",
                          *sum((["--set", s] for s in blob_overrides(data)), [])))
    assert done.returncode == 2, done.stdout[-3000:]
    errors = [line for line in done.stdout.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {victim} [PSL]: 1 non-finite value(s) (Inf) (pipeline.strict is set)"], \
        done.stdout[-3000:]


MULTI = [pytest.param(4, "gloo", "localhost:2,127.0.0.1:2", id="4-gloo-2hosts"),
         pytest.param(4, "mpirun", None, id="4-mpirun")]


@pytest.mark.multirank
@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("np_,controller,hosts", MULTI)
def test_damaged_staged_files_on_four_ranks(blob_data, tmp_path, np_, controller, hosts):
    """Staged as 2 nodes by 4 ranks (`--dst stage/{node}`; mpirun: the checked 2-ranks-per-node override), then
    one truncated copy on node 0 and one NaN copy on node 1: the run on the same layout names both and finishes
    with its last checkpoint; with --strict the rank that meets one stops with the one-line error, the job exits
    non-zero, and no rank prints a traceback (every rank's own output file)."""
    from exascale_climate.utils.launch import run_ranks
    from test_dead_rank import launch_with_rank_files, rank_output

    per_node = ["--ranks-per-node", "2"] if controller == "mpirun" else []
    done = run_ranks(np_, exaclimate("stage", "--src", str(blob_data), "--dst", str(tmp_path / "stage" / "{node}"),
                                     *per_node), controller, timeout=900, hosts=hosts)
    assert done.returncode == 0, done.stdout[-3000:]
    node_files = [sorted((tmp_path / "stage" / str(n) / "train").glob("data-*.h5")) for n in (0, 1)]
    assert all(node_files), node_files
    truncated, nan = node_files[0][1], node_files[1][-1]
    with open(truncated, "r+b") as f:
        f.truncate(truncated.stat().st_size * 6 // 10)
    with h5py.File(nan, "r+") as f:
        f["climate/data"][10, 20, CHANNELS.index("U850")] = np.nan
    sets = blob_overrides(blob_data, **{"pipeline.stage_dir": tmp_path / "stage" / "{node}", "train.epochs": 2,
                                        "train.checkpoint.every_steps": 2,
                                        **({"distributed.ranks_per_node": 2} if controller == "mpirun" else {})})
    train = exaclimate("train", "--run-dir", str(tmp_path / "lenient"), *sum((["--set", s] for s in sets), []))
    lenient = run_ranks(np_, train, controller, timeout=1500, hosts=hosts)
    assert lenient.returncode == 0, lenient.stdout[-4000:]
    warnings = [line for line in lenient.stdout.splitlines() if "skipping unreadable sample" in line]
    assert any(str(truncated) in w and "truncated" in w for w in warnings), lenient.stdout[-4000:]
    assert any(f"{nan} [U850]" in w and "non-finite" in w for w in warnings), lenient.stdout[-4000:]
    # 16 files / (batch 2 x 4 ranks) = 2 steps an epoch, 2 epochs
    assert list_checkpoints(tmp_path / "lenient" / "checkpoints")[-1].name == "ckpt-4"

    out = tmp_path / "ranks"
    strict_argv = exaclimate("train", "--run-dir", str(tmp_path / "strict"), "--strict",
                             *sum((["--set", s] for s in sets), []))
    proc = launch_with_rank_files(np_, controller, hosts, strict_argv, out)
    launcher, _ = proc.communicate(timeout=1500)
    assert proc.returncode != 0
    texts = {rank: rank_output(out, rank) for rank in range(np_)}
    errors = [line.split("error: ", 1)[1] for text in texts.values() for line in text.splitlines()
              if "error: " in line and "(pipeline.strict is set)" in line]
    assert errors and all(e.startswith(f"{truncated}") or e.startswith(f"{nan} [U850]") for e in errors), \
        (errors, launcher[-3000:])
    assert not [r for r, text in texts.items() if "Traceback" in text], launcher[-3000:]
