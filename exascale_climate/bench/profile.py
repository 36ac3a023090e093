"""Where a step's time goes, per TensorFlow op type: one call traced with `tf.profiler.experimental`, its
XPlane (the trace TensorBoard's profiler reads) summed by op type.

The table adds each op's own run time on TensorFlow's compute threads. With two inter-op threads, independent
ops (a convolution's input and filter gradients) can run at the same time, so the sum may exceed the wall time:
read the fractions, not the total. oneDNN's kernels carry their own names (`_MklNativeConv2DBackpropInput`, ...).
"""
from __future__ import annotations

import collections
from pathlib import Path

from exascale_climate.errors import ExaclimateError


def trace(fn, logdir: str | Path) -> Path:
    """Run `fn()` once under the profiler; returns the XPlane file it wrote."""
    import tensorflow as tf

    logdir = Path(logdir)
    before = set(logdir.rglob("*.xplane.pb")) if logdir.exists() else set()
    tf.profiler.experimental.start(str(logdir))
    try:
        fn()
    finally:
        tf.profiler.experimental.stop()
    new = sorted(set(logdir.rglob("*.xplane.pb")) - before, key=lambda p: p.stat().st_mtime)
    if not new:
        raise ExaclimateError(f"{logdir}: the profiler wrote no .xplane.pb trace")
    return new[-1]


def op_type_seconds(xplane: str | Path) -> dict[str, tuple[float, int]]:
    """{op type: (seconds, calls)} of the TensorFlow ops in an XPlane trace, largest first.

    TF names an op's trace event `scope/name:OpType`; events of the runtime itself (`Executor::...`) are left out.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    try:
        space.ParseFromString(Path(xplane).read_bytes())
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: one line naming it
        raise ExaclimateError(f"{xplane}: not a profiler XPlane trace ({e})") from None
    seconds, calls = collections.Counter(), collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        meta = plane.event_metadata
        for line in plane.lines:
            if line.name == "python":  # the Python thread's events wrap the whole call
                continue
            for event in line.events:
                name = meta[event.metadata_id].name
                if ":" not in name or "::" in name:
                    continue
                kind = name.rsplit(":", 1)[1].strip()
                if kind.startswith("__inference"):  # the traced function's own event wraps its ops
                    continue
                seconds[kind] += event.duration_ps * 1e-12
                calls[kind] += 1
    return {k: (v, calls[k]) for k, v in seconds.most_common()}


def profile_records(fn, logdir: str | Path, label: str, top: int = 15, **extra) -> list[dict]:
    """One traced call of `fn` as bench records: per op type its seconds and fraction of all op time."""
    from exascale_climate.bench.common import record

    table = op_type_seconds(trace(fn, logdir))
    total = sum(s for s, _ in table.values()) or 1.0
    return [record("profile", f"{label} {kind}", s, "s", total, "all ops", calls=n, op_type=kind, **extra)
            for kind, (s, n) in list(table.items())[:top]]
