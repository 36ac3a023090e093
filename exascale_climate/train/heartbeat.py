"""Heartbeat files: how a rank learns that a peer on ANOTHER machine died, with no protocol of our own.

Every rank starts a small sidecar process (`python -m exascale_climate.train.heartbeat FILE INTERVAL PID`, stdlib
only) that rewrites one fixed-width line in `<run_dir>/heartbeats/rank-<R>` every `interval` seconds:
`<sequence> <state> <pid> <wall time>`. Peers on any node read the files (the run directory is on the shared
file system of a cluster) and judge them by their OWN clock, so clock skew between nodes does not matter.

Why a sidecar process and not a thread of the rank:
- it sees its rank die exactly: the rank holds the write end of the sidecar's stdin, so a kill -9 of the rank is
  an EOF at once (and a re-parented sidecar on a forked child holding the pipe), and the sidecar writes `gone`:
  peers on other nodes name the dead rank within one read, well inside the launchers' grace before SIGKILL
  (mpirun: 1 s, horovodrun: 5 s);
- a thread would need the GIL, which h5py and NumPy hold for seconds while rank 0 writes a checkpoint: a live
  rank would look dead;
- a frozen rank (SIGSTOP) keeps its sidecar beating: frozen is alive, left to the no-progress watchdog, as on
  the same machine with pids.
A node that drops out takes its sidecars with it: its files stop changing, and a peer whose own step has also been
blocked that long (a slow collective) names the rank as lost (`stale`). Reading a file is an open/read/close, which
NFS's close-to-open consistency makes fresh; the writer also closes after each write.

States: alive, done (finished), error (stopped on its own error, which it prints), left (left after a peer
died), gone (the rank's process died without a word).
"""
from __future__ import annotations

import os
import select
import signal
import sys
import time
from typing import NamedTuple

STATES = ("alive", "done", "error", "left", "gone")
NOTES = ("done", "error", "left")
RECORD_BYTES = 64


class Beat(NamedTuple):
    seq: int
    state: str
    pid: int
    wall: float


def record(seq: int, state: str, pid: int) -> bytes:
    line = f"{seq:>14d} {state:<5s} {pid:>10d} {time.time():>17.3f}"
    return (line.ljust(RECORD_BYTES - 1) + "\n").encode()


def write_beat(path: str, seq: int, state: str, pid: int) -> None:
    """One record at offset 0, then close (a reader on another node sees it on its next open)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, record(seq, state, pid), 0)
    finally:
        os.close(fd)


def read_beat(path) -> Beat | None:
    """The record in `path`, or None when absent, torn or not ours."""
    try:
        with open(path, "rb") as f:
            fields = f.read(RECORD_BYTES).decode("ascii").split()
        beat = Beat(int(fields[0]), fields[1], int(fields[2]), float(fields[3]))
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None
    return beat if beat.state in STATES else None


def start(path, interval_s: float):
    """Start this rank's sidecar; returns the Popen (write a note with `note`). Its output goes nowhere: the
    launchers wait for EOF on the ranks' output pipes."""
    import subprocess

    return subprocess.Popen([sys.executable, "-m", "exascale_climate.train.heartbeat", str(path),
                             str(interval_s), str(os.getpid())],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            close_fds=True)


def note(proc, state: str) -> None:
    """Tell the sidecar why this rank leaves (done/error/left); it writes it at once and keeps it."""
    try:
        proc.stdin.write(f"{state}\n".encode())
        proc.stdin.flush()
    except (OSError, ValueError):
        pass


def run(path: str, interval_s: float, pid: int) -> None:
    """The sidecar: beat until the rank's end; `gone` if it ended without a note."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):  # a launcher's teardown reaches
        signal.signal(sig, signal.SIG_IGN)  # the process group: this one ends with its rank, not before
    parent = os.getppid()
    stdin = sys.stdin.buffer
    seq, state = 0, "alive"
    write_beat(path, seq, state, pid)
    ended = False
    while not ended:
        ready, _, _ = select.select([stdin], [], [], interval_s)
        if ready:
            line = stdin.readline()
            if not line:
                ended = True
            elif line.strip().decode(errors="replace") in NOTES:
                state = line.strip().decode()
        if os.getppid() != parent:  # re-parented: the rank died although a forked child keeps the pipe open
            ended = True
        if ended and state == "alive":
            state = "gone"
        seq += 1
        write_beat(path, seq, state, pid)


if __name__ == "__main__":
    run(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))
