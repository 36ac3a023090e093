"""`exaclimate bench data`: samples/s of synth, label and convert, each against raw file I/O of the same bytes.

The baseline is measured in the same run on the same file system: writing (synth) or reading and writing
(label, convert) as many bytes as the stage moves per sample, with plain numpy tofile/fromfile and no fsync on
either side (both sides see the page cache alike). A ratio near 1 means the stage is I/O bound; far below 1 means
compute (field generation, labelling, HDF5/netCDF overheads) dominates.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from exascale_climate.bench.common import record
from exascale_climate.utils.io import make_temp_dir


def _raw_io_seconds(directory: Path, nbytes: int, samples: int, read: bool, write: bool) -> float:
    """Seconds to write and/or read `samples` files of `nbytes` each with plain numpy I/O (best of 2)."""
    payload = np.random.default_rng(0).integers(0, 255, size=nbytes, dtype=np.uint8)
    best = float("inf")
    for repeat in range(2):
        paths = [directory / f"raw-{repeat}-{i}.bin" for i in range(samples)]
        for p in paths:  # files to read must exist before the clock starts
            if read and not write:
                payload.tofile(p)
        t0 = time.perf_counter()
        for p in paths:
            if read and write:
                payload.tofile(p)
                np.fromfile(p, dtype=np.uint8)
            elif write:
                payload.tofile(p)
            else:
                np.fromfile(p, dtype=np.uint8)
        best = min(best, time.perf_counter() - t0)
        for p in paths:
            p.unlink()
    return best


def bench_data(grid: tuple[int, int] = (768, 1152), samples: int = 4, workdir: str | Path | None = None) -> list[dict]:
    """Time the three data stages on `samples` samples of `grid`; returns bench records."""
    from exascale_climate.config import LabellerConfig, SynthConfig
    from exascale_climate.data.convert import convert, label_files
    from exascale_climate.data.layouts import list_samples
    from exascale_climate.data.synthetic import synthesize

    work = Path(workdir) if workdir else make_temp_dir("exaclimate-bench-data-")
    raw, labelled, converted = work / "raw", work / "labelled", work / "converted"
    grid_name = f"{grid[0]}x{grid[1]}"
    cfg = SynthConfig(samples=samples, grid=grid, seed=0, workers=1)

    t0 = time.perf_counter()
    synthesize(raw, cfg, LabellerConfig(), progress=False)
    synth_s = time.perf_counter() - t0
    inputs = sorted(raw.glob("data-*.nc"))
    nc_bytes = int(np.mean([p.stat().st_size for p in inputs]))

    t0 = time.perf_counter()
    label_files(inputs, labelled)
    label_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    convert(inputs, converted)
    convert_s = time.perf_counter() - t0
    h5_bytes = int(np.mean([p.stat().st_size for p in list_samples(converted)]))

    raw_write = _raw_io_seconds(work, nc_bytes, samples, read=False, write=True)
    raw_read_write = _raw_io_seconds(work, nc_bytes, samples, read=True, write=True)
    raw_convert = _raw_io_seconds(work, (nc_bytes + h5_bytes) // 2, samples, read=True, write=True)

    common = {"grid": grid_name, "samples": samples, "bytes_per_sample_netcdf": nc_bytes,
              "bytes_per_sample_hdf5": h5_bytes, "workdir": str(work)}
    rate = (lambda seconds: samples / seconds)
    records = [
        record("data", "synth (generate + label + write netCDF)", rate(synth_s), "samples/s", rate(raw_write),
               "raw write of the same bytes", **common),
        record("data", "label (read netCDF + label + write)", rate(label_s), "samples/s", rate(raw_read_write),
               "raw read+write of the same bytes", **common),
        record("data", "convert (netCDF -> DeepCAM HDF5)", rate(convert_s), "samples/s", rate(raw_convert),
               "raw read+write of the same bytes", **common),
        record("data", "convert throughput", samples * nc_bytes / convert_s / 2**20, "MiB/s",
               samples * (nc_bytes + h5_bytes) / 2 / raw_convert / 2**20, "raw read+write", **common),
    ]
    if workdir is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return records
