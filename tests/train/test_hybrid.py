"""Hybrid synchronous/asynchronous training (SC17 15PF) on real mpirun ranks: compute groups + parameter servers.

Observed from outside the code under test: checkpoint files on disk, the groups' metrics.jsonl and the lead
server's servers.jsonl (two independent records of the same updates), the report file, exit codes; staleness is
recomputed here from the servers' update sequence.
"""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil
import pytest

from conftest import blob_overrides
from exascale_climate.config import load_config
from exascale_climate.errors import ConfigError
from exascale_climate.train.checkpoints import list_checkpoints, load_arrays
from exascale_climate.train.hybrid import shard_by_layer
from exascale_climate.utils.launch import exaclimate, launch_command, rank_env
from exascale_climate.utils.log import read_json_lines
from exascale_climate.utils.runtime import hybrid_layout

ENV_NAMES = ["TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "PYTHONUNBUFFERED",
             "PYTHONPATH", "PATH", "TF_CPP_MIN_LOG_LEVEL"]


# ------------------------------------------------------------------------------------------ no ranks
def test_layer_shards_keep_layers_whole_and_are_balanced_by_bytes():
    """Against an exhaustive search for the best split of whole layers (small case)."""
    rng = np.random.default_rng(0)
    variables = []
    for layer in range(7):
        for part in ("kernel", "bias"):
            shape = (int(rng.integers(1, 40)), int(rng.integers(1, 40))) if part == "kernel" else (3,)
            variables.append(SimpleNamespace(path=f"model/layer{layer}/{part}", shape=shape))
    for servers in (1, 2, 3):
        shards = shard_by_layer(variables, servers)
        assert sorted(i for s in shards for i in s) == list(range(len(variables)))
        for shard in shards:  # a layer's kernel and bias are on the same server
            layers = {variables[i].path.rsplit("/", 1)[0] for i in shard}
            assert all(sum(v.path.startswith(f"{name}/") for v in variables) ==
                       sum(variables[i].path.startswith(f"{name}/") for i in shard) for name in layers)
        size = {f"model/layer{k}": sum(int(np.prod(v.shape)) * 4 for v in variables
                                       if v.path.startswith(f"model/layer{k}/")) for k in range(7)}
        best = min(max(sum(size[f"model/layer{k}"] for k in range(7) if a[k] == s) for s in range(servers))
                   for a in itertools.product(range(servers), repeat=7))
        heaviest = max(sum(int(np.prod(variables[i].shape)) * 4 for i in shard) for shard in shards)
        assert heaviest <= 4 / 3 * best + 1  # greedy largest-first: within 4/3 of the optimum (Graham 1969)


def test_layout_and_config_bounds():
    assert hybrid_layout(5, 2, 1) == (((0, 1), (2, 3)), (4,))
    assert hybrid_layout(8, 3, 2) == (((0, 1), (2, 3), (4, 5)), (6, 7))
    with pytest.raises(ConfigError, match="distributed.groups: 5 ranks minus 1 parameter server"):
        hybrid_layout(5, 3, 1)
    with pytest.raises(ConfigError, match="distributed.max_staleness: 1 is too small for 3 groups"):
        load_config(None, ["distributed.mode=hybrid", "distributed.groups=3", "distributed.max_staleness=1"])
    with pytest.raises(ConfigError, match="distributed.mode: 'async' is not allowed"):
        load_config(None, ["distributed.mode=async"])


def test_hybrid_without_mpi_is_a_one_line_error(blob_data, tmp_path):
    out = subprocess.run(exaclimate("train", "--run-dir", str(tmp_path / "run"),
                                    *sum((["--set", s] for s in blob_overrides(blob_data, **{
                                        "distributed.mode": "hybrid"})), [])),
                         env=rank_env(1), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert out.returncode == 2, out.stdout[-2000:]
    assert "distributed.mode: hybrid needs an MPI launch (mpirun" in out.stdout
    assert "Traceback" not in out.stdout


# ------------------------------------------------------------------------------------------ real ranks
def sets_for(data: Path, **extra) -> list[str]:
    return blob_overrides(data, **{
        "train.batch_size": 1, "train.epochs": 2, "train.log_every_steps": 1, "train.deterministic": "true",
        "train.checkpoint.every_steps": 0, "train.checkpoint.every_epochs": 0, "train.checkpoint.keep": 10,
        "distributed.stall_timeout_s": 120, "pipeline.shuffle": "false", **extra})


def mpirun(np_: int, run_dir: Path, sets: list[str], *extra: str) -> subprocess.Popen:
    argv = exaclimate("train", "--run-dir", str(run_dir), *extra, *sum((["--set", s] for s in sets), []))
    cmd = launch_command(np_, argv, "mpirun", env_names=ENV_NAMES)
    cmd.insert(1, "--enable-recovery")  # a dead rank must not take the job down (docs/TRAINING.md)
    return subprocess.Popen(cmd, env=rank_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 1500) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-5000:]
    return out


def status(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(exaclimate("train", "--status", "--run-dir", str(run_dir)), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)


def final_checkpoint(run_dir: Path) -> Path:
    return list_checkpoints(run_dir / "checkpoints")[-1]


def check_records(run_dir: Path, groups: int, steps: int, max_staleness: int) -> dict:
    """Both sides' records agree, staleness recomputed from the servers' order is within the bound."""
    pushes = [r for r in read_json_lines(run_dir / "metrics.jsonl") if r["kind"] == "push"]
    updates = [r for r in read_json_lines(run_dir / "servers.jsonl") if r["kind"] == "update"]
    state = json.loads((final_checkpoint(run_dir) / "state.json").read_text())
    # the servers' update count == the groups' pushes, each counted on its own side
    assert len(updates) == len(pushes) == state["version"] == groups * steps
    assert sorted((r["group"], r["step"]) for r in updates) == sorted((r["group"], r["step"]) for r in pushes)
    assert [r["version"] for r in updates] == list(range(1, len(updates) + 1))
    # staleness = version at application - version computed on; a group computes on the version it got
    # back after its previous update (no checkpoint barriers here), 0 at the start
    computed_on = {}
    for r in updates:
        expected = (r["version"] - 1) - computed_on.get(r["group"], 0)
        assert r["staleness"] == expected, r
        computed_on[r["group"]] = r["version"]
        assert 0 <= r["staleness"] <= max_staleness
    by_key = {(r["group"], r["step"]): r["staleness"] for r in updates}
    assert all(by_key[(r["group"], r["step"])] == r["staleness"] for r in pushes)
    return {"pushes": pushes, "updates": updates, "state": state}


def numpy_adam(start: list, gradients: list, lr: float, b1=0.9, b2=0.999, eps=1e-7) -> list:
    """Keras' Adam written out in float64 numpy (m, v with bias correction), applied in the given order."""
    w = [np.asarray(a, np.float64).copy() for a in start]
    m = [np.zeros_like(a) for a in w]
    v = [np.zeros_like(a) for a in w]
    for t, grads in enumerate(gradients, start=1):
        alpha = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        for i, g in enumerate(grads):
            g = np.asarray(g, np.float64)
            m[i] += (g - m[i]) * (1 - b1)
            v[i] += (g * g - v[i]) * (1 - b2)
            w[i] -= m[i] * alpha / (np.sqrt(v[i]) + eps)
    return w


def replay_against_checkpoint(run_dir: Path, pushes: Path, groups: int, steps: int, max_staleness: int,
                              group_size: int) -> None:
    """An outside check of the servers: the gradients the group roots pushed (their own files, written before
    the servers' answer was used), ordered by the version each push's answer carried, replayed through numpy
    Adam from the weights the groups started from, give the servers' final checkpoint weights."""
    from exascale_climate.models import build_model

    files = sorted(pushes.glob("push-g*-s*.npz"))
    assert len(files) == groups * steps  # one file per push, counted on disk
    records = []
    for f in files:
        with np.load(f) as z:
            n = sum(1 for k in z.files if k.startswith("arr_"))
            records.append((int(z["reply_version"]), int(z["computed_on"]), [z[f"arr_{i}"] for i in range(n)]))
    records.sort(key=lambda r: r[0])
    # every update is accounted for once, and the bound held: version at application - version computed on
    assert [r[0] for r in records] == list(range(1, groups * steps + 1))
    assert all(0 <= (applied - 1) - computed_on <= max_staleness for applied, computed_on, _ in records)
    with np.load(sorted(pushes.glob("join-g0-v*.npz"))[0]) as z:
        start = [z[f"arr_{i}"] for i in range(sum(1 for k in z.files if k.startswith("arr_")))]
    cfg = load_config(run_dir / "config.yaml", [])
    last = final_checkpoint(run_dir)
    state = json.loads((last / "state.json").read_text())
    model = build_model(cfg.model, tuple(state["input_shape"]), cfg.train.precision)
    trainable = [i for i, v in enumerate(model.variables) if v.trainable]
    # the linear scaling rule on the servers: the rate times the samples of one group's update
    lr = cfg.optimizer.learning_rate * (group_size if cfg.optimizer.scale_lr_by_world_size else 1)
    expected = numpy_adam(start, [r[2] for r in records], lr=lr)
    saved = load_arrays(last)["model"]
    assert len(trainable) == len(expected)
    for i, w in zip(trainable, expected):
        np.testing.assert_allclose(saved[i], w, rtol=1e-3, atol=2e-5)
    assert max(float(np.max(np.abs(saved[i] - s))) for i, s in zip(trainable, start)) > 1e-3  # it moved


@pytest.mark.multirank
@pytest.mark.timeout(1800)  # 5 ranks on 2 cores: minutes when the machine is shared
def test_two_groups_of_two_and_a_server_under_mpirun(blob_data, tmp_path):
    """mpirun -np 5: groups [0,1] and [2,3], server 4; rank 3 is a straggler, the bound (1) makes group 0 wait."""
    run_dir = tmp_path / "hybrid"
    sets = sets_for(blob_data, **{"distributed.mode": "hybrid", "distributed.groups": 2,
                                  "distributed.parameter_servers": 1, "distributed.max_staleness": 1,
                                  "distributed.straggler_rank": 3, "distributed.straggler_delay_s": 1.0,
                                  "distributed.debug_push_dir": tmp_path / "pushes"})
    out = finish(mpirun(5, run_dir, sets))
    records = check_records(run_dir, groups=2, steps=8, max_staleness=1)
    replay_against_checkpoint(run_dir, tmp_path / "pushes", groups=2, steps=8, max_staleness=1, group_size=2)
    assert records["state"]["updates_per_group"] == [8, 8] and records["state"]["step"] == 8
    train = [r for r in read_json_lines(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    for g in (0, 1):
        losses = [r["loss"] for r in train if r["group"] == g]
        assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses  # the loss falls in both groups
    assert status(run_dir).returncode == 0
    assert json.loads((run_dir / "hybrid_report.json").read_text())["lost_groups"] == []
    assert "Traceback" not in out


@pytest.mark.multirank
@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_one_group_and_one_server_gives_the_weights_of_sync(blob_data, tmp_path):
    """2 compute ranks in 1 group + 1 server == plain sync on 2 ranks, checkpoint files compared."""
    sets = sets_for(blob_data, **{"train.epochs": 1})
    finish(mpirun(2, tmp_path / "sync", sets))
    finish(mpirun(3, tmp_path / "hybrid", [*sets, "distributed.mode=hybrid", "distributed.groups=1",
                                           "distributed.parameter_servers=1", "distributed.max_staleness=0"]))
    a, b = final_checkpoint(tmp_path / "sync"), final_checkpoint(tmp_path / "hybrid")
    assert a.name == b.name == "ckpt-8"  # 16 files / 2 ranks / batch 1
    ours, theirs = load_arrays(a), load_arrays(b)
    assert len(ours["model"]) == len(theirs["model"])
    moved = 0
    for x, y in zip(ours["model"], theirs["model"]):
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-5)
        moved += x.dtype.kind == "f"
    for x, y in zip(ours["optimizer"], theirs["optimizer"]):  # Adam's slots too (one server holds them all)
        np.testing.assert_allclose(y, x, rtol=1e-3, atol=1e-6)
    assert moved
    losses = [r["loss"] for r in read_json_lines(tmp_path / "sync" / "metrics.jsonl") if r["kind"] == "train"]
    assert losses[-1] < losses[0]  # the weights compared really trained


def rank_pid(proc: subprocess.Popen, rank: int) -> int:
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if child.environ().get("OMPI_COMM_WORLD_RANK") == str(rank) and "python" in child.name():
                return child.pid
        except psutil.Error:
            continue
    raise AssertionError(f"no process of rank {rank}")


def wait_for_updates(proc: subprocess.Popen, run_dir: Path, count: int, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    path = run_dir / "servers.jsonl"
    while not path.exists() or sum(1 for r in read_json_lines(path) if r["kind"] == "update") < count:
        assert proc.poll() is None, proc.stdout.read()[-4000:]
        assert time.monotonic() < deadline, "no updates appeared"
        time.sleep(0.2)


@pytest.mark.multirank
@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_sigkill_of_a_rank_drops_its_group_and_the_other_finishes(blob_data, tmp_path):
    run_dir = tmp_path / "hybrid"
    sets = sets_for(blob_data, **{"distributed.mode": "hybrid", "distributed.groups": 2,
                                  "distributed.parameter_servers": 1, "distributed.max_staleness": 2,
                                  "distributed.stall_timeout_s": 20, "train.epochs": 3,
                                  "distributed.straggler_rank": 0, "distributed.straggler_delay_s": 0.5})
    proc = mpirun(5, run_dir, sets)
    wait_for_updates(proc, run_dir, 4)
    os.kill(rank_pid(proc, 3), signal.SIGKILL)  # a member (not the root) of group 1
    out, _ = proc.communicate(timeout=1500)
    report = json.loads((run_dir / "hybrid_report.json").read_text())
    assert report["status"] == "groups_lost" and [g["group"] for g in report["lost_groups"]] == [1]
    assert report["lost_groups"][0]["ranks"] == [2, 3]
    updates = [r for r in read_json_lines(run_dir / "servers.jsonl") if r["kind"] == "update"]
    assert max(r["step"] for r in updates if r["group"] == 0) == 12  # group 0 finished its 3 epochs
    assert max(r["step"] for r in updates if r["group"] == 1) < 12
    assert "group 1 (ranks [2, 3])" in out and "lost" in out
    done = status(run_dir)
    assert done.returncode == 4 and "lost group 1 (ranks [2, 3])" in done.stdout
    assert final_checkpoint(run_dir).name == "ckpt-12"


@pytest.mark.multirank
@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_resume_of_a_hybrid_run_after_sigkill(blob_data, tmp_path):
    """The whole job killed after its first checkpoint; --resume ends with the step counts of an uninterrupted
    run: ckpt-8, 8 updates from each group."""
    run_dir = tmp_path / "hybrid"
    sets = sets_for(blob_data, **{"distributed.mode": "hybrid", "distributed.groups": 2,
                                  "distributed.parameter_servers": 2, "distributed.max_staleness": 2,
                                  "train.checkpoint.every_steps": 2})
    kill_job_after_first_checkpoint(mpirun(6, run_dir, sets), run_dir)
    first = list_checkpoints(run_dir / "checkpoints")[0]
    saved = json.loads((first / "state.json").read_text())
    assert saved["step"] % 2 == 0 and saved["step"] < 8 and saved["version"] == sum(saved["updates_per_group"])
    out = finish(mpirun(6, run_dir, sets, "--resume"))
    assert f"resumed from the parameter servers' checkpoint: step {saved['step']}" in out, out[-3000:]
    updates = [r for r in read_json_lines(run_dir / "servers.jsonl") if r["kind"] == "update"]
    after = updates[-(16 - saved["version"]):]  # the resumed run's updates continue the checkpoint's version
    assert [r["version"] for r in after] == list(range(saved["version"] + 1, 17))
    assert sorted(r["step"] for r in after) == sorted(list(range(saved["step"] + 1, 9)) * 2)
    last = final_checkpoint(run_dir)
    state = json.loads((last / "state.json").read_text())
    assert last.name == "ckpt-8" and state["updates_per_group"] == [8, 8] and state["version"] == 16
    arrays = load_arrays(last)
    assert {"model", "optimizer", "optimizer_s1"} <= set(arrays)
    assert status(run_dir).returncode == 0


@pytest.mark.multirank
@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_a_dead_server_stops_the_job_with_an_intact_checkpoint(blob_data, tmp_path):
    """2 groups of 1 + 2 servers (ranks 2, 3); SIGKILL of server rank 3 after the first checkpoint."""
    run_dir = tmp_path / "hybrid"
    sets = sets_for(blob_data, **{"distributed.mode": "hybrid", "distributed.groups": 2,
                                  "distributed.parameter_servers": 2, "distributed.max_staleness": 2,
                                  "distributed.stall_timeout_s": 10, "train.epochs": 3,
                                  "train.checkpoint.every_steps": 4, "distributed.straggler_rank": 0,
                                  "distributed.straggler_delay_s": 0.3})
    proc = mpirun(4, run_dir, sets)
    deadline = time.monotonic() + 900
    while not list_checkpoints(run_dir / "checkpoints"):
        assert proc.poll() is None, proc.stdout.read()[-4000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.kill(rank_pid(proc, 3), signal.SIGKILL)
    out, _ = proc.communicate(timeout=900)
    assert "parameter server rank(s) [3] did not answer" in out, out[-4000:]
    report = json.loads((run_dir / "hybrid_report.json").read_text())
    assert report["status"] == "server_lost" and report["exit_code"] == 5
    done = status(run_dir)
    assert done.returncode == 5, done.stdout
    last = final_checkpoint(run_dir)  # intact: every array and the state readable, the step a checkpoint step
    state = json.loads((last / "state.json").read_text())
    assert state["step"] % 4 == 0 and state["step"] < 12
    arrays = load_arrays(last)
    assert {"model", "optimizer", "optimizer_s1"} <= set(arrays)
    assert all(np.all(np.isfinite(a)) for a in arrays["model"] if a.dtype.kind == "f")


def kill_job_after_first_checkpoint(proc: subprocess.Popen, run_dir: Path) -> None:
    deadline = time.monotonic() + 900
    while not list_checkpoints(run_dir / "checkpoints"):
        assert proc.poll() is None, proc.stdout.read()[-4000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for p in [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()


@pytest.mark.multirank
@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_resume_with_gradient_lag_continues_exactly(blob_data, tmp_path):
    """1 group of 2 ranks + 1 server with gradient lag 1 (a deterministic order): killed after a checkpoint and
    resumed, the last checkpoint holds the arrays of an uninterrupted run (weights, Adam slots, lag buffers)."""
    sets = sets_for(blob_data, **{"train.epochs": 1, "distributed.mode": "hybrid", "distributed.groups": 1,
                                  "distributed.parameter_servers": 1, "distributed.max_staleness": 0,
                                  "distributed.gradient_lag": 1, "train.checkpoint.every_steps": 2})
    finish(mpirun(3, tmp_path / "whole", sets))
    proc = mpirun(3, tmp_path / "cut", sets)
    kill_job_after_first_checkpoint(proc, tmp_path / "cut")
    first = list_checkpoints(tmp_path / "cut" / "checkpoints")[-1]
    assert int(first.name.split("-")[1]) < 8
    assert "lag" in load_arrays(first)  # the group's buffers are in the servers' checkpoint
    out = finish(mpirun(3, tmp_path / "cut", sets, "--resume"))
    assert "resumed from the parameter servers' checkpoint" in out, out[-3000:]
    a, b = final_checkpoint(tmp_path / "whole"), final_checkpoint(tmp_path / "cut")
    assert a.name == b.name == "ckpt-8"
    sa, sb = (json.loads((c / "state.json").read_text()) for c in (a, b))
    # with lag the first step has no previous gradient: 7 updates in 8 steps, in both runs
    assert sa["version"] == sb["version"] == 7 and sa["updates_per_group"] == sb["updates_per_group"] == [7]
    ours, theirs = load_arrays(a), load_arrays(b)
    assert set(ours) == set(theirs) and {"model", "optimizer", "lag"} <= set(ours)
    for group in ("model", "optimizer", "lag"):
        assert len(ours[group]) == len(theirs[group])
        for x, y in zip(ours[group], theirs[group]):
            np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6)
    assert any(np.any(x != 0) for x in ours["lag"][:-1])
    # one group, lag 1: the first gradient was computed on version 0 and applied at version 0; every later one
    # on the weights one update before the server's version
    updates = [r for r in read_json_lines(tmp_path / "whole" / "servers.jsonl") if r["kind"] == "update"]
    assert [r["staleness"] for r in updates] == [0] + [1] * 6


@pytest.mark.multirank
@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_preemption_checkpoints_requeues_and_resumes_with_best(blob_data, tmp_path):
    """SIGUSR1 to every rank (the scheduler's warning): the groups stop, the servers write a checkpoint holding
    every applied update, the report and `train --status` say 75 (requeue); --resume finishes the run, and
    group 0's best validation is in best/."""
    run_dir = tmp_path / "hybrid"
    sets = sets_for(blob_data, **{"distributed.mode": "hybrid", "distributed.groups": 2,
                                  "distributed.parameter_servers": 1, "distributed.max_staleness": 2,
                                  "distributed.stop_check_every_steps": 1, "train.epochs": 3,
                                  "distributed.straggler_rank": 0, "distributed.straggler_delay_s": 0.3})
    proc = mpirun(3, run_dir, sets)
    wait_for_updates(proc, run_dir, 5)
    for rank in range(3):
        os.kill(rank_pid(proc, rank), signal.SIGUSR1)
    out, _ = proc.communicate(timeout=900)
    report = json.loads((run_dir / "hybrid_report.json").read_text())
    assert report["status"] == "preempted" and report["exit_code"] == 75, out[-3000:]
    assert status(run_dir).returncode == 75
    ckpt = final_checkpoint(run_dir)
    state = json.loads((ckpt / "state.json").read_text())
    updates = [r for r in read_json_lines(run_dir / "servers.jsonl") if r["kind"] == "update"]
    assert 5 <= len(updates) == state["version"] == sum(state["updates_per_group"]) < 48
    assert state["step"] == max(r["step"] for r in updates) < 24
    out = finish(mpirun(3, run_dir, sets, "--resume"))
    assert final_checkpoint(run_dir).name == "ckpt-24" and status(run_dir).returncode == 0
    valid = [r for r in read_json_lines(run_dir / "metrics.jsonl") if r["kind"] == "valid"]
    best = json.loads((run_dir / "checkpoints" / "best" / "state.json").read_text())
    assert valid and best["best_metric"] == max(r["val_mean_iou"] for r in valid)
    assert best["mode"] == "hybrid" and (run_dir / "checkpoints" / "best" / "state.npz").exists()
    assert not list(run_dir.glob(".hybrid-best-*"))


@pytest.mark.multirank
@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_groups_on_two_simulated_hosts_read_their_node_local_staged_shards(blob_data, tmp_path):
    """`stage --train-ranks 4` with the training's placement (2 ranks per simulated node: groups [0,1] and [2,3]
    on nodes 0 and 1, the server rank 4 on node 2): the files on disk are each node's shards; then hybrid training
    reads only its node's copy, strictly (a file missing on a rank's node would stop the run)."""
    stage_dir = tmp_path / "stage" / "node{node}"
    argv = exaclimate("stage", "--src", str(blob_data), "--dst", str(stage_dir), "--ranks-per-node", "2",
                      "--train-ranks", "4")
    staged = subprocess.run(launch_command(6, argv, "mpirun", env_names=ENV_NAMES), env=rank_env(2), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1200)
    assert staged.returncode == 0, staged.stdout[-3000:]
    names = sorted(p.name for p in (blob_data / "train").glob("data-*.h5"))
    on_node = {n: sorted(p.name for p in (tmp_path / "stage" / f"node{n}" / "train").glob("data-*.h5"))
               for n in range(3)}
    # rank r of 4 compute ranks reads files r, r+4, ... (sorted); ranks 0,1 live on node 0, ranks 2,3 on node 1
    assert on_node[0] == [f for i, f in enumerate(names) if i % 4 in (0, 1)]
    assert on_node[1] == [f for i, f in enumerate(names) if i % 4 in (2, 3)]
    assert on_node[2] == []  # the server's node: no training shard
    for n in range(3):
        assert len(list((tmp_path / "stage" / f"node{n}" / "valid").glob("data-*.h5"))) == 4
        assert (tmp_path / "stage" / f"node{n}" / "stats.h5").is_file()
    run_dir = tmp_path / "hybrid"
    sets = sets_for(blob_data, **{"distributed.mode": "hybrid", "distributed.groups": 2,
                                  "distributed.parameter_servers": 1, "distributed.max_staleness": 1,
                                  "distributed.ranks_per_node": 2, "pipeline.stage_dir": stage_dir,
                                  "pipeline.strict": "true", "train.epochs": 1})
    finish(mpirun(5, run_dir, sets))  # strict: a rank looking in another node's copy would stop on a missing file
    check_records(run_dir, groups=2, steps=4, max_staleness=1)
    assert not [r for r in read_json_lines(run_dir / "metrics.jsonl") if r["kind"] == "epoch_reads"]
