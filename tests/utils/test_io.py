"""Atomic output: a failed writer leaves neither a half file nor its temporary behind."""
import pytest

from exascale_climate.utils.io import atomic_path, atomic_write_text, file_checksum, remove_stale_temps, temp_name


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_failed_write_keeps_old_content_and_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer died")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_stale_temps_are_removed(tmp_path):
    stale = temp_name(tmp_path / "data-1.h5")
    stale.write_bytes(b"partial")
    keep = tmp_path / "data-2.h5"
    keep.write_bytes(b"complete")
    assert remove_stale_temps(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data-2.h5"]


def test_checksum_depends_on_content(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 100)
    b.write_bytes(b"x" * 99 + b"y")
    assert file_checksum(a) != file_checksum(b)
    assert file_checksum(a) == file_checksum(a)
