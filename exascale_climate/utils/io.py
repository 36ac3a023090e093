"""Atomic output: write to a temporary name beside the target, then rename, so readers never see half a file."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path


def temp_name(path: str | Path) -> Path:
    """A hidden, unique temporary name in the target's directory (same file system, so rename is atomic). Bytes
    of the target's name that are not UTF-8 become "_" here: HDF5 and netCDF take names as UTF-8 strings and
    could not create the temporary otherwise (the rename gives the file its real name)."""
    path = Path(path)
    name = os.fsencode(path.name).decode("utf-8", "replace").replace("\ufffd", "_").replace("\\", "_")
    return path.with_name(f".{name}.tmp-{os.getpid()}-{os.urandom(3).hex()}")


def printable(text: str) -> str:
    """`text` (a file name) with bytes that are not UTF-8 written as escapes (\\xff), for attributes and
    messages: HDF5 and netCDF store UTF-8 and cannot take the surrogates Python carries such bytes as."""
    return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@contextlib.contextmanager
def library_path(path: str | Path):
    """A name of `path` that HDF5 and netCDF can open for reading. They take names as UTF-8 strings, so a file
    whose name is not UTF-8 (a byte such as 0xff, which Python carries as a surrogate) or holds a backslash
    (netCDF turns it into "/") is given to them as /proc/self/fd/N of a descriptor held open for the block."""
    text = str(path)
    try:
        text.encode("utf-8")
        if "\\" in text:
            raise UnicodeEncodeError("utf-8", text, 0, 1, "a backslash")
    except UnicodeEncodeError:
        fd = os.open(path, os.O_RDONLY)
        try:
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    yield path


def is_temp_name(path: str | Path) -> bool:
    name = Path(path).name
    return name.startswith(".") and ".tmp-" in name


def temp_owner(path: str | Path) -> int | None:
    """The pid that made a temporary name (None for other names), so a signal handler removes only its own."""
    name = Path(path).name
    if not is_temp_name(name):
        return None
    try:
        return int(name.rsplit(".tmp-", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return None


LIVE_TEMPS: set[Path] = set()  # temporaries this process is writing now (utils/interrupt.py removes them)


def remove_path(path: str | Path) -> None:
    """Remove a file or directory tree, whichever it is; a missing path is fine."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path to write; on success it is renamed to `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    LIVE_TEMPS.add(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        remove_path(tmp)
        raise
    finally:
        LIVE_TEMPS.discard(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def remove_stale_temps(directory: str | Path) -> list[Path]:
    """Delete temporaries an interrupted writer left behind (by any pid); returns what was removed."""
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for p in directory.iterdir():
        if is_temp_name(p):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


CHECKSUM = "xxh3_128"  # 21 GB/s per core here (sha256: 1.9), and it releases the GIL: copies stay I/O-bound


def new_hasher(algorithm: str = CHECKSUM):
    """A streaming hasher: xxhash's xxh3_128/xxh3_64/xxh64 (corruption checks at memory speed), else hashlib's."""
    import xxhash

    if algorithm in ("xxh3_128", "xxh3_64", "xxh64"):
        return getattr(xxhash, algorithm)()
    return hashlib.new(algorithm)


def read_blocks(path: str | Path, chunk: int = 8 << 20):
    """A file's bytes as successive views into one reused buffer (each valid until the next is taken): no
    allocation per block, and the buffer stays in cache for whatever consumes it."""
    buffer = memoryview(bytearray(chunk))
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            yield buffer[:n]


def file_checksum(path: str | Path, algorithm: str = CHECKSUM, chunk: int = 8 << 20) -> str:
    """Streaming checksum of a file's bytes."""
    h = new_hasher(algorithm)
    for block in read_blocks(path, chunk):
        h.update(block)
    return h.hexdigest()


def make_temp_dir(prefix: str = "exaclimate-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def out_of_space_message(e: OSError, needed: str | None = None) -> str | None:
    """One line for a full disk or quota (ENOSPC/EDQUOT, also as h5py words it), naming the file and the space
    left (and `needed`, what the command still had to write, when it knows); None for any other OSError. The
    file is the final name: temporaries are removed by `atomic_path`."""
    import errno
    import re

    text = str(e)
    if getattr(e, "errno", None) not in (errno.ENOSPC, errno.EDQUOT) and "No space left" not in text \
            and "Disk quota exceeded" not in text:
        return None
    name = e.filename or (re.search(r"filename = '([^']+)'", text) or [None, None])[1]
    if not name:
        return f"no space left on the device ({text.splitlines()[0][:200]})"
    path = Path(name)
    if is_temp_name(path):
        path = path.with_name(re.sub(r"^\.(.*)\.tmp-.*$", r"\1", path.name))
    try:
        free = f"{shutil.disk_usage(path.parent).free} bytes free"
    except OSError:
        free = "free space unknown"
    need = f"; {needed}" if needed else ""
    return (f"{path}: no space left on the device ({free} on {path.parent}{need}); the file was not written, "
            f"no temporary is left, the files already there are complete")
