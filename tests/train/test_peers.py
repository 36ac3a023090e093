"""train/peers.py on real processes (no Horovod): a killed peer is named, a frozen one is not, nor one that left
a note; the last rank to finish removes the notes, the next job those of a killed one. The multi-rank behaviour is in test_dead_rank.py."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import psutil
import pytest

from exascale_climate.train.peers import Peer, PeerWatch, is_gone, machine_id, sweep_stale_notes, this_peer


@pytest.fixture
def children():
    procs = [subprocess.Popen(["sleep", "600"]) for _ in range(3)]
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def peer_of(rank: int, proc: subprocess.Popen, host: str = "localhost") -> Peer:
    return Peer(rank, host, machine_id(), proc.pid, psutil.Process(proc.pid).create_time())


def test_killed_peer_is_named_frozen_and_noted_peers_are_not(children):
    peers = [this_peer(0)] + [peer_of(r + 1, p) for r, p in enumerate(children)]
    watch = PeerWatch(peers, 0)
    assert watch.message() is None
    children[1].send_signal(signal.SIGSTOP)  # frozen: alive, left to the no-progress watchdog
    os.kill(children[0].pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not is_gone(peers[1]):  # a zombie until reaped counts as gone already
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert watch.message() == (f"rank 1 (pid {children[0].pid} on host localhost) is gone (killed or crashed); "
                               f"this is rank 0 (pid {os.getpid()} on host {peers[0].host})")
    children[0].wait()  # reaped: still gone
    assert [p.rank for p in watch.lost()] == [1]
    children[1].send_signal(signal.SIGCONT)
    # rank 3 leaves after rank 1 died (its note says so): it is not named
    PeerWatch(peers, 3).leave_note("left")
    children[2].kill()
    children[2].wait()
    assert [p.rank for p in watch.lost()] == [1]
    shutil.rmtree(watch.notes)


def test_a_reused_pid_is_a_dead_peer(children):
    old = peer_of(1, children[0])
    assert not is_gone(old)
    assert is_gone(Peer(1, "localhost", old.machine, old.pid, old.started - 100.0))


def test_a_peer_on_another_machine_is_not_checked_and_says_so(children):
    elsewhere = Peer(1, "node7", "another-boot-id", children[0].pid, 0.0)
    watch = PeerWatch([this_peer(0), elsewhere], 0)
    assert watch.checkable == [] and watch.message() is None
    assert "ranks [1] on host(s) node7 cannot be checked from here" in watch.unknown()


def test_the_last_rank_to_finish_removes_the_notes(children):
    peers = [this_peer(0), peer_of(1, children[0])]
    first, last = PeerWatch(peers, 1), PeerWatch(peers, 0)
    first.leave_note("error")
    assert "stopped on its own error" in last.unknown()
    first.leave_note("done")
    assert first.notes.is_dir()
    last.leave_note("done")
    assert not last.notes.exists()


def test_the_next_job_sweeps_notes_whose_processes_are_all_gone(children, tmp_path, monkeypatch):
    """A job whose ranks were killed cannot remove its notes: the next one does, once that job's processes are
    all gone (seen on disk); a job with a live process, one cut short before its list (a day's grace) and the
    caller's own stay."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    extra = subprocess.Popen(["sleep", "600"])
    try:
        killed = [peer_of(0, children[0]), peer_of(1, children[1])]
        running = [peer_of(0, children[2]), peer_of(1, extra)]
        for peers in (killed, running):
            PeerWatch(peers, 0).leave_note("left")  # rank 0 of each job leaves a note, rank 1 none
        killed_dir, running_dir = PeerWatch(killed, 0).notes, PeerWatch(running, 0).notes
        assert json.loads((killed_dir / "job").read_text())[1]["pid"] == children[1].pid
        unlisted_old, unlisted_new, own = (tmp_path / f"exaclimate-ranks-{n}" for n in ("old", "new", "own"))
        for d in (unlisted_old, unlisted_new, own):
            d.mkdir()
        os.utime(unlisted_old, (time.time() - 2 * 86400,) * 2)
        shutil.copy(killed_dir / "job", own / "job")
        unrelated = tmp_path / "exaclimate-other"
        unrelated.mkdir()
        # a job from before a reboot (another boot id): judged by age, as its pids mean nothing now
        rebooted_old, rebooted_new = (tmp_path / f"exaclimate-ranks-boot-{n}" for n in ("old", "new"))
        for d in (rebooted_old, rebooted_new):
            d.mkdir()
            (d / "job").write_text(json.dumps([{"rank": 0, "host": "h", "machine": "another-boot/ns", "pid": 1,
                                                "started": 0.0}]))
        os.utime(rebooted_old, (time.time() - 2 * 86400,) * 2)

        assert sorted(sweep_stale_notes(keep=own)) == sorted([unlisted_old, rebooted_old])  # both jobs live on
        children[0].kill()
        children[0].wait()
        assert sweep_stale_notes(keep=own) == []  # rank 1 of the killed job lives on
        children[1].kill()
        children[1].wait()
        extra.kill()  # one of the running job's two: it still has one
        extra.wait()
        assert sweep_stale_notes(keep=own) == [killed_dir]
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted([running_dir.name, unlisted_new.name, own.name, unrelated.name, rebooted_new.name])
    finally:
        extra.kill()
        extra.wait()
