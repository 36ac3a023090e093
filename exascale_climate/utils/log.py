"""Rank-aware logging: only rank 0 prints progress unless asked; metrics go out as JSON lines."""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

LOGGER_NAME = "exaclimate"
_state = {"all_ranks": False}


def _rank() -> int:
    from exascale_climate.utils.runtime import current_rank  # runtime logs through here: import late

    return current_rank()


def _size() -> int:
    from exascale_climate.utils.runtime import current_world

    return current_world().size


class _RankFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = _rank()
        return _state["all_ranks"] or record.rank == 0 or record.levelno >= logging.WARNING


def setup_logging(verbosity: int = 0, all_ranks: bool | None = None) -> logging.Logger:
    """verbosity: -1 quiet (warnings), 0 info, 1+ debug. EXACLIMATE_LOG_ALL_RANKS=1 prints every rank."""
    if all_ranks is None:
        all_ranks = os.environ.get("EXACLIMATE_LOG_ALL_RANKS", "") == "1"
    _state["all_ranks"] = all_ranks
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(asctime)s [rank %(rank)s] %(levelname)s %(message)s" if _size() > 1 else "%(asctime)s %(levelname)s %(message)s"
    handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    handler.addFilter(_RankFilter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def get_logger(name: str = "") -> logging.Logger:
    logger = logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)
    return logger


def is_quiet() -> bool:
    return logging.getLogger(LOGGER_NAME).getEffectiveLevel() > logging.INFO


class JsonLinesWriter:
    """Append-only JSON-lines metrics file; each line is flushed so a killed run keeps what it logged."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", buffering=1)

    def write(self, record: dict) -> None:
        record = {"time": round(time.time(), 3), **record}
        self._f.write(json.dumps(record, default=_jsonable) + "\n")

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def read_json_lines(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
