"""Preemption: SIGUSR1/SIGTERM to a training job -> every rank finishes the step, they agree to stop, rank 0 writes a
checkpoint, the job exits with EXIT_PREEMPTED (75) and `--resume` ends with the SAME checkpoint files as a run
left alone. Real ranks, real signals sent from outside to ONE rank only (the others must learn it through the
agreement allreduce, or they would block)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from exascale_climate.train.checkpoints import list_checkpoints
from exascale_climate.utils.launch import rank_env
from test_resume_ranks import assert_same_arrays, final_checkpoint, finish, launch, overrides, train_argv

EXIT_PREEMPTED = 75  # documented in docs/RELIABILITY.md and the job templates (written here, not imported)


def wait_for_checkpoint(proc: subprocess.Popen, run_dir: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not list_checkpoints(run_dir / "checkpoints"):
        assert proc.poll() is None, "the run ended before the signal: " + proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)


def rank_pid(launcher: int, rank: int) -> int:
    """The pid of rank `rank` below the launcher (its environment says which rank it is)."""
    for p in psutil.Process(launcher).children(recursive=True):
        try:
            env = p.environ()
            heartbeat = any("train.heartbeat" in a for a in p.cmdline())  # the rank's sidecar has its environment
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
        if env.get("HOROVOD_RANK", env.get("OMPI_COMM_WORLD_RANK")) == str(rank) and "python" in p.name() \
                and not heartbeat:
            return p.pid
    raise AssertionError(f"rank {rank} not found under pid {launcher}")


def step_of(ckpt: Path) -> int:
    return int(ckpt.name.split("-")[1])


def assert_same_files(a: Path, b: Path, steps_per_epoch: int) -> None:
    """Same arrays bit for bit, same position and scaler state. The position is compared as steps since the start:
    a run that saved step 8 inside the epoch says (epoch 0, step 8), one that saved it after the epoch's end
    (epoch 1, step 0) -- the same place; which of the two depends on when the last checkpoint before it was."""
    assert_same_arrays(a, b)
    state_a, state_b = (json.loads((p / "state.json").read_text()) for p in (a, b))
    for key in ("step", "loss_scale", "loss_scale_good_steps", "skipped_steps", "optimizer_iterations"):
        assert state_a[key] == state_b[key], key
    for state in (state_a, state_b):
        assert state["epoch"] * steps_per_epoch + state["step_in_epoch"] == state["step"]


def test_sigterm_alone_exits_75_with_checkpoint_and_resume_command(blob_data, tmp_path):
    """One process, SIGTERM (what srun/LSF send at the limit): exit status exactly 75, a checkpoint, the resume
    command printed, no temporaries; --resume runs to the end."""
    sets = overrides(blob_data, **{"train.checkpoint.every_steps": 2, "distributed.stop_check_every_steps": 1})
    run_dir = tmp_path / "run"
    argv = train_argv(run_dir, sets)
    proc = subprocess.Popen(argv, env=rank_env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_checkpoint(proc, run_dir)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == EXIT_PREEMPTED, out[-3000:]
    assert "Traceback" not in out
    last = final_checkpoint(run_dir)
    assert 2 <= step_of(last) < 16, out[-2000:]
    assert f"stopped by SIGTERM after step {step_of(last)} of 16" in out
    assert "--resume" in out.split("continue with:", 1)[1].splitlines()[0]
    assert not [p for p in (run_dir / "checkpoints").iterdir() if ".tmp" in p.name or p.name.startswith(".")]
    done = subprocess.run(argv + ["--resume"], env=rank_env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"resumed from {last}" in done.stdout
    assert final_checkpoint(run_dir).name == "ckpt-16"


CASES = [pytest.param(2, "gloo", None, id="2-gloo"),
         pytest.param(2, "mpirun", None, id="2-mpirun", marks=pytest.mark.slow),
         pytest.param(4, "gloo", "localhost:2,127.0.0.1:2", id="4-gloo-2hosts", marks=pytest.mark.slow),
         pytest.param(4, "mpirun", None, id="4-mpirun", marks=pytest.mark.slow)]


@pytest.mark.multirank
@pytest.mark.timeout(2400)  # three multi-rank runs on 2 shared cores
@pytest.mark.parametrize("np_,controller,hosts", CASES)
def test_sigusr1_to_one_rank_stops_all_and_resume_is_exact(blob_data, tmp_path, np_, controller, hosts):
    sets = overrides(blob_data, **{"train.epochs": np_, "train.checkpoint.every_steps": 2,
                                   "distributed.stop_check_every_steps": 5})  # 16 steps on 2 and on 4 ranks
    reference = tmp_path / "uninterrupted"
    finish(launch(np_, controller, hosts, train_argv(reference, sets)))
    assert final_checkpoint(reference).name == "ckpt-16"

    stopped = tmp_path / "stopped"
    proc = launch(np_, controller, hosts, train_argv(stopped, sets))
    wait_for_checkpoint(proc, stopped)
    os.kill(rank_pid(proc.pid, 1), signal.SIGUSR1)  # rank 1 only: rank 0 must learn it from the allreduce
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0, out[-3000:]  # the launcher reports the ranks' status 75 as a failure
    last = final_checkpoint(stopped)
    assert step_of(last) in (5, 10, 15), out[-3000:]  # agreed at a check step, not where the signal fell
    assert f"stopped by SIGUSR1 after step {step_of(last)} of 16" in out, out[-3000:]
    assert not [line for line in out.splitlines() if line.startswith("[") and "Traceback" in line]  # the ranks'
    if controller == "gloo":  # horovodrun itself raises (its own traceback) naming the first failed rank's status
        assert "Exit code: 75" in out, out[-3000:]

    out = finish(launch(np_, controller, hosts, train_argv(stopped, sets, "--resume")))
    assert f"resumed from {last}" in out
    assert_same_files(final_checkpoint(reference), final_checkpoint(stopped), steps_per_epoch=16 // np_)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-x", "-q"]))
