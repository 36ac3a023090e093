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


def horovod_build() -> dict:
    """Horovod's compiled frameworks and controllers, or the reason it is unavailable."""
    try:
        import horovod.tensorflow as hvd
    except Exception as e:  # noqa: BLE001 - report any import failure verbatim
        return {"available": False, "error": f"{type(e).__name__}: {e}"}
    return {
        "available": True,
        "version": _version("horovod"),
        "frameworks": {"tensorflow": True},
        "controllers": {"gloo": bool(hvd.gloo_built()), "mpi": bool(hvd.mpi_built())},
        "tensor_operations": {
            "nccl": bool(hvd.nccl_built()),
            "ddl": bool(hvd.ddl_built()),
            "ccl": bool(hvd.ccl_built()),
            "cuda": bool(hvd.cuda_built()),
            "rocm": bool(hvd.rocm_built()),
        },
    }


def collect_info() -> dict:
    from exascale_climate import __version__
    from exascale_climate.utils.runtime import configure_threads

    configure_threads()
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
        lines.append(f"horovod {hv['version']}: frameworks tensorflow; controllers {ctl}; tensor ops {ops}")
    else:
        lines.append(f"horovod: unavailable ({hv['error']})")
    lines.append(f"cpu: {info['cpu']['count']} cores, {info['cpu']['gpus']} GPUs")
    lines.append("threads: " + ", ".join(f"{k}={v}" for k, v in info["threads"].items()))
    return "\n".join(lines)
