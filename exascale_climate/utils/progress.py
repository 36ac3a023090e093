"""Progress bars (rich) that only rank 0 draws, and that stay silent with -q or without a terminal."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterable, Iterator, TypeVar

from exascale_climate.utils.log import is_quiet
from exascale_climate.utils.runtime import current_rank

T = TypeVar("T")


def progress_enabled() -> bool:
    return current_rank() == 0 and not is_quiet() and sys.stderr.isatty()


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on rank 0 (a no-op elsewhere)."""
    if not progress_enabled():
        yield from items
        return
    from rich.progress import track as rich_track

    yield from rich_track(items, description=description, total=total, transient=True)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None):
    """A manual progress bar: `with progress_bar("copy", n) as advance: advance(1)`."""
    if not progress_enabled():
        yield lambda n=1: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)
