"""Node-local staging: verified complete copies, each source file read once in total (also under 2 real
Horovod ranks standing for two nodes), resume after an interruption, corrupt and vanished sources reported."""
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from exascale_climate.cli import main
from exascale_climate.data.formats import read_sample
from exascale_climate.errors import DataError
from exascale_climate.pipeline.sharding import shard
from exascale_climate.pipeline.staging import CHECKSUM, MANIFEST_NAME, list_source, stage
from exascale_climate.utils.io import file_checksum
from exascale_climate.utils.launch import exaclimate, run_ranks


def relative_files(root: Path) -> dict[str, str]:
    """rel path -> checksum of every staged data file (the manifest itself excluded)."""
    return {str(p.relative_to(root)): file_checksum(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MANIFEST_NAME}


def test_single_process_staging_copies_everything_verified(dataset, tmp_path):
    dst = tmp_path / "local"
    manifest = stage(dataset, dst)
    assert relative_files(dst) == relative_files(dataset)
    assert set(manifest["source_reads"].values()) == {1}
    assert manifest["nodes"]["0"]["files"] == sorted(relative_files(dataset))
    node = json.loads((dst / MANIFEST_NAME).read_text())["node"]
    assert {e["rel"]: e["checksum"] for e in node["files"]} == {
        rel: file_checksum(dst / rel, CHECKSUM) for rel in relative_files(dataset)}
    assert manifest["throughput"]["gb_per_s"] > 0 and manifest["throughput"]["files_read"] == 11


def test_interrupted_staging_resumes_and_skips_verified_files(dataset, tmp_path):
    dst = tmp_path / "local"
    stage(dataset, dst)
    # An interruption: one copy never renamed (a partial temp file is left), one copy damaged afterwards.
    lost = dst / "train" / "data-0001.h5"
    partial = dst / "train" / ".data-0001.h5.tmp-999-abcdef"
    partial.write_bytes(lost.read_bytes()[:100])
    lost.unlink()
    damaged = dst / "valid" / "data-0006.h5"
    damaged.write_bytes(damaged.read_bytes()[:-10] + b"0123456789")
    manifest = stage(dataset, dst)
    reads = manifest["source_reads"]
    assert {rel for rel, n in reads.items() if n} == {"train/data-0001.h5", "valid/data-0006.h5"}
    assert set(reads.values()) == {0, 1}
    assert manifest["throughput"]["resumed_files"] == 9
    assert not partial.exists()
    assert relative_files(dst) == relative_files(dataset)


def test_a_changed_source_is_staged_again(dataset, tmp_path):
    dst = tmp_path / "local"
    stage(dataset, dst)
    source = dataset / "test" / "data-0008.h5"
    source.write_bytes(source.read_bytes())  # same bytes, new mtime: the copy can no longer be trusted
    manifest = stage(dataset, dst)
    assert [rel for rel, n in manifest["source_reads"].items() if n] == ["test/data-0008.h5"]


def test_a_corrupt_source_file_is_reported_by_name_and_the_rest_staged(dataset, tmp_path):
    bad = dataset / "train" / "data-0003.h5"
    bad.write_bytes(b"\x00garbage" * 50)
    dst = tmp_path / "local"
    with pytest.raises(DataError, match="train/data-0003.h5") as err:
        stage(dataset, dst)
    assert "1 file(s) could not be staged" in str(err.value)
    assert not (dst / "train" / "data-0003.h5").exists()
    assert (dst / "train" / "data-0004.h5").is_file()
    manifest = json.loads((dst / MANIFEST_NAME).read_text())
    assert list(manifest["errors"]) == ["train/data-0003.h5"]
    result = CliRunner().invoke(main, ["stage", "--src", str(dataset), "--dst", str(dst)])
    assert result.exit_code == 2 and "data-0003.h5" in result.output


def test_a_vanished_source_file_is_reported_by_name(dataset, tmp_path, monkeypatch):
    import exascale_climate.pipeline.staging as staging

    listing = list_source(dataset)
    (dataset / "valid" / "data-0007.h5").unlink()  # disappears between listing and copying
    monkeypatch.setattr(staging, "list_source", lambda src: listing)
    with pytest.raises(DataError, match="valid/data-0007.h5.*vanished"):
        stage(dataset, tmp_path / "local")


def test_conversion_on_the_way_keeps_a_channel_subset_in_float16(dataset, tmp_path):
    dst = tmp_path / "local"
    manifest = stage(dataset, dst, channels=["TMQ", "PSL"], dtype="float16")
    assert set(manifest["source_reads"].values()) == {1}
    staged = read_sample(dst / "train" / "data-0000.h5")
    original = read_sample(dataset / "train" / "data-0000.h5", channels=["TMQ", "PSL"])
    assert staged.variables == ["TMQ", "PSL"] and staged.data.dtype == np.float16
    np.testing.assert_allclose(staged.data, original.data, rtol=1e-3)
    np.testing.assert_array_equal(staged.labels, original.labels)
    from exascale_climate.data.stats import read_stats

    assert read_stats(dst / "stats.h5").variables == ["TMQ", "PSL"]


def test_missing_source_is_a_one_line_cli_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["stage", "--src", str(tmp_path / "empty"), "--dst", str(tmp_path / "d")])
    assert result.exit_code == 2 and "nothing to stage" in result.output


@pytest.mark.multirank
@pytest.mark.parametrize("replicate", ["needed", "all"])
def test_two_ranks_as_two_nodes_read_every_source_file_once(dataset, tmp_path, replicate):
    dst = tmp_path / "node{node}"
    result = run_ranks(2, exaclimate("stage", "--src", str(dataset), "--dst", str(dst), "--ranks-per-node", "1",
                                     "--replicate", replicate, "--seed", "3"), timeout=300)
    assert result.returncode == 0, result.stdout
    source = relative_files(dataset)
    train = sorted(rel for rel in source if rel.startswith("train/"))
    manifests = [json.loads((tmp_path / f"node{n}" / MANIFEST_NAME).read_text()) for n in range(2)]
    for n in range(2):
        staged = relative_files(tmp_path / f"node{n}")
        if replicate == "all":
            expected = set(source)
        else:
            expected = (set(source) - set(train)) | set(shard(train, n, 2))
        assert set(staged) == expected
        assert all(staged[rel] == source[rel] for rel in staged)  # verified, byte-identical copies
        assert {e["rel"] for e in manifests[n]["node"]["files"]} == expected
    assert manifests[0]["source_reads"] == {rel: 1 for rel in manifests[0]["source_reads"]}
    assert set(manifests[0]["source_reads"]) == set(source)
    assert manifests[0]["throughput"]["swapped_bytes"] > 0  # nodes did exchange files over Horovod
