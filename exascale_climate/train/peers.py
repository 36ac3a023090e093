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
A peer on ANOTHER machine (its boot id or pid namespace differs) cannot be checked this way: it is checked through
its heartbeat file in the run directory (train/heartbeat.py), which its sidecar process marks `gone` the moment
the rank dies, and which stops changing when its node is lost. `distributed.liveness` picks the checks: `auto`
(pids on this machine, heartbeats for the others), `pid` (pids only: peers elsewhere show as a failed collective
or as no progress) or `heartbeat` (heartbeat files for every peer, as across nodes; simulated hosts on one machine
share a boot id, so this is how the cross-node path is tested on one machine).

A rank that leaves on purpose is gone too by the time a slower peer looks: a survivor that leaves because a peer
died, a rank that finished (it may exit while rank 0 still writes the last checkpoint) or one that stopped on
its own error (which it prints itself). Each drops a note in this machine's temporary directory (`left-<rank>`,
in a directory named after the job's ranks), and a peer with a note is not named as the lost one; the last rank
of the machine to finish normally removes the directory. A job whose ranks were killed cannot; its directory lists
the job's processes on this machine (`job`), and the next job to start here removes it once they are all gone.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from exascale_climate.utils.runtime import World, host_name

EXIT_RANK_LOST = 4  # a peer rank died (3 is "no progress", distributed.EXIT_STALLED)
POLL_S = 0.5
NOTES_PREFIX = "exaclimate-ranks-"
UNLISTED_STALE_S = 86400.0  # a notes directory we cannot judge by its processes is swept after a day


def leave(what: str, message: str, extra: str = "") -> None:
    """Print the one line every survivor prints (watchdog thread or main thread alike) and leave at once with
    EXIT_RANK_LOST: a normal interpreter exit would shut Horovod down with a dead peer (slow, or a hang) while
    the launcher's SIGTERM/SIGKILL is on its way.

    That SIGTERM comes as soon as the first survivor has left, so it can reach a survivor between its line and its
    exit: ignored from here on (main thread; elsewhere the main thread's handler only records it), the cause this
    rank names stays its exit status, not 143."""
    import signal
    import sys
    import threading

    from exascale_climate.utils.log import get_logger

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
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


def sweep_stale_notes(keep: Path | None = None) -> list[Path]:
    """Remove the notes directories of earlier jobs on this machine whose processes are all gone (a job whose
    ranks were killed leaves its directory behind); returns what was removed."""
    removed, here = [], machine_id()
    for notes in Path(tempfile.gettempdir()).glob(f"{NOTES_PREFIX}*"):
        if notes == keep or not notes.is_dir():
            continue
        stale = False
        try:
            listed = [Peer(**row) for row in json.loads((notes / "job").read_text())]
            if all(p.machine == here for p in listed):
                stale = all(is_gone(p) for p in listed)
            else:  # from before a reboot, or another pid namespace sharing this directory: by age alone
                stale = time.time() - notes.stat().st_mtime > UNLISTED_STALE_S
        except FileNotFoundError:  # cut short before its list was written (or written by an older version)
            with contextlib.suppress(OSError):
                stale = time.time() - notes.stat().st_mtime > UNLISTED_STALE_S
        except (OSError, ValueError, TypeError):  # unreadable: not ours to judge
            pass
        if stale:
            shutil.rmtree(notes, ignore_errors=True)
            removed.append(notes)
    return removed


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
    """The peers this rank can check (by pid on this machine, by heartbeat file anywhere), and a description of
    the ones that are gone."""

    def __init__(self, peers: list[Peer], rank: int, beats_dir: Path | None = None, liveness: str = "pid",
                 stale_s: float = 10.0):
        self.me = next(p for p in peers if p.rank == rank)
        others = [p for p in peers if p.rank != rank]
        use_pid = liveness in ("auto", "pid")
        self.by_pid = [p for p in others if use_pid and p.machine == self.me.machine]
        self.by_beat = [p for p in others if beats_dir is not None and p not in self.by_pid
                        and (liveness == "heartbeat" or (liveness == "auto" and p.machine != self.me.machine))]
        self.checkable = self.by_pid + self.by_beat
        self.elsewhere = [p for p in others if p not in self.checkable]
        self.beats_dir, self.stale_s = beats_dir, float(stale_s)
        self._seen: dict[int, tuple[int, float]] = {}  # rank -> (last sequence, when it last changed, our clock)
        self._sidecar, self._noted = None, None
        job = hashlib.sha1(repr(sorted((p.rank, p.pid, p.started, p.machine) for p in peers)).encode())
        self.notes = Path(tempfile.gettempdir()) / f"{NOTES_PREFIX}{job.hexdigest()[:16]}"
        self.here = [p for p in peers if p.machine == self.me.machine]  # the job's processes on this machine

    @classmethod
    def gather(cls, world: World, run_dir: Path | None = None, liveness: str = "pid",
               interval_s: float = 0.5, stale_s: float = 10.0) -> "PeerWatch":
        """One allgather of the peers; then this rank's heartbeat sidecar, when a peer will read its file (every
        peer reads a missing file as unchanged since it first looked, so starting after the gather is safe)."""
        beats_dir = None
        if run_dir is not None and liveness != "pid":  # hybrid: one directory per compute group (group ranks)
            beats_dir = Path(run_dir) / "heartbeats" / (f"group-{world.group}" if world.hybrid else "")
        watch = cls(gather_peers(world), world.rank, beats_dir, liveness, stale_s)
        sweep_stale_notes(keep=watch.notes)
        if watch.by_beat:  # symmetric: a peer checked by its file checks this rank by its file too
            from exascale_climate.train import heartbeat

            beats_dir.mkdir(parents=True, exist_ok=True)
            watch._sidecar = heartbeat.start(beats_dir / f"rank-{world.rank}", interval_s)
        return watch

    def beat_file(self, peer: Peer) -> Path:
        return self.beats_dir / f"rank-{peer.rank}"

    def _beat(self, peer: Peer):
        """(state, seconds unchanged by our clock) of a peer's heartbeat; a file of an earlier run (another pid)
        or none yet counts as unchanged since our first look."""
        from exascale_climate.train.heartbeat import read_beat

        beat = read_beat(self.beat_file(peer))
        if beat is not None and beat.pid != peer.pid:
            beat = None
        now = time.monotonic()
        seq = beat.seq if beat is not None else -1
        last = self._seen.get(peer.rank)
        if last is None or last[0] != seq:
            self._seen[peer.rank] = last = (seq, now)
        return (beat.state if beat is not None else "alive"), now - last[1]

    def _note(self, rank: int) -> str | None:
        try:
            return (self.notes / f"left-{rank}").read_text().split(" ", 1)[0]
        except OSError:
            pass
        if self.beats_dir is not None:
            from exascale_climate.train.heartbeat import NOTES, read_beat

            beat = read_beat(self.beats_dir / f"rank-{rank}")
            if beat is not None and beat.state in NOTES:
                return beat.state
        return None

    def lost(self, blocked_s: float = 0.0) -> list[Peer]:
        return [p for p, _ in self.judged(blocked_s)]

    def judged(self, blocked_s: float = 0.0) -> list[tuple[Peer, str]]:
        """Peers gone without a note, with how it was seen: the ones that died, not those that finished, stopped
        on their own error or left after a dead peer. A heartbeat that stopped changing names its rank only while
        this rank has been blocked as long (`blocked_s`: a collective that does not finish), so a slow file
        system alone never names a live rank."""
        out = [(p, "gone") for p in self.by_pid if is_gone(p) and self._note(p.rank) is None]
        for p in self.by_beat:
            state, unchanged = self._beat(p)
            if state == "gone":
                out.append((p, "gone"))
            elif state == "alive" and unchanged > self.stale_s and blocked_s > self.stale_s:
                out.append((p, f"stale {unchanged:.0f}"))
        return out

    def leave_note(self, reason: str = "left") -> None:
        """Say why this rank leaves: `left` (a peer died), `done` (finished, or stopped for preemption), `error`
        (its own error, which it prints). The last rank of this machine to finish removes the notes."""
        self._noted = reason
        if self._sidecar is not None:
            from exascale_climate.train.heartbeat import note

            note(self._sidecar, reason)
        try:
            self.notes.mkdir(exist_ok=True)
            if not (self.notes / "job").exists():
                from exascale_climate.utils.io import atomic_write_text

                atomic_write_text(self.notes / "job", json.dumps([dataclasses.asdict(p) for p in self.here]))
            (self.notes / f"left-{self.me.rank}").write_text(f"{reason} {self.me}\n")
            if reason == "done" and all(self._note(p.rank) == "done" for p in self.by_pid):
                shutil.rmtree(self.notes, ignore_errors=True)
        except OSError:
            pass

    def close(self) -> None:
        """End this rank's sidecar (its file keeps the last note; `error` if none was left: leaving early)."""
        if self._sidecar is None:
            return
        if self._noted is None:
            self.leave_note("error")
        with contextlib.suppress(OSError, ValueError):
            self._sidecar.stdin.close()
        with contextlib.suppress(Exception):
            self._sidecar.wait(timeout=5)
        self._sidecar = None

    def message(self, blocked_s: float = 0.0) -> str | None:
        """`rank 1 (pid N on host H) is gone ...` when a checked peer died (or, blocked, its heartbeat stopped)."""
        lost = self.judged(blocked_s)
        if not lost:
            return None
        parts = []
        gone = [p for p, how in lost if how == "gone"]
        if gone:
            verb = "is" if len(gone) == 1 else "are"
            seen = " (seen by its heartbeat file)" if all(p in self.by_beat for p in gone) else ""
            parts.append(f"{', '.join(str(p) for p in gone)} {verb} gone (killed or crashed){seen}")
        for p, how in lost:
            if how != "gone":
                parts.append(f"{p} is lost: its heartbeat {self.beat_file(p)} has not changed for {how.split()[1]} s "
                             "(its node dropped out or the process froze)")
        return f"{'; '.join(parts)}; this is {self.me}"

    def unknown(self) -> str:
        """For a failed collective with no dead peer found here: a peer that stopped on its own error, or the
        ranks that could not be checked."""
        errored = [p for p in self.checkable if self._note(p.rank) == "error"]
        if errored:
            return f"{', '.join(str(p) for p in errored)} stopped on its own error (its output names it)"
        if not self.elsewhere:
            return "no checked rank died"
        hosts = sorted({p.host for p in self.elsewhere})
        return (f"no rank on this machine died, another rank probably did (ranks {[p.rank for p in self.elsewhere]} "
                f"on host(s) {', '.join(hosts)} cannot be checked from here: distributed.liveness=pid)")
