"""A dead rank: `kill -9` of one rank mid-training. The SURVIVING ranks themselves (not the launcher) exit with
status 4 and a line naming the lost rank, its pid and host, and the last good checkpoint; that checkpoint reads
back; `--resume` then ends with the same checkpoint arrays as a run left alone.

Observed from outside: each rank's own output file (the launcher's --output-filename), the pid the test killed,
the checkpoint files on disk."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from exascale_climate.train.checkpoints import list_checkpoints, load_arrays
from exascale_climate.utils.launch import launch_command, rank_env
from test_preempt import rank_pid, wait_for_checkpoint
from test_resume_ranks import assert_same_arrays, final_checkpoint, finish, launch, overrides, train_argv

TWO_HOSTS = "localhost:2,127.0.0.1:2"
EXIT_RANK_LOST = 4  # documented in docs/RELIABILITY.md (written here, not imported)
LINE = re.compile(r"rank (\d+) \(pid (\d+) on host (\S+)\) is gone \(killed or crashed\); this is rank (\d+) "
                  r"\(pid \d+ on host (\S+)\); exiting with code (\d+); last good checkpoint: (\S+)")


def launch_with_rank_files(np_: int, controller: str, hosts: str | None, argv: list[str], out: Path):
    """Like test_resume_ranks.launch, with every rank's stdout/stderr in its own file under `out`."""
    names = ["TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "PYTHONUNBUFFERED",
             "PYTHONPATH", "PATH", "TF_CPP_MIN_LOG_LEVEL"]
    cmd = launch_command(np_, argv, controller, hosts=hosts, env_names=names)
    cmd[1:1] = ["--output-filename", str(out)]
    return subprocess.Popen(cmd, env=rank_env(min(np_, 2)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def rank_output(out: Path, rank: int) -> str:
    """What rank `rank` wrote (horovodrun: OUT/rank.R/, mpirun: OUT/1/rank.R/)."""
    files = sorted(out.glob(f"**/rank.{rank}/std*"))
    assert files, f"no output files of rank {rank} under {out}: {sorted(out.rglob('*'))}"
    return "".join(f.read_text(errors="replace") for f in files)


CASES = [pytest.param(4, "gloo", TWO_HOSTS, id="4-gloo-2hosts", marks=pytest.mark.slow),
         pytest.param(4, "mpirun", None, id="4-mpirun", marks=pytest.mark.slow)]


@pytest.mark.multirank
@pytest.mark.timeout(2400)  # three 4-rank runs on 2 shared cores
@pytest.mark.parametrize("np_,controller,hosts", CASES)
def test_survivors_name_the_dead_rank_and_resume_is_exact(blob_data, tmp_path, np_, controller, hosts):
    sets = overrides(blob_data, **{"train.epochs": 4, "train.checkpoint.every_steps": 2,
                                   "distributed.stall_timeout_s": 60})  # 16 steps on 4 ranks
    reference = tmp_path / "uninterrupted"
    finish(launch(np_, controller, hosts, train_argv(reference, sets)))
    steps = json.loads((final_checkpoint(reference) / "state.json").read_text())["step"]

    run_dir, out = tmp_path / "killed", tmp_path / "ranks"
    proc = launch_with_rank_files(np_, controller, hosts, train_argv(run_dir, sets), out)
    try:
        wait_for_checkpoint(proc, run_dir)
        victim = rank_pid(proc.pid, 1)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        launcher_out, _ = proc.communicate(timeout=300)
        print(f"{controller}: the launcher ended {time.monotonic() - killed_at:.1f} s after the kill")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode != 0

    def host_of(rank: int) -> str:  # horovodrun -H names each slot's host; mpirun's ranks name the machine
        if controller == "mpirun":
            return socket.gethostname()
        return "localhost" if hosts is None or rank < 2 else "127.0.0.1"

    # each survivor's own output: the lost rank named with its pid and host, this rank, the checkpoint
    found = {}
    for rank in range(np_):
        if rank == 1:
            continue
        text = rank_output(out, rank)
        match = LINE.search(text)
        assert match, f"rank {rank} did not name the dead rank:\n{text[-3000:]}\n{launcher_out[-2000:]}"
        lost, pid, host, me, me_host, code, named = match.groups()
        assert (int(lost), int(pid), int(me), int(code)) == (1, victim, rank, EXIT_RANK_LOST), match.group(0)
        assert (host, me_host) == (host_of(1), host_of(rank)), match.group(0)
        assert "Traceback" not in text
        found[rank] = Path(named)
    if controller == "gloo":  # horovodrun reports every rank's status: the survivors' own 4
        for rank in found:
            assert f"Process {rank} exit with status code {EXIT_RANK_LOST}." in launcher_out, launcher_out[-3000:]

    # the checkpoint they name is the newest complete one, and it reads back
    named = found[0]
    assert named in list_checkpoints(run_dir / "checkpoints")
    assert named == final_checkpoint(run_dir)
    assert 0 < int(named.name.split("-")[1]) < steps
    assert load_arrays(named)["model"]
    assert not [p for p in (run_dir / "checkpoints").iterdir() if ".tmp" in p.name or p.name.startswith(".")]

    resumed = finish(launch(np_, controller, hosts, train_argv(run_dir, sets, "--resume")))
    assert f"resumed from {named}" in resumed
    a, b = final_checkpoint(reference), final_checkpoint(run_dir)
    assert a.name == b.name == f"ckpt-{steps}"
    assert_same_arrays(a, b)
    state_a, state_b = (json.loads((p / "state.json").read_text()) for p in (a, b))
    for key in ("loss_scale", "loss_scale_good_steps", "skipped_steps", "optimizer_iterations", "epoch"):
        assert state_a[key] == state_b[key], key
