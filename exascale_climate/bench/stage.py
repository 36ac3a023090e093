"""`exaclimate bench stage`: staging GB/s against `cp -r` of the same files, in the same run.

Both sides start warm (the source is in the page cache) and write to fresh directories on the same file
system. Staging is timed in each `--verify` mode (full: hash source bytes + re-read the copy; checksum: kernel
copy + hash of the copy; size: kernel copy only), all with the size and HDF5 checks. Optionally also 2 real
Horovod ranks standing for two nodes (the manifest's own timing, which leaves out the launcher and the
TensorFlow import), always into fresh directories (a resumed run would time nothing).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from exascale_climate.bench.common import record
from exascale_climate.bench.pipeline import write_bench_dataset
from exascale_climate.pipeline.staging import VERIFY_MODES
from exascale_climate.utils.io import make_temp_dir


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _cp_seconds(src: Path, dst: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    return time.perf_counter() - t0


def _stage_seconds(src: Path, dst: Path, verify: str) -> float:
    from exascale_climate.pipeline.staging import stage
    from exascale_climate.utils.runtime import World

    t0 = time.perf_counter()
    stage(src, dst, world=World(), verify=verify)
    return time.perf_counter() - t0


def _two_rank_gb_per_s(src: Path, work: Path) -> float:
    from exascale_climate.utils.launch import exaclimate, run_ranks

    dst = work / "ranks-node{node}"
    for old in work.glob("ranks-node*"):  # a previous run's copies would be resumed, not staged
        shutil.rmtree(old)
    result = run_ranks(2, exaclimate("-q", "stage", "--src", str(src), "--dst", str(dst), "--ranks-per-node", "1",
                                     "--replicate", "all"), timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"2-rank staging failed:\n{result.stdout[-2000:]}")
    manifest = json.loads((work / "ranks-node0" / "stage-manifest.json").read_text())
    if manifest["throughput"]["resumed_files"]:
        raise RuntimeError(f"2-rank staging resumed {manifest['throughput']['resumed_files']} files; not a timing")
    return manifest["throughput"]["gb_per_s"]


def bench_stage(grid: tuple[int, int] = (768, 1152), samples: int = 8, repeat: int = 2, ranks: int = 0,
                workdir: str | Path | None = None) -> list[dict]:
    own_dir = workdir is None
    work = Path(workdir) if workdir else make_temp_dir("exaclimate-bench-stage-")
    try:
        src = work / "src"
        if not (src / "stats.h5").exists():
            write_bench_dataset(src, grid, samples, splits=("train", "valid", "test"))
        nbytes = _tree_bytes(src)
        _cp_seconds(src, work / "warm")  # page cache warm for both sides
        shutil.rmtree(work / "warm")
        best = {"cp": float("inf"), **{f"stage --verify {mode}": float("inf") for mode in VERIFY_MODES}}
        for k in range(repeat):
            for name in best:
                dst = work / f"{name.split()[-1]}-{k}"
                seconds = _cp_seconds(src, dst) if name == "cp" else _stage_seconds(src, dst, name.split()[-1])
                best[name] = min(best[name], seconds)
                shutil.rmtree(dst)
        common = {"grid": f"{grid[0]}x{grid[1]}x16", "files": sum(1 for p in src.rglob("*.h5")),
                  "bytes": nbytes}
        cp_rate = nbytes / best["cp"] / 1e9
        records = [record("stage", "cp -r", cp_rate, "GB/s", **common)]
        for name in (n for n in best if n != "cp"):
            records.append(record("stage", f"{name}, 1 rank", nbytes / best[name] / 1e9, "GB/s", cp_rate, "cp -r",
                                  files_per_s=common["files"] / best[name], **common))
        if ranks:
            records.append(record("stage", "stage, 2 ranks as 2 nodes (replicate all)", _two_rank_gb_per_s(src, work),
                                  "GB/s", cp_rate, "cp -r", note="source GB read / staging wall time", **common))
        return records
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
