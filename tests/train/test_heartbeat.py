"""train/heartbeat.py + the heartbeat side of train/peers.py on real processes: a "rank" (a child Python process)
starts its real sidecar; the test kills, freezes or ends it and reads the heartbeat file on disk (the record is
parsed here by hand, not with the module's reader) and what a PeerWatch on "another machine" says. The multi-rank
behaviour (4 Gloo ranks on 2 simulated hosts, mpirun) is in test_dead_rank.py."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from exascale_climate.train.peers import Peer, PeerWatch, this_peer

RANK = """
import os, sys, time
from exascale_climate.train import heartbeat
side = heartbeat.start(sys.argv[1], 0.1)
child = os.fork() if sys.argv[2] == "fork" else None
if child == 0:  # a forked child keeps the sidecar's pipe open
    time.sleep(600)
    os._exit(0)
if sys.argv[2] == "done":
    heartbeat.note(side, "done")
    time.sleep(0.5)
    sys.exit(0)
print(side.pid, child or "", flush=True)
time.sleep(600)
"""


def on_disk(path: Path) -> tuple[int, str, int]:
    """(sequence, state, pid) from the file's first line, parsed here."""
    seq, state, pid, _ = path.read_text().split()
    return int(seq), state, int(pid)


def wait_until(what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def rank(tmp_path):
    """start(mode) -> (rank process, sidecar pid, heartbeat file); everything is killed afterwards."""
    started = []

    def start(mode="plain"):
        path = tmp_path / f"rank-{len(started) + 1}"
        proc = subprocess.Popen([sys.executable, "-c", RANK, str(path), mode], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        started.append(proc)
        pids = [int(x) for x in proc.stdout.readline().split()] if mode != "done" else [None]
        started.extend(psutil.Process(pid) for pid in pids[1:])  # the forked child
        sidecar = pids[0]
        wait_until(lambda: path.exists() and path.read_text().strip())
        return proc, sidecar, path

    yield start
    for proc in started:
        if isinstance(proc, psutil.Process):
            if proc.is_running():
                proc.kill()
            continue
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def peer(rank_: int, proc, machine="another-node") -> Peer:
    return Peer(rank_, "node7", machine, proc.pid, psutil.Process(proc.pid).create_time())


def watch_for(p: Peer, beats: Path, liveness="heartbeat", stale_s=60.0) -> PeerWatch:
    return PeerWatch([this_peer(0), p], 0, beats, liveness, stale_s)


def test_kill_9_of_a_rank_on_another_node_is_named_through_its_file(rank, tmp_path):
    proc, sidecar, path = rank()
    p = peer(1, proc)
    watch = watch_for(p, tmp_path)
    seq0 = on_disk(path)[0]
    wait_until(lambda: on_disk(path)[0] > seq0 + 2)  # it beats
    assert on_disk(path)[1:] == ("alive", proc.pid)
    assert watch.message(blocked_s=1e9) is None
    os.kill(proc.pid, signal.SIGKILL)
    wait_until(lambda: on_disk(path)[1] == "gone")
    assert on_disk(path)[2] == proc.pid
    assert watch.message() == (f"rank 1 (pid {proc.pid} on host node7) is gone (killed or crashed) (seen by its "
                               f"heartbeat file); this is rank 0 (pid {os.getpid()} on host {this_peer(0).host})")
    wait_until(lambda: not psutil.pid_exists(sidecar) or psutil.Process(sidecar).status() == psutil.STATUS_ZOMBIE)
    # the pid-only switch does not look at the files: the same death is not seen, and it says why
    blind = watch_for(p, tmp_path, liveness="pid")
    assert blind.message(blocked_s=1e9) is None and "distributed.liveness=pid" in blind.unknown()


def test_a_lost_node_is_named_only_when_stale_and_blocked_and_pids_are_not_used(rank, tmp_path):
    proc, sidecar, path = rank()
    same_machine = peer(1, proc, machine=this_peer(0).machine)
    patient = watch_for(same_machine, tmp_path, stale_s=600.0)  # heartbeat mode, on the same machine
    quick = watch_for(same_machine, tmp_path, stale_s=1.0)
    by_pid = watch_for(same_machine, tmp_path, liveness="auto")
    assert quick.message(blocked_s=1e9) is None
    os.kill(sidecar, signal.SIGKILL)  # the node drops out: its sidecar first, then the rank, nothing written
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert on_disk(path)[1] == "alive"
    assert by_pid.message() is not None  # auto on one machine: the pid says it at once
    assert patient.message(blocked_s=1e9) is None  # heartbeat mode: the pid is not looked at
    message = wait_until(lambda: quick.message(blocked_s=1e9))
    assert message.startswith(f"rank 1 (pid {proc.pid} on host node7) is lost: its heartbeat {path} has not "
                              "changed for ")
    assert "(its node dropped out or the process froze)" in message
    assert quick.message(blocked_s=0.0) is None  # not blocked: a stale file alone names nobody


def test_a_frozen_rank_keeps_beating_and_a_finished_one_is_not_named(rank, tmp_path):
    proc, _, path = rank()
    watch = watch_for(peer(1, proc), tmp_path, stale_s=1.0)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        seq0 = on_disk(path)[0]
        wait_until(lambda: on_disk(path)[0] > seq0 + 15)  # 1.5 s of beats while frozen: longer than stale_s
        assert watch.message(blocked_s=1e9) is None
        assert on_disk(path)[1] == "alive"
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    done, _, done_path = rank("done")
    assert done.wait(timeout=120) == 0
    wait_until(lambda: on_disk(done_path)[1] == "done")
    finished = Peer(2, "node7", "another-node", on_disk(done_path)[2], 0.0)
    assert PeerWatch([this_peer(0), finished], 0, tmp_path, "heartbeat", 1.0).message(blocked_s=1e9) is None


def test_a_forked_child_holding_the_pipe_does_not_hide_the_death(rank, tmp_path):
    proc, sidecar, path = rank("fork")
    child = next(c for c in psutil.Process(proc.pid).children() if c.pid != sidecar)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_until(lambda: on_disk(path)[1] == "gone")
    assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE  # the pipe is still open
