"""Node-local staging: copy the dataset from the shared file system to every node, reading each file once.

The paper's scheme: rank 0 lists the source and broadcasts a seeded plan; every file is read from the shared
file system by exactly one rank (on a node that needs it); then each copier sends its file only to the other
nodes that need it and lack it, one Horovod alltoall with per-rank splits per chunk (pairwise sends under Gloo
and MPI), so each file crosses the network once per node that needs it and each node holds what its ranks
will read (`needed`: the training shards of its ranks plus valid/test/stats.h5; `all`: everything). The old
allgather (every rank receives every file) stays as `exchange="allgather"`, the benchmark's baseline. Each
rank reports the bytes it read from the source, sent and received. Each copy is verified (size + checksum),
written to a temporary name and renamed; a re-run skips files the node-local manifest proves are already there.
The manifest records where every file is and how often each source file was read.

Nodes are the World's (Horovod's hosts, or the checked `ranks_per_node` override); on one machine `dst` may
contain `{node}`. The MLPerf HPC DeepCAM tree (`validation/`) stages as published.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from exascale_climate.data.layouts import STATS_FILE
from exascale_climate.data.split import SPLIT_DIRS, SPLITS, split_dir
from exascale_climate.errors import ConfigError, DataError
from exascale_climate.pipeline.sharding import shard_owner
from exascale_climate.utils.io import (CHECKSUM, atomic_path, atomic_write_text, file_checksum, new_hasher,
                                       read_blocks, remove_stale_temps, temp_name)
from exascale_climate.utils.log import get_logger
from exascale_climate.utils.progress import progress_bar
from exascale_climate.utils.runtime import World, init_world

log = get_logger("stage")

MANIFEST_NAME = "stage-manifest.json"
JOURNAL_NAME = ".stage-journal.jsonl"  # one line per finished file, so a killed run's work is not lost
VERIFY_MODES = ("full", "checksum", "size")
CHUNK = 8 << 20
EXCHANGE_CHUNK = 16 << 20  # bytes per rank per collective in the exchange (see Collectives.allgather_files)
EXCHANGE_GATHER_LIMIT = 256 << 20  # bytes one collective gathers from all ranks: the chunk shrinks as ranks grow


def exchange_chunk_for(ranks: int, chunk: int = EXCHANGE_CHUNK) -> int:
    """Bytes per rank per exchange collective: `chunk`, but no more than a share of EXCHANGE_GATHER_LIMIT, since
    every rank receives every rank's chunk (1024 ranks x 16 MiB would be 16 GiB per rank)."""
    return max(64 << 10, min(chunk, EXCHANGE_GATHER_LIMIT // max(1, ranks)))


# ------------------------------------------------------------------------------------------- source
@dataclass
class SourceFile:
    rel: str  # path relative to the source root (kept at the destination)
    split: str  # train | valid | test | stats (valid/ or the MLPerf tree's validation/ on disk)
    size: int
    mtime: float


def list_source(src: str | Path) -> list[SourceFile]:
    """train/, valid/ (or validation/, as in the MLPerf HPC DeepCAM tree), test/ samples and stats.h5 of a
    prepared dataset directory, in a fixed order; paths stay as they are in the source."""
    from exascale_climate.data.layouts import list_samples

    src = Path(src)
    if not src.is_dir():
        raise DataError(src, "no such source directory")
    files = []
    for split in SPLITS:
        directory = split_dir(src, split)
        if directory is not None:
            for p in list_samples(directory):
                st = p.stat()
                files.append(SourceFile(f"{directory.name}/{p.name}", split, st.st_size, st.st_mtime))
    if (src / STATS_FILE).is_file():
        st = (src / STATS_FILE).stat()
        files.append(SourceFile(STATS_FILE, "stats", st.st_size, st.st_mtime))
    if not files:
        names = "/, ".join(n for split in SPLITS for n in SPLIT_DIRS[split])
        raise DataError(src, f"nothing to stage: no {names}/ data-*.h5 samples and no {STATS_FILE}")
    return files


# --------------------------------------------------------------------------------------------- plan
def needing_nodes(files: list[SourceFile], node_of_rank: list[int], replicate: str,
                  train_ranks: int = 0) -> list[list[int]]:
    """For each file, the nodes that must hold it: its training shard's node, or every node.

    `train_ranks` > 0: only the first `train_ranks` ranks read training data (hybrid mode: the compute groups;
    the parameter servers, the last ranks, read none), so the shards are over those ranks."""
    nodes = sorted(set(node_of_rank))
    size = train_ranks or len(node_of_rank)
    train = [f for f in files if f.split == "train"]
    train_index = {f.rel: i for i, f in enumerate(train)}
    out = []
    for f in files:
        if replicate == "needed" and f.split == "train":
            out.append([node_of_rank[shard_owner(train_index[f.rel], size)]])
        else:
            out.append(nodes)
    return out


def assign_copiers(files: list[SourceFile], needs: list[list[int]], node_of_rank: list[int],
                   seed: int) -> list[int]:
    """Which rank reads each file from the source: a rank on a node that needs it, balancing bytes.

    Files are visited in a seeded order and given to the least-loaded eligible rank, so the plan is the same
    on every rank and for every re-run with the same seed.
    """
    load = np.zeros(len(node_of_rank))
    copier = [-1] * len(files)
    for i in np.random.default_rng(seed).permutation(len(files)):
        eligible = [r for r, n in enumerate(node_of_rank) if n in needs[i]]
        r = min(eligible, key=lambda k: (load[k], k))
        copier[i] = r
        load[r] += files[i].size
    return copier


# ------------------------------------------------------------------------------------- collectives
class Collectives:
    """The few collectives staging needs; a 1-rank world needs no Horovod at all."""

    def __init__(self, world: World):
        self.world = world
        self.hvd = world.hvd if world.distributed else None
        self._count = 0
        self.sent_bytes = self.received_bytes = self.messages = 0  # file payload of the exchange, this rank

    def _name(self, what: str) -> str:
        self._count += 1
        return f"stage.{what}.{self._count}"

    def broadcast(self, obj):
        return obj if self.hvd is None else self.hvd.broadcast_object(obj, root_rank=0, name=self._name("bcast"))

    def allgather(self, obj) -> list:
        return [obj] if self.hvd is None else self.hvd.allgather_object(obj, name=self._name("gather"))

    def allgather_files(self, path: Path | None, sizes: list[int], chunk: int = EXCHANGE_CHUNK,
                        dests: list[int] | None = None):
        """The old exchange, kept as the benchmark's baseline: every rank's file to every rank (an allgather),
        whatever the needs. Yields (sender, offset, bytes view) in file order; a view is valid until the next one
        is taken.

        `path` is this rank's file (None: nothing to send), `sizes[r]` what rank r sends (known to all). The
        files go `chunk` bytes per rank per allgather, read into one reused buffer and handed on as views of
        the gathered tensor, so memory stays at a few chunks whatever the file size. A file that cannot be read
        is sent as zeros from there on, so no rank is left waiting in a collective; the receivers' size and
        checksum checks then reject and name it. `dests` is ignored (everyone receives everything).
        """
        for offset, piece in self._pieces(path, sizes[self.world.rank], max(sizes, default=0), chunk):
            if self.hvd is None:
                gathered = piece
            else:
                import tensorflow as tf

                gathered = np.asarray(self.hvd.allgather(tf.constant(piece), name=self._name("file")))
            self.messages += 1
            others = self.world.size - 1
            self.sent_bytes += len(piece) * others
            start = 0
            for sender, size in enumerate(sizes):
                m = max(0, min(chunk, size - offset))
                if m:
                    if sender != self.world.rank:
                        self.received_bytes += m
                    yield sender, offset, gathered[start:start + m]
                start += m

    def alltoall_files(self, path: Path | None, sizes: list[int], chunk: int = EXCHANGE_CHUNK,
                       dests: list[list[int]] | None = None):
        """Each rank's file only to the ranks that need it: one Horovod alltoall with per-rank splits per chunk
        (pairwise sends under Gloo and MPI), so a file crosses the network once per receiving rank.

        `dests[r]` are the ranks rank r sends to (known to all, from the round's plan); yields what reaches
        this rank as (sender, offset, bytes view), like `allgather_files`. Memory per rank: `chunk` times the
        number of ranks it sends to plus those it receives from (at most the world: see exchange_chunk_for).
        """
        me = self.world.rank
        dests = dests or [[] for _ in sizes]
        mine = sorted(set(dests[me]))
        senders = [r for r in range(len(sizes)) if me in dests[r]]
        longest = max((sizes[r] for r in range(len(sizes)) if dests[r]), default=0)
        for offset, piece in self._pieces(path if mine else None, sizes[me] if mine else 0, longest, chunk):
            n = len(piece)
            splits = [n if r in mine else 0 for r in range(self.world.size)]
            payload = np.tile(piece, len(mine)) if len(mine) > 1 else (piece if mine else piece[:0])
            if self.hvd is None:
                received = payload
            else:
                import tensorflow as tf

                out, _ = self.hvd.alltoall(tf.constant(payload), splits=tf.constant(splits, tf.int32),
                                           name=self._name("a2a"))
                received = np.asarray(out)
            self.messages += 1
            self.sent_bytes += sum(splits[r] for r in range(self.world.size) if r != me)
            start = 0
            for sender in senders:
                m = max(0, min(chunk, sizes[sender] - offset))
                if m:
                    if sender != me:
                        self.received_bytes += m
                    yield sender, offset, received[start:start + m]
                start += m

    def _pieces(self, path: Path | None, own: int, longest: int, chunk: int):
        """(offset, this rank's piece at offset) for offset = 0, chunk, ... < longest: the same number of steps
        on every rank. An unreadable file, or one shorter than listed, is sent as zeros from there on."""
        blocks = read_blocks(path, min(chunk, own)) if path is not None and own else iter(())
        try:
            for offset in range(0, longest, chunk):
                n = max(0, min(chunk, own - offset))
                try:
                    block = next(blocks, b"") if n else b""
                except OSError as e:
                    log.error("cannot send %s: %s", path, e)
                    block = b""
                piece = np.frombuffer(block, np.uint8)
                if len(piece) != n:  # unreadable, or shorter than listed: zeros from here on
                    piece = np.concatenate([piece, np.zeros(n - len(piece), np.uint8)])
                    blocks = iter(())
                yield offset, piece
        finally:
            getattr(blocks, "close", lambda: None)()  # read_blocks closes its file


EXCHANGES = ("alltoall", "allgather")


# ------------------------------------------------------------------------------------------- copies
@dataclass
class Conversion:
    """The paper's optional conversions on the way: a channel subset and/or float16 fields."""

    channels: list[str] | None = None
    dtype: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.channels) or self.dtype not in (None, "float32")

    def describe(self) -> dict:
        return {"channels": self.channels or None, "dtype": self.dtype or None}


def _check_size(src: Path, copied: int, expected: int) -> None:
    if copied != expected:
        raise DataError(src, f"copied {copied} bytes but the listing said {expected}; the source changed or is "
                             "truncated")


def _copy_file(src: Path, dst: Path, expected_size: int, verify: str) -> str:
    """Copy one file (one read of the source) to a temp name, verify, rename; returns the copy's checksum.

    verify "full": hash the bytes as they are read from the source, then re-read the copy and compare (an
    end-to-end check). "checksum": kernel copy (sendfile, like cp), then record the copy's checksum for resume
    and exchange. "size": kernel copy, size check only (no checksum; the fastest).
    All modes check the size against the listing and that the copy opens as a sample / stats file.
    """
    with atomic_path(dst) as tmp:
        if verify == "full":
            digest = new_hasher(CHECKSUM)
            with open(tmp, "wb") as fout:
                for block in read_blocks(src, CHUNK):
                    digest.update(block)
                    fout.write(block)
            checksum = digest.hexdigest()
            _check_size(src, os.path.getsize(tmp), expected_size)
            if file_checksum(tmp, CHECKSUM) != checksum:
                raise DataError(dst, "checksum of the copy differs from the bytes read from the source")
        else:
            shutil.copyfile(src, tmp)
            _check_size(src, os.path.getsize(tmp), expected_size)
            checksum = file_checksum(tmp, CHECKSUM) if verify == "checksum" else ""
        _check_readable(tmp, src)
    return checksum


def _check_readable(path: Path, name: Path) -> None:
    """A copied sample or stats file must open as what it claims to be (catches corrupt sources)."""
    from exascale_climate.data.layouts import time_steps
    from exascale_climate.data.stats import read_stats

    try:
        if name.name == STATS_FILE:
            read_stats(path)
        else:
            time_steps(path)  # the layout; a netCDF file is opened too (its signature alone says little)
    except DataError as e:
        raise DataError(name, str(e).split(": ", 1)[-1]) from None


def _convert(src: Path, dst: Path, f: SourceFile, conversion: Conversion) -> str:
    """Read, subset/cast, write atomically (the source is still read once); returns the copy's checksum."""
    from exascale_climate.data.samples import read_sample
    from exascale_climate.data.writers import write_deepcam_sample
    from exascale_climate.data.stats import read_stats, write_stats

    if f.split == "stats":
        write_stats(dst, read_stats(src).select(conversion.channels))
    else:
        s = read_sample(src, channels=conversion.channels)
        write_deepcam_sample(dst, s.data, s.labels, s.variables, source=s.attrs.get("source", str(src)),
                             time=s.time, lat=s.lat, lon=s.lon, dtype=conversion.dtype or "float32")
    return file_checksum(dst, CHECKSUM)


def _exchange_round(comm: Collectives, my_dir: Path, sending: str | None, sizes: list[int],
                    incoming: dict[int, str], copied: dict, chunk: int = EXCHANGE_CHUNK,
                    dests: list[list[int]] | None = None, exchange: str = "alltoall"
                    ) -> tuple[dict[int, str], dict[str, str]]:
    """One exchange round: every rank streams the file it sends (`sending`, relative to `my_dir`) to the ranks
    `dests[rank]` (default: all); the files this rank takes (`incoming`: sender -> rel) are written to temporary
    names as they arrive, checked against the sender's size and checksum and renamed. Returns (sender -> rel
    received, rel -> error). Errors are collected, never raised, because every rank must stay in the round's
    collectives. `exchange` "allgather" is the old scheme (everyone receives everything), for benchmarks."""
    if dests is None:
        dests = [list(range(len(sizes))) for _ in sizes]
    stream = comm.alltoall_files if exchange == "alltoall" else comm.allgather_files
    temps, outs, errors = {}, {}, {}
    for sender, rel in incoming.items():
        temps[sender] = temp_name(my_dir / rel)
        try:
            temps[sender].parent.mkdir(parents=True, exist_ok=True)
            outs[sender] = open(temps[sender], "wb")
        except OSError as e:
            errors[rel] = f"{my_dir / rel}: cannot write the received copy ({e})"
    try:
        for sender, _, piece in stream(my_dir / sending if sending else None, sizes, chunk, dests):
            out = outs.get(sender)
            if out is None:
                continue
            try:
                out.write(piece)
            except OSError as e:
                errors[incoming[sender]] = f"{my_dir / incoming[sender]}: cannot write the received copy ({e})"
                outs.pop(sender).close()
    finally:
        for out in outs.values():
            out.close()
    received = {}
    for sender, rel in incoming.items():
        entry, temp = copied[rel], temps[sender]
        try:
            if rel in errors:
                continue
            if os.path.getsize(temp) != entry["size"]:
                errors[rel] = f"{my_dir / rel}: size of the received copy differs from the sender's"
            elif entry["checksum"] and file_checksum(temp, CHECKSUM) != entry["checksum"]:
                errors[rel] = f"{my_dir / rel}: checksum of the received copy differs from the sender's"
            else:
                os.replace(temp, my_dir / rel)
                received[sender] = rel
        except OSError as e:
            errors[rel] = f"{my_dir / rel}: cannot verify the received copy ({e})"
        finally:
            temp.unlink(missing_ok=True)
    return received, errors


# ----------------------------------------------------------------------------------------- manifest
def node_dir(dst: str, node: int) -> Path:
    """`dst` with `{node}` replaced by the node index (simulated nodes on one machine)."""
    return Path(dst.replace("{node}", str(node)))


def _journal(directory: Path, entry: dict) -> None:
    """Record one finished file (a single O_APPEND write of one short line: safe from several local ranks)."""
    with open(directory / JOURNAL_NAME, "a") as f:
        f.write(json.dumps(entry) + "\n")


def _previous_entries(directory: Path) -> dict[str, dict]:
    """Files earlier runs recorded for this node: the last manifest, then the journal of a run that was killed
    before writing its manifest (a torn last line is ignored)."""
    entries = {}
    try:
        entries.update({e["rel"]: e for e in json.loads((directory / MANIFEST_NAME).read_text())["node"]["files"]})
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        lines = (directory / JOURNAL_NAME).read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            entry = json.loads(line)
            entries[entry["rel"]] = entry
        except (ValueError, KeyError, TypeError):
            continue
    return entries


def _already_staged(directory: Path, f: SourceFile, previous: dict, conversion: Conversion) -> dict | None:
    """The previous entry when the copy is still verified: same source size/mtime, conversion and checksum."""
    entry = previous.get(f.rel)
    target = directory / f.rel
    if not entry or not target.is_file():
        return None
    if (entry.get("source_size"), entry.get("source_mtime"), entry.get("conversion")) != (
            f.size, f.mtime, conversion.describe()):
        return None
    if target.stat().st_size != entry.get("size"):
        return None
    if entry.get("checksum") and file_checksum(target, CHECKSUM) != entry["checksum"]:
        return None
    return entry


# -------------------------------------------------------------------------------------------- stage
def stage(src: str | Path, dst: str | Path, *, replicate: str = "needed", seed: int = 0, world: World | None = None,
          ranks_per_node: int = 0, channels: list[str] | None = None, dtype: str | None = None,
          verify: str = "full", copy_threads: int = 2, exchange_chunk: int = EXCHANGE_CHUNK,
          exchange: str = "alltoall", train_ranks: int = 0) -> dict:
    """Stage `src` to node-local `dst` (see the module docstring); returns the manifest (same on all ranks)."""
    if exchange not in EXCHANGES:
        raise ConfigError(f"--exchange: {exchange!r} is not allowed; choose one of {', '.join(EXCHANGES)}")
    if replicate not in ("needed", "all"):
        raise ConfigError(f"--replicate: {replicate!r} is not allowed; choose needed or all")
    if verify not in VERIFY_MODES:
        raise ConfigError(f"--verify: {verify!r} is not allowed; choose one of {', '.join(VERIFY_MODES)}")
    if exchange_chunk < 1:
        raise ConfigError(f"--exchange-chunk-mb: must be positive, got {exchange_chunk / 2**20:g} MiB")
    world = (world or init_world()).with_ranks_per_node(ranks_per_node)
    if not 0 <= train_ranks <= world.size:
        raise ConfigError(f"--train-ranks: {train_ranks} is not in 0..{world.size} (the ranks of this staging job)")
    comm = Collectives(world)
    conversion = Conversion(list(channels) if channels else None, dtype)
    t_start = time.perf_counter()

    my_node = world.node
    node_of_rank = comm.allgather(my_node)
    nodes = sorted(set(node_of_rank))
    writer_of_node = {n: node_of_rank.index(n) for n in nodes}  # lowest rank of each node
    dst = str(dst)
    my_dir = node_dir(dst, my_node)
    i_write_node = writer_of_node[my_node] == world.rank

    plan = None
    if world.is_root:
        try:
            files = list_source(src)
            needs = needing_nodes(files, node_of_rank, replicate, train_ranks)
            plan = {"files": [asdict(f) for f in files], "needs": needs,
                    "copier": assign_copiers(files, needs, node_of_rank, seed)}
        except DataError as e:
            plan = {"error": str(e)}
    plan = comm.broadcast(plan)
    if "error" in plan:
        raise DataError(src, plan["error"].split(": ", 1)[-1])
    files = [SourceFile(**f) for f in plan["files"]]
    needs, copier = plan["needs"], plan["copier"]

    # Resume: the node's writer checks what a previous run left verified, and clears stale temporaries.
    present = {}
    if i_write_node:
        my_dir.mkdir(parents=True, exist_ok=True)
        for sub in [my_dir, *(my_dir / name for names in SPLIT_DIRS.values() for name in names)]:
            remove_stale_temps(sub)
        previous = _previous_entries(my_dir)
        for i, f in enumerate(files):
            if my_node in needs[i]:
                entry = _already_staged(my_dir, f, previous, conversion)
                if entry:
                    present[f.rel] = {**entry, "how": "resumed"}
    # A full node-local disk is found before the first byte is copied: the space the missing files need vs free.
    short = None
    if i_write_node and not conversion.active:  # a conversion changes the sizes; its ENOSPC is reported per file
        need = sum(f.size for i, f in enumerate(files) if my_node in needs[i] and f.rel not in present)
        free = shutil.disk_usage(my_dir).free
        if need > free:
            short = f"{my_dir}: not enough space to stage: {need} bytes needed, {free} bytes free; nothing was copied"
    shorts = [m for m in comm.allgather(short) if m]
    if shorts:
        raise DataError(Path(shorts[0].split(": ", 1)[0]), shorts[0].split(": ", 1)[1])
    present_of_rank = comm.allgather(present)
    present_by_node = {n: present_of_rank[writer_of_node[n]] for n in nodes}
    # A file some node already holds verified is sent from there: a resumed run re-reads nothing verified.
    for i, f in enumerate(files):
        holders = [n for n in needs[i] if f.rel in present_by_node[n]]
        if holders and node_of_rank[copier[i]] not in holders:
            copier[i] = writer_of_node[holders[0]]

    # Phase 1: every file some needing node lacks is read from the source exactly once, by its copier.
    t_copy = time.perf_counter()
    mine = [i for i, f in enumerate(files) if copier[i] == world.rank
            and any(f.rel not in present_by_node[n] for n in needs[i])]
    results, errors, source_reads = {}, {}, {}

    def copy_one(f: SourceFile) -> dict:
        local = present_by_node[my_node].get(f.rel)
        if local is not None:  # this node has it already: send from the local copy, not the source
            return local
        source_reads[f.rel] = source_reads.get(f.rel, 0) + 1
        source, target = Path(src) / f.rel, my_dir / f.rel
        if not source.is_file():
            raise DataError(source, "vanished from the source since it was listed")
        checksum = (_convert(source, target, f, conversion) if conversion.active
                    else _copy_file(source, target, f.size, verify))
        entry = {"rel": f.rel, "size": target.stat().st_size, "checksum": checksum, "source_size": f.size,
                 "source_mtime": f.mtime, "conversion": conversion.describe(), "how": "copied", "by": world.rank}
        _journal(my_dir, entry)
        return entry

    # A few copy threads overlap one file's checksum with another's I/O (both release the GIL).
    with progress_bar(f"staging {len(mine)} files", len(mine)) as advance, \
            ThreadPoolExecutor(max(1, copy_threads)) as pool:
        futures = {files[i].rel: pool.submit(copy_one, files[i]) for i in mine}
        for rel, future in futures.items():
            try:
                results[rel] = future.result()
            except (DataError, OSError) as e:
                errors[rel] = str(e)
                log.error("cannot stage %s: %s", rel, e)
            advance(1)
    copy_seconds = time.perf_counter() - t_copy
    gathered = comm.allgather({"results": results, "errors": errors, "reads": source_reads,
                               "copy_seconds": copy_seconds})
    copied = {rel: r for g in gathered for rel, r in g["results"].items()}
    all_errors = {rel: msg for g in gathered for rel, msg in g["errors"].items()}

    # Phase 2: copiers send their files to the other nodes that need them, one file per rank per round.
    t_swap = time.perf_counter()
    outgoing = {r: [] for r in range(world.size)}
    for i, f in enumerate(files):
        entry = copied.get(f.rel)
        if entry is None:
            continue
        targets = [n for n in needs[i] if n != node_of_rank[copier[i]] and f.rel not in present_by_node[n]]
        if targets:
            outgoing[copier[i]].append((f.rel, targets))
    # The ideal: a node takes in exactly the files it needs, lacks and did not read itself.
    ideal = {n: 0 for n in nodes}
    for items in outgoing.values():
        for rel, targets in items:
            for n in targets:
                ideal[n] += copied[rel]["size"]
    received = {}
    swap_bytes = 0
    rounds = max((len(v) for v in outgoing.values()), default=0)
    for k in range(rounds):
        item = outgoing[world.rank][k] if k < len(outgoing[world.rank]) else None
        meta = comm.allgather(item)
        sizes = [copied[sent[0]]["size"] if sent else 0 for sent in meta]
        incoming = {sender: sent[0] for sender, sent in enumerate(meta)
                    if sent and i_write_node and my_node in sent[1]}
        dests = [[writer_of_node[n] for n in sent[1]] if sent else [] for sent in meta]
        got, failed = _exchange_round(comm, my_dir, item[0] if item else None, sizes, incoming, copied,
                                      exchange_chunk_for(world.size, exchange_chunk), dests, exchange)
        errors.update(failed)
        for sender, rel in got.items():
            received[rel] = {**copied[rel], "how": f"received from rank {sender}"}
            _journal(my_dir, received[rel])
            swap_bytes += copied[rel]["size"]
    swap_seconds = time.perf_counter() - t_swap

    # Manifest: what is on each node, how often each source file was read, throughput.
    node_files = {}
    if i_write_node:
        mine_now = dict(present_by_node[my_node])
        mine_now.update({rel: e for rel, e in copied.items()
                         if e["how"] == "copied" and node_of_rank[e["by"]] == my_node})
        mine_now.update(received)
        node_files = {rel: mine_now[rel] for rel in sorted(mine_now)}
    my_read = sum(f.size * source_reads.get(f.rel, 0) for f in files)
    final = comm.allgather({"node": my_node, "writer": i_write_node, "files": node_files, "errors": errors,
                            "swap_bytes": swap_bytes, "rank": world.rank, "source_bytes": my_read,
                            "sent_bytes": comm.sent_bytes, "received_bytes": comm.received_bytes,
                            "messages": comm.messages})
    for g in final:
        all_errors.update(g["errors"])
    reads = {f.rel: 0 for f in files}
    for g in gathered:
        for rel, n in g["reads"].items():
            reads[rel] += n
    wall = time.perf_counter() - t_start
    read_bytes = sum(f.size for f in files if reads[f.rel])
    manifest = {
        "source": str(Path(src).resolve()), "destination": dst, "replicate": replicate, "seed": seed,
        "train_ranks": train_ranks or world.size,
        "ranks": world.size, "nodes": {str(g["node"]): {"dir": str(node_dir(dst, g["node"])),
                                                        "files": sorted(g["files"])}
                                       for g in final if g["writer"]},
        "conversion": conversion.describe(), "verify": verify, "checksum": CHECKSUM, "source_reads": reads,
        "errors": all_errors,
        "throughput": {
            "seconds": wall, "copy_seconds": max(g["copy_seconds"] for g in gathered),
            "swap_seconds": swap_seconds, "source_bytes": read_bytes,
            "files_read": sum(1 for n in reads.values() if n),
            "swapped_bytes": sum(g["swap_bytes"] for g in final),
            "resumed_files": sum(len(p) for p in present_by_node.values()),
            "gb_per_s": read_bytes / wall / 1e9 if wall else 0.0,
            "files_per_s": sum(1 for n in reads.values() if n) / wall if wall else 0.0,
        },
        "transfer": _transfer_report(final, ideal, exchange, exchange_chunk_for(world.size, exchange_chunk)),
    }
    if i_write_node:
        node_manifest = {**manifest, "node": {"index": my_node, "dir": str(my_dir),
                                              "files": list(node_files.values())}}
        atomic_write_text(my_dir / MANIFEST_NAME, json.dumps(node_manifest, indent=1))
        (my_dir / JOURNAL_NAME).unlink(missing_ok=True)  # the manifest now holds everything it recorded
    if all_errors:
        names = ", ".join(f"{rel} ({msg})" for rel, msg in sorted(all_errors.items()))
        raise DataError(Path(src), f"{len(all_errors)} file(s) could not be staged: {names}")
    return manifest


def _transfer_report(final: list[dict], ideal: dict[int, int], exchange: str, chunk: int) -> dict:
    """Bytes each rank read from the source, sent and received in the exchange (file payload; the collectives'
    own headers are not counted), summed per node beside the ideal a node must take in."""
    keys = ("source_bytes", "sent_bytes", "received_bytes", "messages")
    ranks = [{"rank": g["rank"], "node": g["node"], **{k: g[k] for k in keys}} for g in final]
    per_node = {}
    for r in ranks:
        node = per_node.setdefault(str(r["node"]), {k: 0 for k in keys})
        for k in keys:
            node[k] += r[k]
    for n, b in ideal.items():
        per_node.setdefault(str(n), {k: 0 for k in keys})["ideal_received_bytes"] = b
    return {"exchange": exchange, "chunk_bytes": chunk, "ranks": ranks, "nodes": per_node}


def format_report(manifest: dict) -> str:
    """The one-paragraph throughput report the CLI prints."""
    t = manifest["throughput"]
    return (f"staged {len(manifest['source_reads'])} files to {len(manifest['nodes'])} node(s): "
            f"read {t['files_read']} files / {t['source_bytes'] / 1e9:.3f} GB from the source in "
            f"{t['seconds']:.2f} s ({t['gb_per_s']:.3f} GB/s, {t['files_per_s']:.1f} files/s); "
            f"swapped {t['swapped_bytes'] / 1e9:.3f} GB between nodes ({manifest['transfer']['exchange']}, "
            f"{sum(r['received_bytes'] for r in manifest['transfer']['ranks']) / 1e9:.3f} GB received by all "
            f"ranks); {t['resumed_files']} already staged")
