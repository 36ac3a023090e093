"""`exaclimate bench pipeline`: the tf.data pipeline against a raw read of the same files, in the same run.

Figures: samples/s and MB/s of the raw read (the files' bytes with plain read() calls, nothing decoded or kept:
the baseline), of h5py's own reads, of the pipeline (thread and process readers), and of a cost ladder that
adds the pipeline's work one step at a time with its `readers` threads: plain reads of the fields and labels
into pooled buffers, + the NaN/Inf and label checks (`read_sample`), + normalisation; the median over rounds of
pipeline / raw read; and the fraction of a training step spent waiting for data, with a small convolutional
training step as the compute. By default every pass is warm (page cache), so the comparison is about CPU and
memory work; `--cache cold` empties the page cache before each pass so the disk is in it too, and adds a
file-by-file comparison that a drifting disk cannot skew.
"""
from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from exascale_climate.bench.common import record
from exascale_climate.data.layouts import FIELDS_DATASET, HDF5_LAYOUTS
from exascale_climate.errors import ExaclimateError
from exascale_climate.utils.io import make_temp_dir, read_blocks
from exascale_climate.variables import VARIABLE_NAMES

DEEPCAM_ARRAYS = (FIELDS_DATASET, HDF5_LAYOUTS["deepcam"].labels)  # what a training read takes from a sample


def write_bench_dataset(root: Path, grid: tuple[int, int], samples: int, splits=("train",), seed: int = 0) -> Path:
    """Random DeepCAM-layout samples plus stats.h5 (the benchmarks need bytes, not weather; the noise is mapped
    onto each variable's typical value and spread because every read checks plausible ranges)."""
    from exascale_climate.data.synthetic import weather_like
    from exascale_climate.data.writers import write_deepcam_sample
    from exascale_climate.data.stats import compute_stats, write_stats

    rng = np.random.default_rng(seed)
    for split in splits:
        n = samples if split == "train" else max(1, samples // 8)
        for i in range(n):
            data = weather_like(rng.standard_normal((*grid, len(VARIABLE_NAMES)), dtype=np.float32))
            labels = rng.choice(3, size=grid, p=[0.9, 0.03, 0.07]).astype(np.uint8)
            write_deepcam_sample(root / split / f"data-{split}-{i:05d}.h5", data, labels, list(VARIABLE_NAMES))
    write_stats(root / "stats.h5", compute_stats(sorted((root / "train").glob("data-*.h5")), progress=False))
    return root


def drop_page_cache() -> None:
    """Empty the kernel's page cache so the next read comes from the disk (Linux, root only)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as e:
        raise ExaclimateError(f"--cache cold needs root on Linux to write /proc/sys/vm/drop_caches ({e})") from None


def _interleaved_rates(contenders: dict, passes: int, cold: bool) -> dict[str, list[float]]:
    """Items/s of each contender in each of `passes` rounds, one call of each per round, so a drift in the
    machine's speed (this VM's disk varies by +-30% between minutes) reaches all of them alike.

    contenders: name -> (fn, setup or None); fn(setup()) or fn() returns the item count. Set-up (and, when
    cold, emptying the page cache) happens outside the clock."""
    rates = {name: [] for name in contenders}
    for _ in range(passes):
        for name, (fn, setup) in contenders.items():
            arg = setup() if setup else None
            if cold:
                drop_page_cache()
            t0 = time.perf_counter()
            n = fn(arg) if setup else fn()
            rates[name].append(n / (time.perf_counter() - t0))
    return rates


def _median_round_ratio(rates: list[float], baseline: list[float]) -> float:
    """The median over rounds of rate / baseline in the same round: robust to a slow or fast round."""
    return float(np.median(np.asarray(rates) / np.asarray(baseline)))


RAW_CHUNK = 1 << 20  # 1 MiB reads: measured at least as fast as 8 MiB or whole-file reads here, warm and cold


def _raw_read(files) -> int:
    """The baseline: every byte of each file, read() in 1 MiB chunks into one reused buffer (`cat`, `dd`):
    the storage's read bandwidth, with nothing decoded, allocated or checked."""
    for f in files:
        for _ in read_blocks(f, RAW_CHUNK):
            pass
    return len(files)


def _h5py_read(files) -> int:
    """h5py's read_direct of the fields and labels into buffers reused across files. From a cold page cache it
    is 3x slower than a plain read of the same bytes here (HDF5 reads its metadata first, and the kernel then
    treats the fields' big read as random access, without readahead)."""
    import h5py

    buffers = {}
    for f in files:
        with h5py.File(f, "r") as h:
            for name in DEEPCAM_ARRAYS:
                ds = h[name]
                key = (name, ds.shape, ds.dtype)
                if key not in buffers:
                    buffers[key] = np.empty(ds.shape, ds.dtype)
                ds.read_direct(buffers[key])
    return len(files)


def _getitem_read(files) -> int:
    """h5py's everyday `ds[()]`, for reference: it allocates each array with numpy.zeros (4 KiB page faults)."""
    import h5py

    for f in files:
        with h5py.File(f, "r") as h:
            for name in DEEPCAM_ARRAYS:
                h[name][()]
    return len(files)


def _in_threads(read_one, threads: int):
    """files -> count, `threads` files at a time, as the pipeline's reader threads read them."""
    def run(files) -> int:
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(read_one, files):
                pass
        return len(files)
    return run


def _plain_reader(empty):
    """The pipeline's reads without its checks: fields and labels by plain reads into pooled buffers, at the
    offsets HDF5 gave once per file (as `read_sample` does for a file it has read before; data/rawread.py)."""
    from exascale_climate.data.layouts import open_hdf5
    from exascale_climate.data.rawread import location, read_at

    locations = {}

    def read_one(path) -> None:
        if path not in locations:
            with open_hdf5(path) as h:
                size = os.path.getsize(path)
                locations[path] = [(name, location(h[name], size)) for name in DEEPCAM_ARRAYS]
        with open(path, "rb", buffering=0) as raw:
            for name, where in locations[path]:
                read_at(path, where, name, empty, fd=raw.fileno())
    return read_one


def _cost_ladder(root: Path, threads: int, tag: str) -> dict:
    """name -> (reader of a file list, metric): the pipeline's per-sample work added one step at a time, each
    step with the pipeline's reader threads, so the table shows what each step costs against the raw read."""
    from exascale_climate.data.samples import read_sample
    from exascale_climate.data.stats import read_stats
    from exascale_climate.pipeline.normalize import InPlaceNormalizer, normalization_constants
    from exascale_climate.utils.buffers import BufferPool

    empty = BufferPool().empty
    normalizer = InPlaceNormalizer(*normalization_constants("zscore", read_stats(root / "stats.h5")))
    steps = {
        "raw_streams": (lambda f: _raw_read([f]), f"raw read, {threads} streams{tag}"),
        "plain": (_plain_reader(empty), f"plain reads of fields + labels ({threads} threads{tag})"),
        "checked": (partial(read_sample, with_labels=True, empty=empty),
                    f"+ NaN/Inf and label checks: read_sample ({threads} threads{tag})"),
        "normalised": (partial(read_sample, with_labels=True, empty=empty, transform=normalizer),
                       f"+ z-score normalisation ({threads} threads{tag})"),
    }
    return {name: (_in_threads(read_one, threads), metric) for name, (read_one, metric) in steps.items()}


def _file_by_file_ratio(files, read_one, passes: int) -> float:
    """Median over files of (raw read time / `read_one` time), each from an emptied page cache, the two
    alternating file by file: a disk whose speed drifts between minutes (this VM's does, 2x) slows both alike."""
    readers = {"raw": lambda f: _raw_read([f]), "read": read_one}
    ratios = []
    for k in range(passes):
        for i, f in enumerate(files):
            seconds = {}
            for name in (("raw", "read") if (i + k) % 2 else ("read", "raw")):
                drop_page_cache()
                t0 = time.perf_counter()
                readers[name](f)
                seconds[name] = time.perf_counter() - t0
            ratios.append(seconds["raw"] / seconds["read"])
    return float(np.median(ratios))


def _pipeline_config(root: Path, mode: str, readers: int, batch: int):
    from exascale_climate.config import load_config

    return load_config(None, [f"data.train_dir={root}/train", f"data.stats_file={root}/stats.h5",
                              f"pipeline.reader_mode={mode}", f"pipeline.readers={readers}",
                              f"train.batch_size={batch}"])


def _count(ds) -> int:
    """Iterate one epoch; the dataset is built outside the clock (graph construction is paid once per epoch,
    which a real epoch of hundreds of steps amortises but an 8-sample benchmark would not)."""
    n = 0
    for x, _, _ in ds:
        n += int(x.shape[0])
    return n


def _train_step_fn(channels: int):
    """A small convolutional training step (3 conv layers + weighted CE), standing in for the model."""
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(0)
    kernels = [tf.Variable(rng.normal((3, 3, cin, cout)) * 0.1)
               for cin, cout in ((channels, 32), (32, 32), (32, 3))]

    @tf.function
    def step(x, y, w):
        with tf.GradientTape() as tape:
            h = tf.cast(x, tf.float32)
            for i, k in enumerate(kernels):
                h = tf.nn.conv2d(h, k, 1, "SAME")
                h = tf.nn.relu(h) if i < len(kernels) - 1 else h
            loss = tf.reduce_mean(w * tf.nn.sparse_softmax_cross_entropy_with_logits(y, h))
        grads = tape.gradient(loss, kernels)
        for k, g in zip(kernels, grads):
            k.assign_sub(1e-3 * g)
        return loss

    return step


def _wait_fraction(cfg, files, stats) -> tuple[float, float]:
    """(share of the step time spent in next(iterator), seconds per step) over one epoch after a warm-up."""
    from exascale_climate.pipeline.dataset import build_dataset

    step = _train_step_fn(len(stats.variables))
    warm = next(iter(build_dataset(cfg, files, stats, training=True)))
    step(*warm).numpy()  # trace outside the clock
    waiting = computing = 0.0
    it = iter(build_dataset(cfg, files, stats, training=True, epoch=1))
    steps = 0
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            break
        t1 = time.perf_counter()
        step(*batch).numpy()
        t2 = time.perf_counter()
        if steps:  # the first batch is the pipeline's start-up, paid once per epoch
            waiting += t1 - t0
            computing += t2 - t1
        steps += 1
    total = waiting + computing
    return (waiting / total if total else 0.0), total / max(1, steps - 1)


def bench_pipeline(grid: tuple[int, int] = (768, 1152), samples: int = 16, readers: int = 2, batch: int = 1,
                   modes=("thread", "process"), passes: int = 3, workdir: str | Path | None = None,
                   cache: str = "warm") -> list[dict]:
    """Time raw reads, h5py reads, the cost ladder and the pipeline on the same files; returns bench records.

    cache="warm": every pass reads from the page cache (CPU cost only); "cold": the page cache is emptied
    before every pass, so the baseline is the disk's read bandwidth, as on a first epoch from node-local disk.
    """
    if cache not in ("warm", "cold"):
        raise ExaclimateError(f"cache {cache!r}: choose warm or cold")
    cold = cache == "cold"
    tag = ", cold cache" if cold else ""
    from exascale_climate.utils.runtime import apply_tf_threads, configure_threads

    configure_threads()
    apply_tf_threads()
    from exascale_climate.pipeline.dataset import build_dataset, load_stats

    own_dir = workdir is None
    root = Path(workdir) if workdir else make_temp_dir("exaclimate-bench-pipeline-")
    try:
        if not (root / "stats.h5").exists():
            write_bench_dataset(root, grid, samples)
        files = sorted((root / "train").glob("data-*.h5"))
        mb_per_sample = np.mean([f.stat().st_size for f in files]) / 1e6
        grid_name = f"{grid[0]}x{grid[1]}x{len(VARIABLE_NAMES)}"
        common = {"grid": grid_name, "samples": len(files), "readers": readers, "batch": batch, "cache": cache}
        _raw_read(files)  # warm the page cache for every pass alike
        references = {"raw": (_raw_read, f"raw read (file bytes{tag})"),
                      "h5py": (_h5py_read, f"h5py read_direct{tag}"),
                      "getitem": (_getitem_read, f"h5py ds[()]{tag}"),
                      **_cost_ladder(root, readers, tag)}
        contenders = {name: (partial(read, files), None) for name, (read, _) in references.items()}
        for mode in modes:
            cfg = _pipeline_config(root, mode, readers, batch)
            stats = load_stats(cfg)
            build = partial(build_dataset, cfg, files, stats, training=True)
            _count(build())  # start-up (process pool, first tracing) outside the clock
            contenders[mode] = (_count, build)
        per_round = _interleaved_rates(contenders, passes, cold)
        rates = {name: max(values) for name, values in per_round.items()}
        raw = rates["raw"]
        records = []
        for name, (_, metric) in references.items():
            against = (None, None) if name == "raw" else (raw, "raw read")
            records.append(record("pipeline", metric, rates[name], "samples/s", *against,
                                  mb_per_s=rates[name] * mb_per_sample, **common))
        usable = (len(files) // batch) * batch
        for mode in modes:
            records.append(record("pipeline", f"pipeline ({mode} readers{tag})", rates[mode], "samples/s", raw,
                                  "raw read", mb_per_s=rates[mode] * mb_per_sample, samples_per_epoch=usable,
                                  vs_raw_streams=rates[mode] / rates["raw_streams"], **common))
            records.append(record("pipeline", f"pipeline ({mode} readers{tag}) / raw read, median of rounds",
                                  _median_round_ratio(per_round[mode], per_round["raw"]), "ratio", passes=passes,
                                  **common))
        if cold:
            from exascale_climate.data.samples import read_sample
            from exascale_climate.utils.buffers import BufferPool

            read_one = partial(read_sample, with_labels=True, empty=BufferPool().empty)
            records.append(record("pipeline", "read_sample / raw read, file by file (cold cache, median)",
                                  _file_by_file_ratio(files, read_one, passes), "ratio", passes=passes, **common))
        best = max(modes, key=rates.get)
        cfg = _pipeline_config(root, best, readers, batch)
        fraction, step_s = _wait_fraction(cfg, files, load_stats(cfg))
        records.append(record("pipeline", f"data wait / step ({best} readers)", fraction, "fraction",
                              step_seconds=step_s, compute="3-layer conv training step", goal="< 0.05", **common))
        return records
    finally:
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)
