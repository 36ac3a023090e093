"""Which rank died: every rank learns each peer's host, machine and pid at the start (one allgather), and the
watchdog thread checks them, so a SURVIVING rank can say which rank was lost and where.

Why the pid of the peer (and not the alternatives):
- Horovod's own error when a collective fails (Gloo's "Connection closed by peer [address]:port", MPI's abort)
  names an address at best, never a rank, and it comes only while the survivor is inside a collective. Under
  a launcher it often never comes: horovodrun sends the other ranks SIGTERM and SIGKILL 5 s later, mpirun's
  daemon sends SIGTERM and then SIGKILL, as soon as one rank dies.
- Heartbeat files in the run directory need a shared file system with prompt attribute updates (NFS caches
  them for up to a minute), cost every rank a metadata write every few seconds on a parallel file system, and
  cannot tell a dead rank from a frozen one (a SIGSTOPped rank stops writing too).
- A pid is exact on the same machine: a killed rank is gone at once (or a zombie until its launcher reaps it);
  a frozen one is still there (the no-progress watchdog handles that). The pid's start time guards against
  pid reuse. The check runs every POLL_S and at once when a signal arrives (`signal.set_wakeup_fd` wakes the
  thread even while the main thread is blocked inside a TensorFlow op), which is before the launcher's SIGKILL.
A peer on ANOTHER machine (its boot id or pid namespace differs) cannot be checked this way: its death shows as
a failed collective (the TCP connection resets), reported with the peers' hosts that could not be checked, or
for a lost node as no progress (the watchdog); every message names the last good checkpoint.

A rank that leaves on purpose is gone too by the time a slower peer looks: a survivor that leaves because a peer
died, a rank that finished (it may exit while rank 0 still writes the last checkpoint) or one that stopped on
its own error (which it prints itself). Each drops a note in this machine's temporary directory (`left-<rank>`,
in a directory named after the job's ranks), and a peer with a note is not named as the lost one; the last rank
of the machine to finish normally removes the directory.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from exascale_climate.utils.runtime import World, host_name

EXIT_RANK_LOST = 4  # a peer rank died (3 is "no progress", distributed.EXIT_STALLED)
POLL_S = 0.5


def leave(what: str, message: str, extra: str = "") -> None:
    """Print the one line every survivor prints (watchdog thread or main thread alike) and leave at once with
    EXIT_RANK_LOST: a normal interpreter exit would shut Horovod down with a dead peer (slow, or a hang) while
    the launcher's SIGTERM/SIGKILL is on its way."""
    import sys

    from exascale_climate.utils.log import get_logger

    get_logger("distributed").error("%s: %s; exiting with code %d%s", what, message, EXIT_RANK_LOST, extra)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(EXIT_RANK_LOST)


@dataclass(frozen=True)
class Peer:
    rank: int
    host: str  # the launcher's name for the host (horovodrun -H), else the machine's
    machine: str  # boot id + pid namespace: pids are comparable only inside one
    pid: int
    started: float  # the process's start time (psutil), to tell a reused pid

    def __str__(self) -> str:
        return f"rank {self.rank} (pid {self.pid} on host {self.host})"


def machine_id() -> str:
    """This kernel instance and pid namespace (containers on one host share the boot id, not the namespace)."""
    try:
        boot = open("/proc/sys/kernel/random/boot_id").read().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return socket.gethostname()


def this_peer(rank: int) -> Peer:
    import psutil

    return Peer(rank, host_name(), machine_id(), os.getpid(), psutil.Process().create_time())


def gather_peers(world: World) -> list[Peer]:
    """Every rank's Peer, in rank order (a collective: every rank calls it once)."""
    if not world.distributed:
        return [this_peer(world.rank)]
    rows = world.hvd.allgather_object(this_peer(world.rank), name="exaclimate_peers")
    return sorted(rows, key=lambda p: p.rank)


def is_gone(peer: Peer) -> bool:
    """True when the process is no more: not there, a zombie, or its pid now belongs to another process."""
    import psutil

    try:
        process = psutil.Process(peer.pid)
        if abs(process.create_time() - peer.started) > 1.0:
            return True
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # no permission to look: cannot say it is gone
        return False


class PeerWatch:
    """The peers this rank can check (same machine), and a description of the ones that are gone."""

    def __init__(self, peers: list[Peer], rank: int):
        self.me = next(p for p in peers if p.rank == rank)
        self.checkable = [p for p in peers if p.rank != rank and p.machine == self.me.machine]
        self.elsewhere = [p for p in peers if p.rank != rank and p.machine != self.me.machine]
        job = hashlib.sha1(repr(sorted((p.rank, p.pid, p.started, p.machine) for p in peers)).encode())
        self.notes = Path(tempfile.gettempdir()) / f"exaclimate-ranks-{job.hexdigest()[:16]}"

    @classmethod
    def gather(cls, world: World) -> "PeerWatch":
        return cls(gather_peers(world), world.rank)

    def _note(self, rank: int) -> str | None:
        try:
            return (self.notes / f"left-{rank}").read_text().split(" ", 1)[0]
        except OSError:
            return None

    def lost(self) -> list[Peer]:
        """Peers gone without a note: the ones that died, not those that finished, stopped on their own error
        or left after a dead peer."""
        return [p for p in self.checkable if is_gone(p) and self._note(p.rank) is None]

    def leave_note(self, reason: str = "left") -> None:
        """Say why this rank leaves: `left` (a peer died), `done` (finished, or stopped for preemption), `error`
        (its own error, which it prints). The last rank of this machine to finish removes the notes."""
        try:
            self.notes.mkdir(exist_ok=True)
            (self.notes / f"left-{self.me.rank}").write_text(f"{reason} {self.me}\n")
            if reason == "done" and all(self._note(p.rank) == "done" for p in self.checkable):
                shutil.rmtree(self.notes, ignore_errors=True)
        except OSError:
            pass

    def message(self) -> str | None:
        """`rank 1 (pid N on host H) is gone ...` when a checkable peer died, else None."""
        lost = self.lost()
        if not lost:
            return None
        names = ", ".join(str(p) for p in lost)
        verb = "is" if len(lost) == 1 else "are"
        return f"{names} {verb} gone (killed or crashed); this is {self.me}"

    def unknown(self) -> str:
        """For a failed collective with no dead peer found here: a peer that stopped on its own error, or the
        ranks that could not be checked."""
        errored = [p for p in self.checkable if self._note(p.rank) == "error"]
        if errored:
            return f"{', '.join(str(p) for p in errored)} stopped on its own error (its output names it)"
        if not self.elsewhere:
            return "no rank on this machine died"
        hosts = sorted({p.host for p in self.elsewhere})
        return (f"no rank on this machine died, another rank probably did (ranks {[p.rank for p in self.elsewhere]} "
                f"on host(s) {', '.join(hosts)} cannot be checked from here)")
