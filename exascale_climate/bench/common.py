"""Benchmark records: one JSON line per figure, always with the baseline measured in the same run.

Record format (docs/PERFORMANCE.md): {"bench", "metric", "value", "unit", "baseline", "ratio", "machine", ...}.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from exascale_climate.utils.io import atomic_write_text


def cpu_isa(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The widest x86 vector / matrix extension this CPU reports (the kernels oneDNN picks follow it):
    AMX, AVX-512, AVX2 or the platform's machine name when none (or not Linux)."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path(cpuinfo).read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        flags = []
    for flag, name in (("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2")):
        if flag in flags:
            return name
    return platform.machine() or "unknown"


def machine_info() -> dict:
    import psutil

    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "isa": cpu_isa(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "threads": os.environ.get("TF_NUM_INTRAOP_THREADS"),
    }


def record(bench: str, metric: str, value: float, unit: str, baseline: float | None = None,
           baseline_name: str | None = None, **extra) -> dict:
    """One figure; `ratio` = value / baseline when a baseline from the same run is given."""
    ratio = (value / baseline) if (baseline not in (None, 0)) else None
    rec = {"bench": bench, "metric": metric, "value": value, "unit": unit, "baseline": baseline,
           "baseline_name": baseline_name, "ratio": ratio, **extra}
    rec["machine"] = machine_info()
    rec["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return rec


def write_records(records: list[dict], path: str | Path | None) -> None:
    """Write all records as JSON lines (atomically); appends nothing half-written."""
    if not path:
        return
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    atomic_write_text(path, old + "".join(json.dumps(r) + "\n" for r in records))


def format_table(records: list[dict]) -> str:
    """A Markdown table of the records (what docs/PERFORMANCE.md shows)."""
    lines = ["| bench | metric | value | unit | baseline | ratio |", "|---|---|---|---|---|---|"]
    for r in records:
        base = "" if r.get("baseline") is None else f"{r['baseline']:.4g} ({r.get('baseline_name') or ''})"
        ratio = "" if r.get("ratio") is None else f"{r['ratio']:.3f}"
        lines.append(f"| {r['bench']} | {r['metric']} | {r['value']:.4g} | {r['unit']} | {base} | {ratio} |")
    return "\n".join(lines)


def timed(fn, *args, repeat: int = 3, warmup: int = 1, **kwargs) -> float:
    """Best wall-clock seconds of `repeat` calls after `warmup` calls."""
    for _ in range(warmup):
        fn(*args, **kwargs)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak_flops(n: int = 2048, repeat: int = 5) -> float:
    """This machine's float32 matmul FLOP/s in TensorFlow (the baseline for model/train benchmarks)."""
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))

    @tf.function
    def mm(x, y):
        return tf.matmul(x, y)

    def run():
        mm(a, b).numpy()

    seconds = timed(run, repeat=repeat, warmup=2)
    return 2.0 * n**3 / seconds


def reference_cpu_seconds(repeat: int = 7) -> float:
    """CPU seconds of one fixed piece of work, median of `repeat` calls after a warm-up: forward + backward of a
    3x3 convolution (64 -> 64 channels on 96x144, one sample: a typical layer of the benchmarked networks) and
    a memory-bound update of 8 M floats.

    Timed in the same process next to a measurement, it shows what the machine's load does to CPU seconds at that
    moment (shared caches and memory bandwidth, SMT siblings); `scale fit --timing cpu-ref` divides by it."""
    import statistics

    import tensorflow as tf

    x = tf.random.normal((1, 96, 144, 64))
    w = tf.random.normal((3, 3, 64, 64)) * 0.05
    big = tf.random.normal((8 * 1024 * 1024,))

    @tf.function
    def work():
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = tf.nn.conv2d(x, w, 1, "SAME")
            loss = tf.reduce_sum(y * y)
        gx, gw = tape.gradient(loss, [x, w])
        return tf.reduce_sum(gx) + tf.reduce_sum(gw) + tf.reduce_sum(big * 1.0001 + 1.0)

    work().numpy()
    seconds = []
    for _ in range(repeat):
        c0 = time.process_time()
        work().numpy()
        seconds.append(time.process_time() - c0)
    return statistics.median(seconds)

