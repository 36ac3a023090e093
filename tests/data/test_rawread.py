"""The raw-offset read is taken only where the offset provably holds the dataset's bytes: every read here
equals h5py's own read of the same file (the independent implementation), whatever the storage."""
import os

import h5py
import numpy as np
import pytest

from exascale_climate.data.samples import read_labels, read_sample
from exascale_climate.data.synthetic import weather_like
from exascale_climate.variables import VARIABLE_NAMES

H, W, C = 12, 18, 16


def _fields(seed):
    rng = np.random.default_rng(seed)
    return weather_like(rng.normal(size=(H, W, C))), rng.integers(0, 3, (H, W)).astype(np.uint8)


def _write(path, data, labels, *, userblock=0, time="2000-01-01T00:00:00", labels_first=False,
           variables=VARIABLE_NAMES, **data_kwargs):
    """A DeepCAM file written with plain h5py, so storage options the toolkit's writer never uses can be set."""
    with h5py.File(path, "w", userblock_size=userblock) if userblock else h5py.File(path, "w") as f:
        climate = f.create_group("climate")

        def put_labels():
            climate.create_dataset("labels_0", data=labels)

        if labels_first:
            put_labels()
        if data is None:  # declared, never written: no storage allocated (reads as the fill value)
            climate.create_dataset("data", shape=(H, W, len(variables)), dtype="f4", **data_kwargs)
        else:
            climate.create_dataset("data", data=data, **data_kwargs)
        if not labels_first:
            put_labels()
        climate.attrs["variables"] = np.array(variables, dtype=h5py.string_dtype())
        climate.attrs["time"] = time
        climate.create_dataset("lat", data=np.linspace(-90, 90, H))
        climate.create_dataset("pad", data=np.full(4096, 7.5, np.float64))  # bytes after the metadata
    return path


def _h5py_read(path):
    with h5py.File(path, "r") as f:
        return (f["climate/data"][()].astype(np.float32), f["climate/labels_0"][()],
                f["climate"].attrs["time"], f["climate/lat"][()])


def _assert_reads_like_h5py(path):
    """Twice: the first read learns the file, the second may take the known-file path."""
    data, labels, time, lat = _h5py_read(path)
    for _ in range(2):
        sample = read_sample(path)
        np.testing.assert_array_equal(sample.data, data)
        np.testing.assert_array_equal(sample.labels, labels)
        np.testing.assert_array_equal(read_labels(path), labels)
        assert sample.time == (time.decode() if isinstance(time, bytes) else time)
        np.testing.assert_array_equal(sample.lat, lat)


def test_an_unallocated_dataset_after_a_user_block_reads_as_h5py_does(tmp_path):
    """HDF5 reports offset 511 for it (undefined address + 512-byte user block); its bytes are not there."""
    _, labels = _fields(0)
    winds = ["U850", "V850", "UBOT", "VBOT"]  # one fill value plausible for every channel: 1.5 m/s
    path = _write(tmp_path / "data-ub.h5", None, labels, userblock=512, variables=winds, fillvalue=1.5)
    with h5py.File(path) as f:
        assert f["climate/data"].id.get_storage_size() == 0  # the case under test really is unallocated
    _assert_reads_like_h5py(path)
    assert (read_sample(path).data == 1.5).all()


def test_an_allocated_dataset_after_a_user_block(tmp_path):
    data, labels = _fields(1)
    _assert_reads_like_h5py(_write(tmp_path / "data-ub2.h5", data, labels, userblock=1024))


@pytest.mark.parametrize("storage", [
    {"chunks": (4, 6, 16)},
    {"compression": "gzip", "compression_opts": 1},
    {"dtype": ">f4"},
    {"dtype": "<f8"},
], ids=["chunked", "gzip", "big-endian", "float64"])
def test_other_storage_reads_as_h5py_does(tmp_path, storage):
    data, labels = _fields(2)
    _assert_reads_like_h5py(_write(tmp_path / "data-s.h5", data, labels, **storage))


def test_big_endian_labels(tmp_path):
    data, labels = _fields(3)
    path = tmp_path / "data-be.h5"
    _write(path, data, labels)
    with h5py.File(path, "r+") as f:
        del f["climate/labels_0"]
        f["climate"].create_dataset("labels_0", data=labels.astype(">i4"))
    _assert_reads_like_h5py(path)


@pytest.mark.parametrize("labels_first", [False, True], ids=["same-offsets", "moved-offsets"])
def test_a_file_rewritten_in_place_with_its_mtime_put_back_is_read_afresh(tmp_path, labels_first):
    """Same name, inode, size and mtime, other bytes (other values and time stamp; with the labels stored
    first every offset moved too): the read must not reuse what it learned about the old content."""
    path = _write(tmp_path / "data-same.h5", *_fields(4))
    other = _write(tmp_path / "other.h5", *_fields(5), time="2011-11-11T11:11:11", labels_first=labels_first)
    size = max(os.path.getsize(path), os.path.getsize(other))
    for p in (path, other):  # the case under test: the size does not tell (HDF5 ignores bytes past its end)
        os.truncate(p, size)
    _assert_reads_like_h5py(path)
    before = os.stat(path)
    with open(path, "r+b") as f:
        f.write(other.read_bytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    _assert_reads_like_h5py(path)


def test_a_dataset_reaching_past_the_end_of_the_file_is_refused_like_h5py_refuses_it(tmp_path):
    from exascale_climate.errors import DataError

    path = _write(tmp_path / "data-cut.h5", *_fields(6))
    with h5py.File(path) as f:
        end = f["climate/data"].id.get_offset() + f["climate/data"].id.get_storage_size()
    os.truncate(path, end - 100)  # the last 100 bytes of the fields are gone
    with pytest.raises(OSError):
        _h5py_read(path)
    with pytest.raises(DataError, match="data-cut.h5"):
        read_sample(path)
