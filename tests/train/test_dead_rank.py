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
import tempfile
import time
from pathlib import Path

import pytest

from exascale_climate.train.checkpoints import list_checkpoints, load_arrays
from exascale_climate.utils.launch import launch_command, rank_env
from test_preempt import rank_pid, wait_for_checkpoint
from test_resume_ranks import assert_same_arrays, final_checkpoint, finish, launch, overrides, train_argv

TWO_HOSTS = "localhost:2,127.0.0.1:2"
EXIT_RANK_LOST = 4  # documented in docs/RELIABILITY.md (written here, not imported)
LINE = re.compile(r"rank (\d+) \(pid (\d+) on host (\S+)\) is gone \(killed or crashed\)(?: \(seen by its heartbeat file\))?; this is rank (\d+) "
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


LOST = re.compile(r"rank (\d+) \(pid (\d+) on host (\S+)\) is lost: its heartbeat (\S+) has not changed for \d+ s "
                  r"\(its node dropped out or the process froze\); this is rank (\d+) \(pid \d+ on host (\S+)\); "
                  r"exiting with code (\d+); last good checkpoint: (\S+)")

# (ranks, launcher, hosts, distributed.liveness, victim, how): "rank" = kill -9 of the rank alone; "node" = kill -9
# of the rank and its heartbeat sidecar (a node that drops out: nothing is written any more). The heartbeat cases
# switch the same-machine pid shortcut off, so the simulated hosts (one boot id) go through the cross-node path.
CASES = [pytest.param(4, "gloo", TWO_HOSTS, "auto", 1, "rank", id="4-gloo-2hosts", marks=pytest.mark.slow),
         pytest.param(4, "mpirun", None, "auto", 1, "rank", id="4-mpirun", marks=pytest.mark.slow),
         pytest.param(4, "gloo", TWO_HOSTS, "heartbeat", 2, "rank", id="4-gloo-2hosts-heartbeat"),
         pytest.param(4, "mpirun", None, "heartbeat", 2, "rank", id="4-mpirun-heartbeat", marks=pytest.mark.slow),
         pytest.param(4, "gloo", TWO_HOSTS, "heartbeat", 2, "node", id="4-gloo-2hosts-node-lost",
                      marks=pytest.mark.slow)]


def sidecar_of(rank_pid_: int) -> int:
    """The rank's heartbeat sidecar (its child running train.heartbeat)."""
    import psutil

    kids = [c for c in psutil.Process(rank_pid_).children() if any("train.heartbeat" in a for a in c.cmdline())]
    assert len(kids) == 1, kids
    return kids[0].pid


def watch_survivors(proc, out: Path, survivors: list[int], pattern) -> dict[int, float]:
    """Seconds (test's clock) at which each survivor's line appeared in its own output file, polled every 50 ms
    until all did or the launcher ended."""
    seen, t0 = {}, time.monotonic()
    while len(seen) < len(survivors) and proc.poll() is None and time.monotonic() - t0 < 300:
        for rank in survivors:
            if rank not in seen:
                files = list(out.glob(f"**/rank.{rank}/std*"))
                if any(pattern.search(f.read_text(errors="replace")) for f in files):
                    seen[rank] = time.monotonic() - t0
        time.sleep(0.05)
    return seen


@pytest.mark.multirank
@pytest.mark.timeout(2400)  # three 4-rank runs on 2 shared cores
@pytest.mark.parametrize("np_,controller,hosts,liveness,victim_rank,how", CASES)
def test_survivors_name_the_dead_rank_and_resume_is_exact(blob_data, tmp_path, np_, controller, hosts, liveness,
                                                          victim_rank, how):
    sets = overrides(blob_data, **{"train.epochs": 4, "train.checkpoint.every_steps": 2,
                                   "distributed.stall_timeout_s": 60, "distributed.liveness": liveness,
                                   "distributed.heartbeat_stale_s": 2})  # 16 steps on 4 ranks
    resume = liveness == "auto"  # the exact resume after a kill is one property; the heartbeat cases skip it
    if resume:
        reference = tmp_path / "uninterrupted"
        finish(launch(np_, controller, hosts, train_argv(reference, sets)))
        steps = json.loads((final_checkpoint(reference) / "state.json").read_text())["step"]
    else:
        steps = 16

    run_dir, out = tmp_path / "killed", tmp_path / "ranks"
    notes_before = set(Path(tempfile.gettempdir()).glob("exaclimate-ranks-*"))  # the ranks' "I left" notes
    proc = launch_with_rank_files(np_, controller, hosts, train_argv(run_dir, sets), out)
    survivors = [r for r in range(np_) if r != victim_rank]
    pattern = LOST if how == "node" else LINE
    try:
        wait_for_checkpoint(proc, run_dir)
        victim = rank_pid(proc.pid, victim_rank)
        doomed = [sidecar_of(victim), victim] if how == "node" else [victim]
        if liveness == "heartbeat":
            assert (run_dir / "heartbeats" / f"rank-{victim_rank}").read_text().split()[1:3] == ["alive", str(victim)]
        else:  # auto on one machine: no heartbeat files
            assert not (run_dir / "heartbeats").exists()
        killed_at = time.monotonic()
        for pid in doomed:
            os.kill(pid, signal.SIGKILL)
        named_at = watch_survivors(proc, out, survivors, pattern)
        launcher_out, _ = proc.communicate(timeout=300)
        ended = time.monotonic() - killed_at
        print(f"{controller} {liveness} {how}: survivors named the rank "
              f"{sorted(round(t, 2) for t in named_at.values())} s after the kill; launcher ended {ended:.1f} s")
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
    for rank in survivors:
        text = rank_output(out, rank)
        match = pattern.search(text)
        if not match and controller == "gloo" and "Terminated" in text and "Traceback" not in text:
            continue  # horovodrun's teardown (SIGTERM as soon as another survivor left naming it) came first
        assert match, f"rank {rank} did not name the dead rank:\n{text[-3000:]}\n{launcher_out[-2000:]}"
        if how == "node":
            lost, pid, host, beat_file, me, me_host, code, named = match.groups()
            assert Path(beat_file) == run_dir / "heartbeats" / f"rank-{victim_rank}", match.group(0)
        else:
            lost, pid, host, me, me_host, code, named = match.groups()
        assert (int(lost), int(pid), int(me), int(code)) == (victim_rank, victim, rank, EXIT_RANK_LOST), \
            match.group(0)
        assert (host, me_host) == (host_of(victim_rank), host_of(rank)), match.group(0)
        assert "Traceback" not in text
        if liveness == "heartbeat" and how == "rank":
            assert "(seen by its heartbeat file)" in text
        found[rank] = Path(named)
    if controller == "gloo":  # horovodrun reports the statuses it collected before it ended: the survivors' own 4
        listed = {int(r): int(c) for r, c in re.findall(r"Process (\d+) exit with status code (\d+)\.", launcher_out)}
        assert listed.get(victim_rank) == 137 and any(r in listed for r in found), launcher_out[-3000:]
        assert all(listed[r] == EXIT_RANK_LOST for r in found if r in listed), listed
    if liveness == "heartbeat":  # the victim's file on disk: "gone" when the rank alone died, "alive" (frozen in
        fields = (run_dir / "heartbeats" / f"rank-{victim_rank}").read_text().split()  # time) when its node did
        assert fields[1:3] == (["gone", str(victim)] if how == "rank" else ["alive", str(victim)])

    # the checkpoint they name is the newest complete one, and it reads back
    assert found, "no survivor named the dead rank"
    named = found[min(found)]
    assert named in list_checkpoints(run_dir / "checkpoints")
    assert named == final_checkpoint(run_dir)
    assert 0 < int(named.name.split("-")[1]) < steps
    assert load_arrays(named)["model"]
    assert not [p for p in (run_dir / "checkpoints").iterdir() if ".tmp" in p.name or p.name.startswith(".")]
    if not resume:
        return

    killed_notes = set(Path(tempfile.gettempdir()).glob("exaclimate-ranks-*")) - notes_before
    assert killed_notes  # the survivors' notes: their job could not finish to remove them
    resumed = finish(launch(np_, controller, hosts, train_argv(run_dir, sets, "--resume")))
    assert f"resumed from {named}" in resumed
    assert not [d for d in killed_notes if d.exists()]  # the next job on the machine swept them
    a, b = final_checkpoint(reference), final_checkpoint(run_dir)
    assert a.name == b.name == f"ckpt-{steps}"
    assert_same_arrays(a, b)
    state_a, state_b = (json.loads((p / "state.json").read_text()) for p in (a, b))
    for key in ("loss_scale", "loss_scale_good_steps", "skipped_steps", "optimizer_iterations", "epoch"):
        assert state_a[key] == state_b[key], key
