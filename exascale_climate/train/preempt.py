"""Stop training cleanly before the scheduler kills it: SIGUSR1 (the warning `#SBATCH --signal=B:USR1@N` /
`#BSUB -wa USR1` asks for) or SIGTERM (what srun/LSF send at the limit or on preemption).

Why: a signal reaches one rank, several, or all, at different moments; a rank that stopped alone would leave the
others blocked in the next allreduce. So a handler only records the signal, and every `check_every` steps all ranks
allreduce one flag: they all stop after the *same* step, rank 0 writes a checkpoint, and the job leaves with
EXIT_PREEMPTED, which the job templates turn into `scontrol requeue` / `brequeue` (the requeued job resumes).
"""
from __future__ import annotations

import shlex
import signal
import sys
import threading

import numpy as np

from exascale_climate.errors import ExaclimateError

# EX_TEMPFAIL (sysexits.h): "try again later". Not 0 (the run is not finished), not 1/2 (nothing is wrong), not
# 128+N (that says "killed by signal N", and SLURM/LSF treat it as a failure).
EXIT_PREEMPTED = 75
SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class Preempted(ExaclimateError):
    """Training stopped on a signal after writing a checkpoint; `--resume` continues exactly."""

    exit_code = EXIT_PREEMPTED


def resume_command(argv: list[str] | None = None) -> str:
    """The command line of this process with `--resume` (what the user or the job template runs next)."""
    argv = list(sys.argv if argv is None else argv)
    words = ["exaclimate", *argv[1:]]
    if "--resume" not in words:
        words.append("--resume")
    return " ".join(shlex.quote(w) for w in words)


class StopSignals:
    """Context manager: while active, SIGUSR1/SIGTERM only set `self.signum` (main thread only; else a no-op)."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _handler(self, signum, frame):
        if self.signum is None:
            self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handler) for s in SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}
        return False

    @property
    def name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum else None


def agreed_stop(world, local_signum: int | None) -> int | None:
    """All ranks: the signal number if ANY rank got one (max over ranks), else None. One 8-byte allreduce."""
    if not world.distributed:
        return local_signum
    from exascale_climate.train.distributed import allreduce_numpy

    got = allreduce_numpy(world, np.array([float(local_signum or 0)]), op="max", name="exaclimate_stop")
    return int(got[0]) or None
