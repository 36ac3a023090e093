"""Node-local staging: verified complete copies, each source file read once in total (also under 2 real
Horovod ranks standing for two nodes), resume after an interruption, corrupt and vanished sources reported."""
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from exascale_climate.cli import main
from exascale_climate.data.samples import read_sample
from exascale_climate.data.synthetic import weather_like
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
    import h5py

    with h5py.File(dst / "train" / "data-0000.h5") as f:  # PSL in Pa does not fit float16: stored in hPa
        assert f["climate/data"].dtype == np.float16
        assert [u.decode() if isinstance(u, bytes) else u for u in f["climate"].attrs["units"]] == ["kg m-2", "hPa"]
        np.testing.assert_allclose(f["climate/data"][..., 1], original.data[..., 1] / 100.0, rtol=1e-3)
    assert staged.variables == ["TMQ", "PSL"]  # read back in Pa
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
    # small exchange chunks: every file crosses in several collectives, the last ones uneven across ranks
    result = run_ranks(2, exaclimate("stage", "--src", str(dataset), "--dst", str(dst), "--ranks-per-node", "1",
                                     "--replicate", replicate, "--seed", "3", "--exchange-chunk-mb", "0.1"),
                       timeout=300)
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


def _one_rank_exchange(tmp_path, payload: bytes, claimed: bytes, sending_exists: bool = True):
    """The exchange's own code in a 1-rank world: this rank sends train/a.h5 and receives it as train/b.h5."""
    from exascale_climate.pipeline.staging import Collectives, _exchange_round
    from exascale_climate.utils.io import new_hasher
    from exascale_climate.utils.runtime import World

    node = tmp_path / "node"
    (node / "train").mkdir(parents=True)
    if sending_exists:
        (node / "train" / "a.h5").write_bytes(payload)
    digest = new_hasher(CHECKSUM)
    digest.update(claimed)
    copied = {"train/b.h5": {"size": len(claimed), "checksum": digest.hexdigest()}}
    received, errors = _exchange_round(Collectives(World()), node, "train/a.h5", [len(claimed)], {0: "train/b.h5"},
                                       copied, chunk=4096)
    return node, received, errors


def test_files_cross_in_chunks_in_order(tmp_path):
    from exascale_climate.pipeline.staging import Collectives
    from exascale_climate.utils.runtime import World

    payload = np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8).tobytes()
    (tmp_path / "a.h5").write_bytes(payload)
    pieces = [(sender, offset, bytes(view)) for sender, offset, view
              in Collectives(World()).allgather_files(tmp_path / "a.h5", [len(payload)], chunk=4096)]
    assert [(s, o, len(b)) for s, o, b in pieces] == [(0, 0, 4096), (0, 4096, 4096), (0, 8192, 1808)]
    assert b"".join(b for _, _, b in pieces) == payload


def test_the_exchange_chunk_shrinks_as_ranks_grow():
    """Every rank receives every rank's chunk, so the chunk keeps one collective's memory bounded."""
    from exascale_climate.pipeline.staging import EXCHANGE_GATHER_LIMIT, exchange_chunk_for

    assert exchange_chunk_for(2) == 16 << 20
    assert exchange_chunk_for(1024) * 1024 <= EXCHANGE_GATHER_LIMIT
    assert exchange_chunk_for(2, chunk=100_000) == 100_000
    assert exchange_chunk_for(1 << 20) == 64 << 10  # but never below 64 KiB per collective


def test_a_received_file_is_verified_then_renamed(tmp_path):
    payload = np.random.default_rng(1).integers(0, 256, 9_000, dtype=np.uint8).tobytes()
    node, received, errors = _one_rank_exchange(tmp_path, payload, payload)
    assert received == {0: "train/b.h5"} and not errors
    assert (node / "train" / "b.h5").read_bytes() == payload
    assert sorted(p.name for p in (node / "train").iterdir()) == ["a.h5", "b.h5"]  # no temporaries left


@pytest.mark.parametrize("sender", ["bytes-differ", "sender-file-vanished", "sender-file-shorter"])
def test_a_bad_received_file_is_named_and_leaves_nothing_behind(tmp_path, sender):
    """A copy whose bytes differ from the sender's checksum (or whose sender could not read it, or not to its
    listed end, and sent zeros so no rank hangs in the collective) is reported by name; neither it nor a
    temporary is left."""
    payload = np.random.default_rng(2).integers(1, 256, 9_000, dtype=np.uint8).tobytes()
    claimed = payload[:-1] + bytes([payload[-1] ^ 1])
    if sender == "sender-file-shorter":  # the sender's file ends inside the second chunk
        payload, claimed = payload[:5_000], payload
    node, received, errors = _one_rank_exchange(tmp_path, payload, claimed, sender != "sender-file-vanished")
    assert not received
    assert "checksum of the received copy differs" in errors["train/b.h5"]
    assert str(node / "train" / "b.h5") in errors["train/b.h5"]
    assert not any(p.name != "a.h5" for p in (node / "train").iterdir())


def test_a_killed_staging_run_resumes_from_its_journal(tmp_path, dataset_factory):
    """SIGKILL mid-way (no manifest written): the re-run keeps every file the killed run finished."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from exascale_climate.pipeline.staging import JOURNAL_NAME

    src = dataset_factory(tmp_path / "src", counts=(("train", 24),), grid=(192, 288))
    dst = tmp_path / "local"
    proc = subprocess.Popen([sys.executable, "-m", "exascale_climate.cli", "stage", "--src", str(src),
                             "--dst", str(dst)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = dst / JOURNAL_NAME
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if journal.is_file() and journal.read_text().count("\n") >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        pytest.skip("staging finished before it could be interrupted")
    assert not (dst / MANIFEST_NAME).exists()
    finished = {json.loads(line)["rel"] for line in journal.read_text().splitlines() if line.endswith("}")}
    manifest = stage(src, dst)
    reads = manifest["source_reads"]
    assert finished and all(reads[rel] == 0 for rel in finished)
    assert all(n == 1 for rel, n in reads.items() if rel not in finished)
    assert relative_files(dst) == relative_files(src)
    assert not journal.exists() and not any(p.name.startswith(".") for p in (dst / "train").iterdir())


def test_the_pipeline_reads_exactly_the_shard_staging_put_on_each_node(dataset, tmp_path):
    """Staged with `needed` for 2 nodes: each rank's training shard is local, computed from the global list."""
    from exascale_climate.config import load_config
    from exascale_climate.pipeline.dataset import split_files
    from exascale_climate.pipeline.sharding import shard as shard_of
    from exascale_climate.pipeline.staging import assign_copiers, list_source, needing_nodes
    from exascale_climate.utils.runtime import World

    files = list_source(dataset)
    needs = needing_nodes(files, [0, 1], "needed")
    # What two 1-rank nodes stage (the plan of the real 2-rank run, tested above), laid out by hand here:
    for node in range(2):
        root = tmp_path / f"node{node}"
        for f, nodes in zip(files, needs):
            if node in nodes:
                (root / f.rel).parent.mkdir(parents=True, exist_ok=True)
                (root / f.rel).write_bytes((dataset / f.rel).read_bytes())
        manifest = {"source_reads": {f.rel: 1 for f in files}, "node": {"files": []}}
        (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert assign_copiers(files, needs, [0, 1], seed=0)  # every file has a copier on a needing node
    cfg = load_config(None, [f"pipeline.stage_dir={tmp_path}/node{{node}}", "distributed.ranks_per_node=1"])
    for rank in range(2):
        world = World(rank=rank, size=2)  # nodes from the config's ranks_per_node=1: rank r on node r
        train = split_files(cfg, "train", world)
        assert len(train) == 6 and train[0].is_file()
        mine = shard_of(sorted(train), rank, 2)
        assert all(p.is_file() and p.parent.parent == tmp_path / f"node{rank}" for p in mine)
        assert len(split_files(cfg, "valid", world)) == 2


# ------------------------------------------- 4 ranks as 2 and 4 simulated nodes, observed by strace from outside
STAGINGS = [("n2-needed", 0, "needed"), ("n2-all", 0, "all"), ("n4-needed", 1, "needed"), ("n4-all", 1, "all")]
DRIVER = """
import sys
from pathlib import Path
from exascale_climate.pipeline.staging import stage
from exascale_climate.utils.runtime import init_world
src, work = sys.argv[1], Path(sys.argv[2])
rank = init_world().rank
for k, (name, ranks_per_node, replicate) in enumerate({stagings!r}):
    stage(src, str(work / name / "node{{node}}"), replicate=replicate, ranks_per_node=ranks_per_node, seed=k,
          exchange_chunk=1 << 20)
    open(work / f"stage-marker-{{k}}-{{rank}}", "w").close()
"""


def _descendants(pid: int) -> list[int]:
    """Every live process below `pid` (read from /proc), deepest last."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _expected_on_node(source: dict, node_ranks: list[int], size: int, replicate: str) -> set[str]:
    """What a node must hold, computed here from the sorted listing (rank r reads train files r, r+size, ...)."""
    train = sorted(rel for rel in source if rel.startswith("train/"))
    if replicate == "all":
        return set(source)
    return (set(source) - set(train)) | {rel for r in node_ranks for rel in train[r::size]}


@pytest.mark.slow
@pytest.mark.multirank
def test_four_ranks_stage_each_file_once_and_each_node_takes_in_only_what_it_lacks(tmp_path, dataset_factory):
    """4 Gloo ranks on 2 simulated hosts; stagings as 2 nodes (Horovod's hosts) and 4 nodes (--ranks-per-node 1),
    `needed` and `all`, the first one resuming a 4-rank run killed with SIGKILL. Observed by strace around the
    whole launch: which source files are opened, and the TCP bytes every rank process takes in."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from exascale_climate.pipeline.staging import JOURNAL_NAME
    from exascale_climate.utils.launch import launch_command, rank_env
    from strace_observer import traced_run

    src = dataset_factory(tmp_path / "src", counts=(("train", 12), ("valid", 2), ("test", 2)), grid=(192, 288))
    src = src.resolve()
    source = relative_files(src)
    sizes = {rel: (src / rel).stat().st_size for rel in source}
    work = (tmp_path / "work").resolve()
    hosts = "localhost:2,127.0.0.1:2"

    # 1. A 4-rank staging as 2 nodes, killed (SIGKILL, every process of the job) once files are verified.
    first = work / "n2-needed"
    killed = subprocess.Popen(launch_command(4, exaclimate("stage", "--src", str(src), "--dst", f"{first}/node{{node}}",
                                                           "--seed", "0", "--exchange-chunk-mb", "0.05"),
                                             hosts=hosts), env=rank_env(4), start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journals = [first / f"node{n}" / JOURNAL_NAME for n in range(2)]
    deadline = time.monotonic() + 300
    while killed.poll() is None and time.monotonic() < deadline:
        if sum(j.read_text().count("\n") for j in journals if j.is_file()) >= 3:
            for pid in [killed.pid, *_descendants(killed.pid)]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            break
        time.sleep(0.01)
    killed.wait()
    if killed.returncode != -signal.SIGKILL:
        pytest.skip("staging finished before it could be interrupted")
    verified = {}  # node -> files the killed run journaled as verified there
    for n, journal in enumerate(journals):
        lines = journal.read_text().splitlines() if journal.is_file() else []
        verified[n] = {json.loads(line)["rel"] for line in lines if line.endswith("}")}
    assert any(verified.values())

    # 2. One traced launch: the resume, then the other three stagings, a marker file after each.
    argv = launch_command(4, [sys.executable, "-c", DRIVER.format(stagings=STAGINGS), str(src), str(work)],
                          hosts=hosts)
    result, trace = traced_run(argv, tmp_path / "strace.txt", rank_env(4), timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:]
    parts = trace.segments("stage-marker-")
    assert len(parts) >= len(STAGINGS)
    # Which process is which rank: in the 4-node staging rank r writes only into node{r}.
    rank_of = {}
    for r in range(4):
        (process,) = parts[2].writers_under(work / "n4-needed" / f"node{r}")
        rank_of[process] = r
    assert sorted(rank_of.values()) == [0, 1, 2, 3]

    for k, (name, ranks_per_node, replicate) in enumerate(STAGINGS):
        part, nodes = parts[k], 4 if ranks_per_node else 2
        node_of = {process: (r if ranks_per_node else r // 2) for process, r in rank_of.items()}
        opened = part.reads_under(src)
        resumed = set().union(*verified.values()) if k == 0 else set()
        # each source file opened exactly once in total, none that a node already held verified
        assert opened == {rel: 1 for rel in source if rel not in resumed}, name
        tcp = part.tcp_bytes_by_process()
        for n in range(nodes):
            ranks = [r for r in range(4) if (r if ranks_per_node else r // 2) == n]
            expected = _expected_on_node(source, ranks, 4, replicate)
            staged = relative_files(work / name / f"node{n}")
            assert set(staged) == expected, (name, n)
            assert all(staged[rel] == source[rel] for rel in staged), (name, n)
            # bytes in over TCP: the files it needs, minus what it held verified and what its own ranks read
            own = {process for process, node in node_of.items() if node == n}
            read_here = {rel for process in own for tid, path, flags in part.opens
                         if trace.process_of(tid) == process and path.startswith(f"{src}/")
                         for rel in [path[len(str(src)) + 1:]]}
            held = verified[n] if k == 0 else set()
            ideal = sum(sizes[rel] for rel in expected - read_here - held)
            got = sum(tcp.get(process, 0) for process in own)
            assert ideal <= got <= ideal + (1 << 20) + ideal // 50, (name, n, got, ideal)


def write_mlperf_tree(root: Path, grid=(96, 144), n_train=4, n_valid=2) -> Path:
    """The MLPerf HPC DeepCAM tree as published, written by plain h5py: train/, validation/, stats.h5 at the
    top, `climate/data` (H, W, 16) and float32 `climate/labels_0`, no attributes."""
    import h5py

    rng = np.random.default_rng(0)
    h, w = grid
    moments = []
    for split, n in (("train", n_train), ("validation", n_valid)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            labels = np.zeros(grid, np.float32)
            labels[h // 5:h // 3, w // 5:w // 2] = 1.0
            labels[h // 2 + i:h // 2 + i + 8, :] = 2.0
            data = rng.normal(0.0, 1.0, (h, w, 16)).astype(np.float32)
            data[..., 0] += 2.0 * (labels == 2)
            data = weather_like(data)  # plausible weather: the read path checks ranges
            with h5py.File(root / split / f"data-2006-01-{i + 1:02d}-00-{split[0]}.h5", "w") as f:
                f.create_dataset("climate/data", data=data)
                f.create_dataset("climate/labels_0", data=labels)
            if split == "train":
                moments.append(data.reshape(-1, 16).astype(np.float64))
    x = np.concatenate(moments)
    with h5py.File(root / "stats.h5", "w") as f:
        for name, value in (("count", np.full(16, len(x), np.float64)), ("mean", x.mean(0)),
                            ("sqmean", (x * x).mean(0)), ("minval", x.min(0)), ("maxval", x.max(0))):
            f.create_dataset(f"climate/{name}", data=value)
    return root


@pytest.mark.slow
def test_the_published_mlperf_tree_stages_trains_one_step_and_evaluates(tmp_path):
    src = write_mlperf_tree(tmp_path / "mlperf")
    local = tmp_path / "local"
    result = CliRunner().invoke(main, ["stage", "--src", str(src), "--dst", str(local)])
    assert result.exit_code == 0, result.output
    assert relative_files(local) == relative_files(src)  # validation/ kept as published, stats.h5 on top
    run = tmp_path / "run"
    sets = [f"data.train_dir={src}/train", f"data.valid_dir={src}/validation", f"pipeline.stage_dir={local}",
            "data.channels=[TMQ,U850,V850,PSL]", "model.name=tiramisu", "model.tiramisu.down_layers=[1,1]",
            "model.tiramisu.up_layers=[1,1]", "model.tiramisu.bottleneck_layers=1",
            "model.tiramisu.growth_rate=8", "model.tiramisu.initial_filters=8", "train.batch_size=1",
            "train.epochs=1", "train.max_steps=1"]
    result = CliRunner().invoke(main, ["train", "--run-dir", str(run), *sum((["--set", s] for s in sets), [])])
    assert result.exit_code == 0, result.output
    final = json.loads(result.output.strip().splitlines()[-1])
    assert final["step"] == 1
    assert final["val_pixels"] == 2 * 96 * 144  # both validation/ samples, read from the staged copy
    assert f"{local}/train" in (run / "events.log").read_text()
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(run), "--data", str(local / "validation"),
                                       "--json", str(tmp_path / "eval.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["samples"] == 2


@pytest.mark.slow
@pytest.mark.multirank
def test_the_exchange_under_mpirun_four_ranks_as_two_nodes(tmp_path, dataset_factory):
    """The same exchange under mpirun (Horovod's MPI controller): exact files per node, each source file opened
    once (strace around mpirun and every rank)."""
    from exascale_climate.utils.launch import launch_command, rank_env
    from strace_observer import traced_run

    src = dataset_factory(tmp_path / "src", counts=(("train", 8), ("valid", 1), ("test", 1)), grid=(96, 144))
    src = src.resolve()
    dst = tmp_path / "node{node}"
    argv = launch_command(4, exaclimate("stage", "--src", str(src), "--dst", str(dst), "--ranks-per-node", "2",
                                        "--exchange-chunk-mb", "0.2", "--json"), controller="mpirun",
                          env_names=["PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL", "OMP_NUM_THREADS"])
    result, trace = traced_run(argv, tmp_path / "strace.txt", rank_env(4), timeout=900)
    assert result.returncode == 0, result.stdout[-3000:]
    source = relative_files(src)
    assert trace.reads_under(src) == {rel: 1 for rel in source}
    for n in range(2):
        staged = relative_files(tmp_path / f"node{n}")
        assert set(staged) == _expected_on_node(source, [2 * n, 2 * n + 1], 4, "needed")
        assert all(staged[rel] == source[rel] for rel in staged)


def test_train_ranks_shard_over_the_compute_ranks_only(dataset):
    """Hybrid: 6 ranks on 3 nodes, the first 4 read training data (the servers are ranks 4, 5): a training file i
    of the sorted list belongs to rank i % 4 (hand-computed), so node 2 holds no training file, every node the
    rest; a --train-ranks beyond the job's ranks is a one-line error."""
    from exascale_climate.pipeline.staging import needing_nodes

    files = list_source(dataset)
    needs = needing_nodes(files, [0, 0, 1, 1, 2, 2], "needed", train_ranks=4)
    train = [(f, n) for f, n in zip(files, needs) if f.split == "train"]
    assert [n for _, n in train] == [[0] if i % 4 in (0, 1) else [1] for i in range(len(train))]
    assert all(n == [0, 1, 2] for f, n in zip(files, needs) if f.split != "train")
    result = CliRunner().invoke(main, ["stage", "--src", str(dataset), "--dst", str(dataset.parent / "x"),
                                       "--train-ranks", "3"])
    assert result.exit_code != 0 and "--train-ranks: 3 is not in 0..1" in result.output
