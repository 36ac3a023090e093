"""The fast HDF5 read path: a dataset's bytes read straight from their file offset, and the files it knows.

HDF5 reports where a contiguous dataset's bytes lie; reading them with `os.preadv` releases the GIL (h5py holds
it for the whole read, so reader threads queue), keeps the kernel's readahead, and lets a caller see each block
of rows while it is in cache. That offset is only taken where it is provably the dataset's bytes (see
`location`); everything else is read through h5py.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from math import prod
from pathlib import Path

import numpy as np

from exascale_climate.data.layouts import Sample
from exascale_climate.data.validate import check_labels, within_ranges
from exascale_climate.errors import DataError
from exascale_climate.utils.buffers import aligned_empty

ROWS_PER_READ = 16  # rows per plain read (~1.2 MB of a 1152x16 float32 field: stays in cache for on_block)


def numeric_array(ds) -> bool:
    """A non-empty array of numbers: what is read into `empty(shape, dtype)` rather than with h5py's `ds[()]`."""
    return bool(ds.shape) and 0 not in ds.shape and ds.dtype.kind in "biuf"


@dataclass(frozen=True)
class Location:
    """Where the bytes of a contiguous, uncompressed, native-order numeric dataset lie in its file."""

    offset: int  # absolute (a user block included)
    shape: tuple[int, ...]
    dtype: np.dtype


def location(ds, file_size: int) -> Location | None:
    """The dataset's location, or None unless its bytes are provably there: storage allocated and exactly the
    array's size (an unallocated dataset reads as its fill value, and HDF5 then reports an undefined offset,
    e.g. 511 in a file with a 512-byte user block), contiguous, no filters, no external storage, native byte
    order, and offset + size within the file's `file_size` bytes."""
    import h5py

    if not numeric_array(ds) or not ds.dtype.isnative:
        return None
    plist = ds.id.get_create_plist()
    if plist.get_layout() != h5py.h5d.CONTIGUOUS or plist.get_nfilters() or plist.get_external_count():
        return None
    nbytes = ds.dtype.itemsize * prod(ds.shape)
    if ds.id.get_storage_size() != nbytes:
        return None
    offset = ds.id.get_offset()
    if offset is None or offset < 0 or offset + nbytes > file_size:
        return None
    return Location(offset, tuple(ds.shape), ds.dtype)


def read_at(path, where: Location, name: str, empty, on_block=None, fd: int | None = None) -> np.ndarray | None:
    """The dataset at `where`, read a block of rows at a time into `empty(shape, dtype)` from `fd` (else a
    fresh descriptor of `path`); None when `on_block(block)` returns False.

    A fresh descriptor keeps the kernel's readahead (after HDF5's metadata reads it treats the big read as
    random: 3x slower from a cold page cache here), and `on_block` sees each block while it is still in cache.
    """
    if fd is None:
        try:
            with open(path, "rb", buffering=0) as raw:
                return read_at(path, where, name, empty, on_block, raw.fileno())
        except OSError as e:
            raise DataError(path, f"cannot read ({e}); the file is truncated or corrupt", field=name) from None
    out = empty(where.shape, where.dtype)
    row_bytes = out[0].nbytes
    try:
        for start in range(0, len(out), ROWS_PER_READ):
            block = out[start:start + ROWS_PER_READ]
            got = os.preadv(fd, [memoryview(block).cast("B")], where.offset + start * row_bytes)
            if got != block.nbytes:
                raise DataError(path, f"the file ends inside the dataset (row {start}); truncated?", field=name)
            if on_block is not None and not on_block(block):
                return None
    except OSError as e:
        raise DataError(path, f"cannot read ({e}); the file is truncated or corrupt", field=name) from None
    return out


def read_h5_dataset(path, ds, name: str, file_size: int, empty=aligned_empty) -> np.ndarray:
    """The whole dataset, into `empty(shape, dtype)` (an aligned buffer by default: utils/buffers.py says
    why): from its offset where `location` vouches for it, else through h5py."""
    where = location(ds, file_size)
    if where is not None:
        return read_at(path, where, name, empty)
    try:
        if not numeric_array(ds):
            return ds[()]
        out = empty(ds.shape, ds.dtype)
        ds.read_direct(out)
        return out
    except (OSError, ValueError) as e:
        raise DataError(path, f"cannot read ({e}); the file is truncated or corrupt", field=name) from None


def read_fields_in_one_pass(path, where: Location, name: str, empty, transform, fd: int | None = None, *,
                            names) -> np.ndarray | None:
    """Float32 (H, W, C) fields of the variables `names` (in their canonical units) checked for NaN/Inf and
    implausible values and transformed block by block as they are read, while each block is in cache: one pass
    over memory instead of three. None: not possible here, or a bad block (the general path then names the
    variable)."""
    if where.dtype != np.dtype("=f4") or len(where.shape) != 3:
        return None
    names = tuple(names)

    def check_and_transform(block):
        if not within_ranges(block, names):
            return False
        if transform is not None:
            transform(block)
        return True

    return read_at(path, where, name, empty, check_and_transform, fd)


# ------------------------------------------------------------------------------------------ known files
def identity(stat: os.stat_result) -> tuple[int, ...]:
    """What says a file is unchanged: device, inode, size, modification and status-change times. The status
    change time (ctime) is the one a user cannot set: an in-place rewrite whose mtime was put back with
    `os.utime` (or `touch -r`, `cp -p`, `rsync -t`) still moves it, so such a file is read afresh."""
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


@dataclass(frozen=True)
class KnownFile:
    """What a read learned about a DeepCAM file whose fields are contiguous float32: enough to read it again,
    while it is unchanged (`identity`), without HDF5's metadata reads (2 file opens and ~30 attribute and group
    lookups per sample, all holding the GIL, so that reader threads queue behind each other; 1.5x the reader
    throughput)."""

    identity: tuple[int, ...]
    fields: Location
    labels: tuple[str, Location] | None
    variables: tuple[str, ...]
    time: str | None
    lat: np.ndarray | None
    lon: np.ndarray | None
    attrs: dict


KNOWN_FILES_LIMIT = 65536  # ~1 KB each (coordinates are shared); the paper's 63K training samples fit
SHARED_COORDINATES_LIMIT = 256  # distinct lat/lon vectors kept once each (grids, crops)
_known_files: dict[str, KnownFile] = {}
_known_coordinates: dict[bytes, np.ndarray] = {}
_known_lock = threading.Lock()


def shared_coordinate(values: np.ndarray | None) -> np.ndarray | None:
    """A read-only copy of a lat or lon vector, one per distinct vector (up to SHARED_COORDINATES_LIMIT of
    them), so 60,000 known files on one grid keep one lat between them."""
    if values is None:
        return None
    key = values.dtype.str.encode() + values.tobytes()
    with _known_lock:
        shared = _known_coordinates.get(key)
        if shared is None:
            shared = values.copy()
            shared.setflags(write=False)
            if len(_known_coordinates) < SHARED_COORDINATES_LIMIT:
                _known_coordinates[key] = shared
        return shared


def remember(path: Path, known: KnownFile) -> None:
    """Keep `known` unless the file changed while it was read."""
    try:
        if identity(os.stat(path)) != known.identity:
            return
    except OSError:
        return
    with _known_lock:
        if len(_known_files) >= KNOWN_FILES_LIMIT:
            _known_files.pop(next(iter(_known_files)))
        _known_files[str(path)] = known


def read_known(path: Path, channels, with_labels: bool, empty, transform) -> Sample | None:
    """A read of a known, unchanged file straight from its bytes; None when the file is unknown or changed,
    the request differs from what is known, or a block is not finite (the full read then names the variable).
    The identity is checked on the descriptor that is read, so a file replaced meanwhile is never misread."""
    known = _known_files.get(str(path))
    if known is None or (with_labels and known.labels is None) or (channels and tuple(channels) != known.variables):
        return None
    try:
        with open(path, "rb", buffering=0) as raw:
            if identity(os.fstat(raw.fileno())) != known.identity:
                return None
            data = read_fields_in_one_pass(path, known.fields, "climate/data", empty, transform, raw.fileno(),
                                           names=known.variables)
            if data is None:
                return None
            labels = None
            if with_labels:
                name, where = known.labels
                raw_labels = read_at(path, where, name, empty, fd=raw.fileno())
                labels = check_labels(path, name, raw_labels, data.shape[:2])
    except OSError:
        return None  # vanished meanwhile: the full read reports it
    lat, lon = (None if a is None else a.copy() for a in (known.lat, known.lon))
    return Sample(data, labels, list(known.variables), str(path), known.time, lat, lon, dict(known.attrs))
