"""Stop at once on SIGINT / SIGTERM, leaving no temporaries: one context manager for every long data command.

Why: Python's default SIGTERM kills the process without unwinding, so `atomic_path` never removes its temporary;
a SIGINT that the shell set to "ignore" (background jobs) is not seen at all; and a process pool's exit waits for
every queued task, so an interrupted `--workers` run would finish anyway. Here a handler kills the worker
processes first, then raises `Interrupted` so the writers' cleanup runs, and finally the temporaries of this
process and of its killed workers (named by `utils.io.temp_name` with their pid) are swept from the watched
directories. The CLI turns `Interrupted` into one line and the shell's exit status 128 + signal (130, 143).
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

from exascale_climate.utils.io import LIVE_TEMPS, remove_path, temp_owner
from exascale_climate.utils.log import get_logger

log = get_logger("interrupt")
SIGNALS = (signal.SIGINT, signal.SIGTERM)
CHILD_GRACE_S = 5.0  # SIGTERM, then SIGKILL for workers that have not exited by then
RERAISE_S = 0.25  # the interruption is raised again this often until it reaches `stop_on_signals`
MAX_RAISES = 8  # after this many raises that did not get through: clean up and leave with os._exit


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; `exit_code` is the shell convention 128 + signal number.

    A KeyboardInterrupt, so that `except Exception` anywhere below cannot swallow it."""

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_code = 128 + signum
        self.removed: list[Path] = []
        super().__init__(signal.Signals(signum).name)

    def __str__(self) -> str:
        return (f"interrupted by {signal.Signals(self.signum).name}: stopped, temporary files removed, "
                "complete outputs kept")


# Resource trackers (the standard library's, started by every "spawn" pool, and joblib's loky copy) are children
# too, but not workers: they remove leaked semaphores and shared memory after this process exits, and a killed
# one is relaunched with "resource_tracker: process died unexpectedly" and KeyErrors at interpreter exit.
TRACKER_MODULES = ("multiprocessing.resource_tracker", "joblib.externals.loky.backend.resource_tracker")


def _trackers() -> set[int]:
    """Pids of the resource trackers this process has started (modules not imported yet have none)."""
    pids = set()
    for name in TRACKER_MODULES:
        tracker = getattr(sys.modules.get(name), "_resource_tracker", None)
        if getattr(tracker, "_pid", None):
            pids.add(tracker._pid)
    return pids


def _descendants() -> list:
    import psutil

    try:
        spared = _trackers()
        return [c for c in psutil.Process().children(recursive=True) if c.pid not in spared]
    except psutil.Error:
        return []


def _stop_children() -> set[int]:
    """SIGTERM every descendant process but the resource trackers (pool workers), SIGKILL those still alive after a grace period."""
    import psutil

    children = _descendants()
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=CHILD_GRACE_S)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(alive, timeout=CHILD_GRACE_S)
    return {c.pid for c in children}


def _sweep(directories, owners: set[int]) -> list[Path]:
    """Remove the temporaries this process is writing and those of `owners` in `directories`."""
    removed = []
    for tmp in list(LIVE_TEMPS):
        if os.path.lexists(tmp):
            remove_path(tmp)
            removed.append(tmp)
        LIVE_TEMPS.discard(tmp)
    for directory in {Path(d) for d in directories if d}:
        if not directory.is_dir():
            continue
        for entry in directory.iterdir():
            if temp_owner(entry) in owners:
                remove_path(entry)
                removed.append(entry)
    return removed


def _leave(signum: int, watch, children: set[int]) -> None:
    """The last resort when the exception cannot get through: sweep, say so, exit without unwinding."""
    _sweep(watch, children | {os.getpid()})
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.write(f"error: {Interrupted(signum)}\n")
        sys.stderr.flush()
    os._exit(128 + signum)


@contextlib.contextmanager
def stop_on_signals(*watch):
    """Run the body; on SIGINT/SIGTERM stop its workers, remove temporaries (its own, and its workers' in the
    `watch` directories) and raise `Interrupted`. Outside the main thread (no signal handlers there) a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    children: set[int] = set()
    pending: list[int] = []
    raises = [0]

    def handler(signum, frame):
        for s in SIGNALS:  # one interruption is enough; a second signal must not cut the cleanup short
            signal.signal(s, signal.SIG_IGN)
        pending.append(signum)
        children.update(_stop_children())
        # An exception raised while Python runs a finalizer or weakref callback is printed and dropped
        # ("Exception ignored in ..."), and the work would go on: raise it again until it gets through.
        signal.setitimer(signal.ITIMER_REAL, RERAISE_S, RERAISE_S)
        raise Interrupted(signum)

    def again(signum, frame):
        raises[0] += 1
        if raises[0] >= MAX_RAISES:  # dropped every time (a C extension's callback at the same spot): leave
            _leave(pending[0], watch, children)
        raise Interrupted(pending[0])

    def unraisable(info):  # the dropped copy is not an error worth a traceback; anything else is
        if isinstance(info.exc_value, Interrupted):
            signal.setitimer(signal.ITIMER_REAL, 0.01, RERAISE_S)  # try again soon
        else:
            previous_hook(info)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, again)
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield
    except (Interrupted, SystemError) as caught:
        # h5py turns an exception raised inside its attribute-iteration callback into a SystemError whose cause
        # is ours (seen under SIGTERM in `predict`): that is the interruption too
        e = caught if isinstance(caught, Interrupted) else caught.__cause__
        if not (isinstance(e, Interrupted) and pending):
            raise
        signal.setitimer(signal.ITIMER_REAL, 0)
        e.removed = _sweep(watch, children | {os.getpid()})
        log.debug("interrupted; removed %s", [str(p) for p in e.removed])
        if e is caught:
            raise
        raise e from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.unraisablehook = previous_hook
        for s, h in previous.items():
            signal.signal(s, h)
