"""Options of the data commands checked before any work starts: output paths, HDF5 compression and chunks.

Why here and not where they are used: a bad option found after an hour of conversion (h5py rejects a chunk
larger than the data only when it writes) wastes the hour and shows a traceback; found first, it is one line
naming the option and what is allowed.
"""
from __future__ import annotations

import os
from pathlib import Path

from exascale_climate.errors import ConfigError
from exascale_climate.variables import VARIABLE_NAMES

GZIP_LEVELS = range(0, 10)


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "...'"


def check_out_dir(path, option: str = "--out") -> Path | None:
    """An output directory must be a directory or creatable as one: not a file, not below a file, writable."""
    if path is None:
        return None
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{option} {str(path)!r}: is a file, not a directory")
    _check_creatable(out, option, path)
    return out


def check_out_file(path, option: str = "--out") -> Path | None:
    """An output file must not be a directory and must sit in a directory that is (or can be) created."""
    if path is None:
        return None
    out = Path(path)
    if out.is_dir():
        raise ConfigError(f"{option} {str(path)!r}: is a directory; give a file name")
    _check_creatable(out.parent, option, path)
    return out


def _check_creatable(directory: Path, option: str, given) -> None:
    probe = directory
    while not probe.exists():  # the nearest existing ancestor decides: a file there blocks mkdir -p
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"{option} {str(given)!r}: {probe} is a file, so no directory can be made below it")
    if probe.is_dir() and not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {str(given)!r}: {probe} is not writable")


def check_compression(text: str | None) -> str | None:
    """none, lzf, gzip or gzip:<0-9> (HDF5's deflate levels)."""
    if text in (None, "", "none", "lzf", "gzip"):
        return text
    name, _, level = str(text).partition(":")
    if name == "gzip":
        try:
            if int(level) in GZIP_LEVELS:
                return text
        except ValueError:
            pass
    raise ConfigError(f"--compression {_show(text)}: not allowed; use none, lzf, gzip or gzip:L with L in 0..9")


def parse_chunk_option(text: str | None):
    """None/"none" (contiguous), "auto" (h5py's guess, returned as True) or "HxWxC" (a tuple)."""
    if not text or text == "none":
        return None
    if text == "auto":
        return True
    try:
        chunks = tuple(int(p) for p in str(text).lower().split("x"))
        if len(chunks) != 3 or min(chunks) < 1:
            raise ValueError
    except ValueError:
        raise ConfigError(f"--chunks {_show(text)}: not a chunk shape; use none, auto or HxWxC with positive "
                          "integers, e.g. 96x144x16") from None
    return chunks


def input_shape(path) -> tuple[int, int, int] | None:
    """(H, W, channels) a sample converted from `path` would have, from the file's metadata only; None when the
    file cannot tell (the reader then reports what is wrong with it)."""
    try:
        import h5py

        with h5py.File(path, "r") as f:
            climate = f.get("climate")
            data = climate.get("data") if isinstance(climate, h5py.Group) else None
            if isinstance(data, h5py.Dataset) and data.ndim == 3:
                h, w, c = data.shape
                return (w, c, h) if h <= len(VARIABLE_NAMES) < c else (h, w, c)  # Gordon Bell: channels first
    except Exception:  # noqa: BLE001 - not HDF5 or odd: netCDF below, else the reader's own error later
        pass
    try:
        import netCDF4

        with netCDF4.Dataset(path, "r") as nc:
            return (len(nc.dimensions["lat"]), len(nc.dimensions["lon"]),
                    sum(name in nc.variables for name in VARIABLE_NAMES))
    except Exception:  # noqa: BLE001 - see above
        return None


def check_chunks(text: str | None, inputs=(), channels: list[str] | None = None):
    """Parse --chunks and check it against every input's grid and the channels written (metadata only)."""
    chunks = parse_chunk_option(text)
    if not isinstance(chunks, tuple):
        return chunks
    files = [f for p in map(Path, inputs) for f in (sorted(p.iterdir()) if p.is_dir() else [p])]
    for path in files:
        shape = input_shape(path)
        if shape is None:
            continue
        if channels:
            shape = (shape[0], shape[1], len(channels))
        if any(c > s for c, s in zip(chunks, shape) if s > 0):
            h, w, c = shape
            raise ConfigError(f"--chunks {_show(text)}: larger than the data of {path} ({h}x{w}x{c}); each "
                              f"of H, W, C must be at most {h}, {w}, {c}")
    return chunks
