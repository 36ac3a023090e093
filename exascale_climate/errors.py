"""User-facing errors: the CLI prints them as one line (no traceback unless -v)."""
from __future__ import annotations


def one_line(text: str) -> str:
    """`text` with control characters (a newline in a file name or a YAML key) and undecodable bytes escaped,
    so an error or a reported problem stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class ExaclimateError(Exception):
    """An error the user can fix (bad input, bad config); carries a one-line message."""


class ConfigError(ExaclimateError):
    """A configuration key or value is invalid."""


class DataError(ExaclimateError):
    """A data file is unreadable, incomplete or inconsistent; names the file and field."""

    def __init__(self, path, message: str, field: str | None = None):
        self.path = str(path)
        self.field = field
        where = f"{self.path}" + (f" [{field}]" if field else "")
        super().__init__(f"{where}: {message}")


class DistributedError(ExaclimateError):
    """A rank failed, hung, or the launcher environment is inconsistent."""
