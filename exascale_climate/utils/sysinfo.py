"""What `exaclimate info` reports: versions, Horovod's build, cores and thread settings."""
from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


# Each framework's compiled Horovod extension, as each `horovod.<framework>/__init__.py` names it.
HOROVOD_EXTENSIONS = {"tensorflow": "mpi_lib", "torch": "mpi_lib_v2", "mxnet": "mpi_lib"}


def horovod_frameworks() -> dict[str, bool]:
    """Which frameworks Horovod was built with: Horovod's own `check_extension` on each framework's
    extension, without importing the framework. (`horovodrun --check-build` imports `horovod.torch`, which
    only prints a warning when its extension is missing, so it reports PyTorch even when it was not built.)"""
    import horovod
    from horovod.common.util import check_extension

    root = os.path.dirname(horovod.__file__)
    built = {}
    for framework, library in HOROVOD_EXTENSIONS.items():
        try:
            check_extension(f"horovod.{framework}", f"HOROVOD_WITH_{framework.upper()}",
                            os.path.join(root, framework, "__init__.py"), library)
            built[framework] = True
        except ImportError:
            built[framework] = False
    return built


def horovod_build() -> dict:
    """Horovod's compiled frameworks and controllers, or the reason it is unavailable."""
    try:
        import horovod.tensorflow as hvd
    except Exception as e:  # noqa: BLE001 - report any import failure verbatim
        return {"available": False, "error": f"{type(e).__name__}: {e}"}
    return {
        "available": True,
        "version": _version("horovod"),
        "frameworks": horovod_frameworks(),
        "controllers": {"gloo": bool(hvd.gloo_built()), "mpi": bool(hvd.mpi_built())},
        "tensor_operations": {
            "nccl": bool(hvd.nccl_built()),
            "ddl": bool(hvd.ddl_built()),
            "ccl": bool(hvd.ccl_built()),
            "cuda": bool(hvd.cuda_built()),
            "rocm": bool(hvd.rocm_built()),
        },
    }


def rank_devices() -> tuple[int, list[dict]]:
    """(this rank, every rank's devices: host, local rank, the GPUs it uses), gathered when launched with
    several ranks; a single process reports itself. Under a launcher this starts Horovod, which pins GPUs."""
    from exascale_climate.utils.devices import device_report
    from exascale_climate.utils.runtime import World, init_world, launched_distributed

    world = init_world() if launched_distributed() else World()
    mine = device_report(world)
    if world.distributed:
        return world.rank, sorted(world.hvd.allgather_object(mine), key=lambda r: r["rank"])
    return world.rank, [mine]


def collect_info() -> dict | None:
    """The report; None on ranks other than 0 when launched with several (rank 0 reports for all)."""
    from exascale_climate import __version__
    from exascale_climate.utils.runtime import configure_threads

    configure_threads()
    rank, ranks = rank_devices()
    if rank != 0:
        return None
    import tensorflow as tf

    info = {
        "exascale_climate": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {
            "tensorflow": tf.__version__,
            "keras": _version("keras"),
            "numpy": _version("numpy"),
            "h5py": _version("h5py"),
            "xarray": _version("xarray"),
            "netCDF4": _version("netCDF4"),
            "horovod": _version("horovod"),
        },
        "horovod": horovod_build(),
        "cpu": {"count": os.cpu_count(), "gpus": len(tf.config.list_physical_devices("GPU"))},
        "ranks": ranks,
        "threads": {
            k: os.environ.get(k)
            for k in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")
        },
    }
    return info


def format_info(info: dict) -> str:
    hv = info["horovod"]
    lines = [
        f"exascale_climate {info['exascale_climate']}  (Python {info['python']}, {info['platform']})",
        "versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
    ]
    if hv["available"]:
        ctl = ", ".join(k for k, v in hv["controllers"].items() if v) or "none"
        ops = ", ".join(k for k, v in hv["tensor_operations"].items() if v) or "CPU only"
        fws = ", ".join(k for k, v in hv["frameworks"].items() if v) or "none"
        lines.append(f"horovod {hv['version']}: frameworks {fws}; controllers {ctl}; tensor ops {ops}")
    else:
        lines.append(f"horovod: unavailable ({hv['error']})")
    lines.append(f"cpu: {info['cpu']['count']} cores, {info['cpu']['gpus']} GPUs")
    for r in info["ranks"]:
        gpus = "; ".join(f"{g['device']} {g['name']}" for g in r["gpus"]) or "no GPU (CPU)"
        bound = f", CUDA_VISIBLE_DEVICES={r['cuda_visible_devices']}" if r["cuda_visible_devices"] is not None else ""
        lines.append(f"rank {r['rank']} ({r['host']}, local rank {r['local_rank']}/{r['local_size']}{bound}): {gpus}")
    lines.append("threads: " + ", ".join(f"{k}={v}" for k, v in info["threads"].items()))
    return "\n".join(lines)


def require_gpus(info: dict) -> None:
    """A GPU job's first check: an error naming the ranks that would silently train on the CPU."""
    from exascale_climate.errors import ExaclimateError
    from exascale_climate.utils.devices import ranks_without_gpu

    missing = ranks_without_gpu(info["ranks"])
    if missing:
        named = ", ".join(f"rank {r['rank']} ({r['host']}, local rank {r['local_rank']})" for r in missing[:4])
        more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        raise ExaclimateError(f"{len(missing)} of {len(info['ranks'])} rank(s) have no GPU: {named}{more}; "
                              f"TensorFlow sees {info['cpu']['gpus']} GPU(s) on rank 0's node")
