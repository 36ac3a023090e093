"""Real multi-rank behaviour: node membership, allreduce strategies, data-parallel equivalence, skipping, lag,
a dying rank; checked against values computed from what each rank wrote to disk."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from conftest import blob_overrides
from exascale_climate.config import Config
from exascale_climate.train.distributed import horovod_environment
from exascale_climate.utils.launch import exaclimate, launch_command, rank_env, run_ranks

HERE = Path(__file__).parent


def test_horovod_environment_passes_knobs_through():
    cfg = Config().distributed
    cfg.fusion_threshold_mb, cfg.cycle_time_ms, cfg.horovod_hierarchical = 32, 2.5, True
    cfg.allreduce, cfg.stall_timeout_s = "hierarchical", 30
    env = horovod_environment(cfg)
    assert env["HOROVOD_FUSION_THRESHOLD"] == str(32 * 1024 * 1024)
    assert env["HOROVOD_CYCLE_TIME"] == "2.5"
    assert env["HOROVOD_HIERARCHICAL_ALLREDUCE"] == "1"
    assert env["HOROVOD_DYNAMIC_PROCESS_SETS"] == "1"
    assert env["HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"] == "30"
    assert "HOROVOD_FUSION_THRESHOLD" not in horovod_environment(Config().distributed)


def test_cycle_time_defaults_to_ten_ms_on_cpu_nodes_only():
    env = horovod_environment(Config().distributed)
    has_gpu = any(Path("/dev").glob("nvidia[0-9]*"))
    assert env.get("HOROVOD_CYCLE_TIME") == (None if has_gpu else "10.0")


TWO_HOSTS = "localhost:2,127.0.0.1:2"


def check_rank_outputs(out: Path, groups: list[list[int]]) -> list[dict]:
    """Every property of the distributed layer against values computed here from what each rank wrote."""
    size = sum(len(g) for g in groups)
    rows = [json.loads((out / f"rank-{r}.json").read_text()) for r in range(size)]
    arrays = [dict(np.load(out / f"rank-{r}.npz")) for r in range(size)]
    # the ranks agree on the node grouping, and it is the expected one
    for row in rows:
        assert row["node_groups"] == groups and row["topology"] == groups, row
        assert row["nodes"] == len(groups) and row["rank"] in groups[row["node"]]
    # flat and hierarchical allreduce == the numpy mean of what the ranks contributed (float64 oracle)
    for i in range(3):
        oracle = np.mean([a[f"contrib_{i}"].astype(np.float64) for a in arrays], axis=0)
        for a in arrays:
            assert np.max(np.abs(a[f"flat_{i}"] - oracle)) < 1e-6
            assert np.max(np.abs(a[f"hier_{i}"] - oracle)) < 1e-6
            assert np.max(np.abs(a[f"hier_{i}"] - a[f"flat_{i}"])) < 1e-6
            np.testing.assert_array_equal(a[f"hier_{i}"], arrays[0][f"hier_{i}"])
    # fp16 compression: close to the mean, but really compressed
    fp16_error = max(np.max(np.abs(a[f"fp16_{i}"] - np.mean([b[f"contrib_{i}"] for b in arrays], axis=0)))
                     for a in arrays for i in range(3))
    assert 0 < fp16_error < 5e-3
    # the validation confusion-matrix sum == a bincount over every rank's labels and predictions
    cm = sum(np.bincount((3 * a["labels"] + a["predictions"]).ravel(), minlength=9).reshape(3, 3) for a in arrays)
    for a in arrays:
        np.testing.assert_array_equal(a["cm_sum"], cm)
    # N ranks x batch b (hierarchical and flat) == 1 rank x batch N*b, and bitwise-equal weights on all ranks
    for name in ("hier", "flat"):
        for a in arrays:
            assert np.max(np.abs(a[f"{name}_trained"] - a[f"{name}_single"])) < 1e-5
            np.testing.assert_array_equal(a[f"{name}_trained"], arrays[0][f"{name}_trained"])
    # mixed_bfloat16 on N ranks (hierarchical, and flat with fp16 compression) == 1 float32 rank on the global
    # batch up to bfloat16 round-off (2^-9 per rounding: a few percent of the 2 steps' update at most), no loss
    # scaling, the same weights on every rank
    for name in ("bf16", "bf16_fp16c"):
        for row, a in zip(rows, arrays):
            assert row[f"{name}_loss_scale"] == 1.0 and row[f"{name}_applied"], row
            update = np.linalg.norm(a[f"{name}_single"] - a[f"{name}_before"])
            assert 0 < np.linalg.norm(a[f"{name}_trained"] - a[f"{name}_single"]) < 0.05 * update
            np.testing.assert_array_equal(a[f"{name}_trained"], arrays[0][f"{name}_trained"])
    # float16 overflow on the last rank only: every rank skipped the update and halved the scale
    for row, a in zip(rows, arrays):
        assert not row["fp16_applied"] and row["fp16_scale_after"] == 2.0**14, row
        np.testing.assert_array_equal(a["fp16_after"], a["fp16_before"])
        assert not np.array_equal(a["fp16_after_good_step"], a["fp16_before"])  # the next good step updates
    # gradient lag 1: nothing applied at the first step, then step t-1's gradients
    for a in arrays:
        history = a["lag_history"]
        np.testing.assert_array_equal(history[0], history[1])
        assert np.max(np.abs(history[2] - a["lag_expected_w2"])) < 1e-6
        assert np.max(np.abs(history[4] - a["lag_expected_w4"])) < 1e-6
    return rows


@pytest.mark.multirank
def test_four_ranks_on_two_hosts(tmp_path):
    """4 ranks that Horovod itself sees as 2 hosts x 2 (horovodrun -H with two names for this machine)."""
    result = subprocess.run(launch_command(4, [sys.executable, str(HERE / "rank_checks.py"), str(tmp_path)],
                                           "gloo", hosts=TWO_HOSTS), env=rank_env(4), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:]
    rows = check_rank_outputs(tmp_path, [[0, 1], [2, 3]])
    for row in rows:  # Horovod's own numbers: really 2 hosts of 2 ranks
        assert (row["hvd_local_size"], row["hvd_cross_size"]) == (2, 2), row
        assert (row["hvd_local_rank"], row["hvd_cross_rank"]) == (row["rank"] % 2, row["rank"] // 2)
        assert row["hosts"] == ["localhost", "127.0.0.1"] and row["controller"] == "gloo"


def launch_round_robin(argv: list[str], np_: int = 4, hosts=("localhost", "127.0.0.1"), timeout: float = 900):
    """Gloo ranks placed round-robin over `hosts` (rank r on host r % n): Horovod's own rendezvous server and
    slot variables, only the placement differs from horovodrun's block placement."""
    from horovod.runner.common.util.hosts import SlotInfo
    from horovod.runner.gloo_run import create_run_env_vars, create_slot_env_vars
    from horovod.runner.http.http_server import RendezvousServer

    n = len(hosts)
    plan = [SlotInfo(hostname=hosts[r % n], rank=r, local_rank=r // n, cross_rank=r % n, size=np_,
                     local_size=np_ // n, cross_size=n) for r in range(np_)]
    server = RendezvousServer()
    port = server.start()
    server.init(plan)
    try:
        common = {k: str(v) for k, v in create_run_env_vars("127.0.0.1", ["lo"], port).items()}
        procs = [subprocess.Popen(argv, env={**rank_env(np_), **common, **create_slot_env_vars(slot)},
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for slot in plan]
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        server.stop()
    return [p.returncode for p in procs], "\n".join(outputs)


@pytest.mark.multirank
@pytest.mark.slow
def test_round_robin_placement_groups_nodes_by_host(tmp_path):
    """Ranks 0,2 on one host and 1,3 on the other: the World groups by host, not by rank // 2."""
    codes, output = launch_round_robin([sys.executable, str(HERE / "rank_checks.py"), str(tmp_path)])
    assert codes == [0] * 4, output[-4000:]
    rows = check_rank_outputs(tmp_path, [[0, 2], [1, 3]])
    for row in rows:
        assert (row["hvd_local_rank"], row["hvd_cross_rank"]) == (row["rank"] // 2, row["rank"] % 2), row


@pytest.mark.multirank
@pytest.mark.slow
def test_mpirun_simulated_nodes_are_a_checked_override(tmp_path):
    """Under mpirun every rank shares this one host (Horovod: 1 node of 4): 2 nodes only by the explicit
    ranks_per_node override, which says that it differs from what Horovod reports."""
    result = run_ranks(4, [sys.executable, str(HERE / "rank_checks.py"), str(tmp_path), "2"], "mpirun",
                       timeout=900)
    assert result.returncode == 0, result.stdout[-4000:]
    rows = check_rank_outputs(tmp_path, [[0, 1], [2, 3]])
    for row in rows:
        assert (row["hvd_local_size"], row["hvd_cross_size"], row["controller"]) == (4, 1, "mpi"), row
    assert "ranks_per_node=2 overrides what Horovod reports (1 node(s), 4 ranks per node)" in result.stdout


def _rank_processes(root: psutil.Process) -> dict[int, psutil.Process]:
    found = {}
    for child in root.children(recursive=True):
        try:
            env = child.environ()
        except (psutil.Error, OSError):
            continue
        rank = env.get("HOROVOD_RANK", env.get("OMPI_COMM_WORLD_RANK"))
        cmdline = " ".join(child.cmdline())
        if rank is not None and "python" in cmdline and "train.heartbeat" not in cmdline:  # not the rank's sidecar
            found[int(rank)] = child
    return found


WATCHDOG_LAYOUTS = [pytest.param(2, "gloo", None, "auto", id="2-gloo"),
                    pytest.param(4, "gloo", "localhost:2,127.0.0.1:2", "heartbeat", id="4-gloo-2hosts",
                                 marks=pytest.mark.slow),
                    pytest.param(4, "mpirun", None, "auto", id="4-mpirun", marks=pytest.mark.slow)]


@pytest.mark.multirank
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["dead", "hung"])
@pytest.mark.parametrize("np_,controller,hosts,liveness", WATCHDOG_LAYOUTS)
def test_failed_rank_fails_the_job_in_bounded_time(blob_data, tmp_path, sig, np_, controller, hosts, liveness):
    """A rank killed (SIGKILL) or frozen (SIGSTOP) mid-training: the job ends non-zero instead of hanging; the
    surviving rank names the dead rank (SIGKILL) or the stall (SIGSTOP) and the last good checkpoint. On 2
    simulated hosts the ranks check each other by heartbeat files (the cross-node path): a frozen rank's sidecar
    keeps beating, so it is the no-progress watchdog that ends the job, as with pids."""
    run_dir = tmp_path / "run"
    argv = exaclimate("train", "--run-dir", str(run_dir),
                      *sum((["--set", s] for s in blob_overrides(
                          blob_data, **{"train.epochs": 500, "train.log_every_steps": 1,
                                        # 4 ranks on 2 shared cores: the first step (10x the timeout) took
                                        # over 80 s at load average 34
                                        "distributed.stall_timeout_s": 8 if np_ == 2 else 30,
                                        "distributed.liveness": liveness,
                                        "distributed.heartbeat_stale_s": 2,
                                        "train.checkpoint.every_steps": 2})), []))
    env = rank_env(min(np_, 2), 1)
    names = ["TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "PYTHONUNBUFFERED",
             "PYTHONPATH", "PATH", "TF_CPP_MIN_LOG_LEVEL"]
    proc = subprocess.Popen(launch_command(np_, argv, controller, hosts=hosts, env_names=names), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        metrics = run_dir / "metrics.jsonl"
        deadline = time.monotonic() + 900
        while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.5)
        ranks = _rank_processes(psutil.Process(proc.pid))
        assert set(ranks) == set(range(np_))
        ranks[1].send_signal(sig)
        # Bounded: the stall timeout (8 s) plus Horovod's shutdown; a hang would hit this timeout instead.
        returncode = proc.wait(timeout=120 if np_ == 2 else 300)
        output = proc.stdout.read()
        time.sleep(1)
        survivor_alive = ranks[0].is_running() and ranks[0].status() != psutil.STATUS_ZOMBIE
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for p in ranks.values() if "ranks" in locals() else []:
            if p.is_running():
                p.send_signal(signal.SIGKILL)
    assert returncode != 0, output[-3000:]
    if sig == signal.SIGSTOP:  # the surviving rank names the problem and the checkpoint to resume from
        assert "no progress" in output or "stall" in output.lower() or "collective failed" in output, output[-3000:]
    else:  # the surviving rank itself names the rank that died, with the pid the test killed (exit status 4)
        host = socket.gethostname() if controller == "mpirun" else "localhost"
        seen = " (seen by its heartbeat file)" if liveness == "heartbeat" else ""
        assert f"rank 1 (pid {ranks[1].pid} on host {host}) is gone (killed or crashed){seen}; this is rank 0" \
            in output, output[-3000:]
        if controller == "gloo":
            assert "Process name: 1" in output and re.search(r"Process [02-9] exit with status code 4\.", output), \
                output[-3000:]
    named = output.split("last good checkpoint: ", 1)[1].split(" ", 1)[0]
    from exascale_climate.train.checkpoints import list_checkpoints, load_arrays

    assert Path(named) in list_checkpoints(run_dir / "checkpoints"), output[-3000:]
    assert load_arrays(Path(named))["model"]  # intact: every array reads back
    assert not survivor_alive
