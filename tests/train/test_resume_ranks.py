"""Exact resume on several real ranks: gradient lag 1, mixed_float16 with dynamic loss scaling, the whole job
SIGKILLed right after a checkpoint, then `--resume`. Observed from outside: the final checkpoint FILES of the
resumed run equal those of the same run left alone (deterministic mode)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from conftest import blob_overrides
from exascale_climate.train.checkpoints import list_checkpoints, load_arrays
from exascale_climate.utils.launch import exaclimate, launch_command, rank_env
from exascale_climate.utils.log import read_json_lines

TWO_HOSTS = "localhost:2,127.0.0.1:2"
VALIDATE_ONE_RANK = """
import json, sys, yaml
from pathlib import Path
from exascale_climate.config import config_from_dict
from exascale_climate.train.checkpoints import assign_arrays, load_arrays
from exascale_climate.train.loop import setup_run, validate
from exascale_climate.utils.runtime import World
ckpt = Path(sys.argv[1])
cfg = config_from_dict(yaml.safe_load((ckpt / "config.yaml").read_text()))
run = setup_run(cfg, sys.argv[2], world=World())
assign_arrays(ckpt, "model", run.model.variables, load_arrays(ckpt)["model"])
print("VALIDATE " + json.dumps(validate(run)))
"""


def overrides(data: Path, **extra) -> list[str]:
    return blob_overrides(data, **{
        "train.batch_size": 1, "train.epochs": 1, "train.deterministic": "true",
        "train.checkpoint.every_steps": 3, "train.checkpoint.every_epochs": 0, "train.checkpoint.keep": 10,
        "train.validate_every_steps": 1000, "distributed.gradient_lag": 1,
        "train.precision": "mixed_float16", "train.loss_scale": "dynamic", "train.loss_scale_init": 2.0**20,
        "train.loss_scale_growth_steps": 2, "train.max_bad_steps": 50, "pipeline.random_flip": "true",
        "distributed.stall_timeout_s": 120, **extra})


def train_argv(run_dir: Path, sets: list[str], *extra: str) -> list[str]:
    return exaclimate("train", "--run-dir", str(run_dir), *extra, *sum((["--set", s] for s in sets), []))


def launch(np_: int, controller: str, hosts: str | None, argv: list[str]) -> subprocess.Popen:
    env = rank_env(min(np_, 2))
    names = ["TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "PYTHONUNBUFFERED",
             "PYTHONPATH", "PATH", "TF_CPP_MIN_LOG_LEVEL"]
    return subprocess.Popen(launch_command(np_, argv, controller, hosts=hosts, env_names=names), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def kill_job(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every rank at once (what a node failure or `scancel -s KILL` does)."""
    members = [proc.pid] + [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    for pid in members:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()


def assert_same_arrays(a: Path, b: Path) -> dict:
    """Every array of two checkpoints (model, optimizer slots, scaler, lag buffers) equal bit for bit; returns
    the arrays of `a`."""
    arrays_a, arrays_b = load_arrays(a), load_arrays(b)
    assert arrays_a.keys() == arrays_b.keys()
    for group in arrays_a:
        assert len(arrays_a[group]) == len(arrays_b[group]), group
        for i, (x, y) in enumerate(zip(arrays_a[group], arrays_b[group])):
            np.testing.assert_array_equal(x, y, err_msg=f"{group}[{i}]")
    return arrays_a


def final_checkpoint(run_dir: Path) -> Path:
    return list_checkpoints(run_dir / "checkpoints")[-1]


CASES = [pytest.param(2, "gloo", None, id="2-gloo"),
         pytest.param(4, "gloo", TWO_HOSTS, id="4-gloo-2hosts", marks=pytest.mark.slow),
         pytest.param(2, "mpirun", None, id="2-mpirun", marks=pytest.mark.slow),
         pytest.param(4, "mpirun", None, id="4-mpirun", marks=pytest.mark.slow)]


@pytest.mark.multirank
@pytest.mark.parametrize("np_,controller,hosts", CASES)
def test_resume_after_sigkill_on_ranks_equals_uninterrupted(blob_data, tmp_path, np_, controller, hosts):
    sets = overrides(blob_data, **{"train.epochs": np_ // 2})  # 8 steps on 2 and on 4 ranks
    reference = tmp_path / "uninterrupted"
    out = finish(launch(np_, controller, hosts, train_argv(reference, sets)))
    # no GPU here: why float16 is slow is said once for the job (rank 0), not once per rank
    assert out.count("train.precision is mixed_float16 on a node without a GPU") == 1, out[-3000:]
    steps = json.loads((final_checkpoint(reference) / "state.json").read_text())["step"]

    resumed = tmp_path / "resumed"
    proc = launch(np_, controller, hosts, train_argv(resumed, sets))
    deadline = time.monotonic() + 600
    while not list_checkpoints(resumed / "checkpoints"):  # killed right after the first checkpoint
        assert proc.poll() is None, "the run ended before it could be killed: " + proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    kill_job(proc)
    saved = [int(p.name.split("-")[1]) for p in list_checkpoints(resumed / "checkpoints")]
    assert 0 < max(saved) < steps, saved
    out = finish(launch(np_, controller, hosts, train_argv(resumed, sets, "--resume")))
    assert "resumed from" in out

    a, b = final_checkpoint(reference), final_checkpoint(resumed)
    assert a.name == b.name == f"ckpt-{steps}"
    assert {"model", "optimizer", "scaler"} <= set(assert_same_arrays(a, b))
    state_a, state_b = (json.loads((p / "state.json").read_text()) for p in (a, b))
    for key in ("loss_scale", "loss_scale_good_steps", "skipped_steps", "optimizer_iterations", "epoch"):
        assert state_a[key] == state_b[key], key
    # the dynamic scale really moved: overflows at 2^20 halved it, growth every 2 good steps doubled it
    train_records = [r for r in read_json_lines(reference / "metrics.jsonl") if r["kind"] == "train"]
    assert state_a["skipped_steps"] >= 1 and len({r["loss_scale"] for r in train_records}) > 1
    if np_ == 2 and controller == "gloo":
        check_one_rank_views(reference, resumed, sets, tmp_path)


def one_rank(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=rank_env(1), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=900)


def check_one_rank_views(reference: Path, resumed: Path, sets: list[str], tmp_path: Path) -> None:
    """The 2-rank run seen from 1 rank: the same validation IoU over the same files (validate() on 1 rank),
    a resume with another model config refused naming the key, and with another world size a warning."""
    import sys

    ckpt = final_checkpoint(reference)
    out = one_rank([sys.executable, "-c", VALIDATE_ONE_RANK, str(ckpt), str(tmp_path / "scratch")])
    assert out.returncode == 0, out.stdout[-3000:]
    alone = json.loads(out.stdout.split("VALIDATE ", 1)[1].splitlines()[0])
    on_ranks = [r for r in read_json_lines(reference / "metrics.jsonl") if r["kind"] == "valid"][-1]
    assert on_ranks["step"] == int(ckpt.name.split("-")[1])
    assert on_ranks["val_pixels"] == alone["val_pixels"] == 4 * 48 * 72
    assert on_ranks["val_mean_iou"] == pytest.approx(alone["val_mean_iou"], abs=1e-12)
    assert on_ranks["val_iou"] == pytest.approx(alone["val_iou"], abs=1e-12)

    other_model = one_rank(train_argv(resumed, [*sets, "model.tiramisu.growth_rate=16"], "--resume"))
    assert other_model.returncode != 0
    assert "model.tiramisu.growth_rate is 8 there, 16 in this run" in other_model.stdout, other_model.stdout[-2000:]
    assert "Traceback" not in other_model.stdout

    other_size = one_rank(train_argv(resumed, [*sets, "train.epochs=2", "train.max_steps=10"], "--resume"))
    assert other_size.returncode == 0, other_size.stdout[-3000:]
    assert "written by 2 ranks, this run has 1: the global batch changes from 2 to 1 samples" in other_size.stdout
    assert "the data shards differ" in other_size.stdout and "learning rate" in other_size.stdout
    assert final_checkpoint(resumed).name == "ckpt-10"
