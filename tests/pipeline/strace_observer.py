"""An observer outside the staging processes: `strace -f` of the whole launch (horovodrun or mpirun and every
rank), parsed for which files were opened for reading and how many bytes each process took in from TCP
sockets. Staging's own counters are never consulted."""
from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

TRACED = "clone,clone3,openat,recvfrom,recvmsg"  # Gloo receives with recv (recvfrom)
_LINE = re.compile(r"^(\d+) +(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
_RESULT = re.compile(r"\)\s+= (-?\d+)")
_OPEN = re.compile(r'^openat\([^,]+, "([^"]*)", ([A-Z_|]+)')


@dataclass
class Trace:
    opens: list[tuple[int, str, str]] = field(default_factory=list)  # (tid, path, flags), successful opens
    tcp_in: dict[int, int] = field(default_factory=lambda: defaultdict(int))  # tid -> bytes read from TCP
    parent: dict[int, int] = field(default_factory=dict)  # thread tid -> the tid that created it
    events: list[tuple] = field(default_factory=list)  # ("open", tid, path, flags) / ("tcp", tid, n), in order

    def segments(self, marker: str) -> list["Trace"]:
        """Split by marker files: a process's events after it opened its k-th file whose path contains
        `marker` go to segment k (the ranks open a marker after each staging, which ends in a collective)."""
        seen, parts = defaultdict(int), defaultdict(lambda: Trace(parent=self.parent))
        for event in self.events:
            process = self.process_of(event[1])
            if event[0] == "open" and marker in event[2]:
                seen[process] += 1
                continue
            part = parts[seen[process]]
            if event[0] == "open":
                part.opens.append(event[1:])
            else:
                part.tcp_in[event[1]] += event[2]
        return [parts[k] for k in range(max(parts, default=-1) + 1)]

    def process_of(self, tid: int) -> int:
        """The thread group (process) a thread belongs to: walk up the CLONE_THREAD parents."""
        while tid in self.parent:
            tid = self.parent[tid]
        return tid

    def tcp_bytes_by_process(self) -> dict[int, int]:
        out = defaultdict(int)
        for tid, n in self.tcp_in.items():
            out[self.process_of(tid)] += n
        return dict(out)

    def reads_under(self, root: Path) -> dict[str, int]:
        """How often each regular file under `root` was opened read-only (directories excluded)."""
        root = str(Path(root).resolve()) + "/"
        counts = defaultdict(int)
        for _, path, flags in self.opens:
            if path.startswith(root) and "O_DIRECTORY" not in flags and "O_WRONLY" not in flags \
                    and "O_RDWR" not in flags:
                counts[path[len(root):]] += 1
        return dict(counts)

    def writers_under(self, root: Path) -> set[int]:
        """Processes that opened a file under `root` for writing."""
        root = str(Path(root).resolve()) + "/"
        return {self.process_of(tid) for tid, path, flags in self.opens
                if path.startswith(root) and ("O_WRONLY" in flags or "O_RDWR" in flags)}


def strace_command(out: Path, argv: list[str]) -> list[str]:
    return [shutil.which("strace") or "strace", "-f", "--seccomp-bpf", "-qq", "-s", "0", "-yy", "-e", "signal=none",
            "-e", f"trace={TRACED}", "-o", str(out), *argv]


def parse(path: Path) -> Trace:
    trace = Trace()
    pending: dict[int, str] = {}  # tid -> the text of an unfinished call
    for raw in Path(path).read_text(errors="replace").splitlines():
        m = _LINE.match(raw)
        if not m:
            continue
        tid, text = int(m.group(1)), m.group(2)
        resumed = _RESUMED.match(text)
        if resumed:
            head = pending.pop(tid, "")
            text = head.replace("<unfinished ...>", "") + resumed.group(2)
        elif text.endswith("<unfinished ...>"):
            pending[tid] = text
            continue
        call = _CALL.match(text)
        result = _RESULT.search(text)
        if not call or not result:
            continue
        name, value = call.group(1), int(result.group(1))
        if value < 0:
            continue
        if name in ("clone", "clone3") and "CLONE_THREAD" in text:
            trace.parent[value] = tid
        elif name in ("recvfrom", "recvmsg") and "<TCP:" in text.split(",", 1)[0]:
            trace.tcp_in[tid] += value
            trace.events.append(("tcp", tid, value))
        elif name == "openat":
            o = _OPEN.match(text)
            if o:
                trace.opens.append((tid, o.group(1), o.group(2)))
                trace.events.append(("open", tid, o.group(1), o.group(2)))
    return trace


def traced_run(argv: list[str], out: Path, env: dict, timeout: float) -> tuple[subprocess.CompletedProcess, Trace]:
    """Run `argv` (a whole launch) under strace; the result and the parsed trace."""
    if shutil.which("strace") is None:
        import pytest

        pytest.skip("strace is not installed (apt-get install strace)")
    result = subprocess.run(strace_command(out, argv), env=env, timeout=timeout, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return result, parse(out)
