"""A multi-rank self-check of the Horovod build: allreduce (average, sum) and broadcast.

Run under a launcher: `horovodrun -np 2 --gloo python -m exascale_climate.utils.hvd_selfcheck`.
Every rank prints one JSON line with what it saw (and writes it to OUT_DIR/rank-<r>.json when a directory is
given, since launchers may interleave the ranks' stdout) and exits non-zero on a wrong result.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from exascale_climate.utils.runtime import configure_threads


def main(argv: list[str]) -> int:
    configure_threads()
    import numpy as np
    import tensorflow as tf
    import horovod.tensorflow as hvd

    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    value = tf.constant([float(rank), 10.0 * (rank + 1)])
    average = hvd.allreduce(value, op=hvd.Average).numpy()
    total = hvd.allreduce(value, op=hvd.Sum).numpy()
    expected_avg = np.array([(size - 1) / 2.0, 10.0 * (size + 1) / 2.0])
    root_value = tf.constant([float(rank) + 42.0])
    broadcast = hvd.broadcast(root_value, root_rank=0).numpy()
    ok = (
        np.allclose(average, expected_avg)
        and np.allclose(total, expected_avg * size)
        and np.allclose(broadcast, [42.0])
    )
    controller = "gloo" if hvd.gloo_enabled() else "mpi" if hvd.mpi_enabled() else "unknown"
    report = json.dumps({
        "rank": rank, "size": size, "local_rank": hvd.local_rank(), "controller": controller,
        "allreduce_average": average.tolist(), "allreduce_sum": total.tolist(),
        "broadcast": broadcast.tolist(), "ok": bool(ok),
    })
    print(report, flush=True)
    if argv:
        Path(argv[0]).mkdir(parents=True, exist_ok=True)
        (Path(argv[0]) / f"rank-{rank}.json").write_text(report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
