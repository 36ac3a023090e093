"""Start N local ranks of a command under horovodrun (Gloo or MPI) or mpirun: used by benchmarks, the demo
job and the multi-rank tests, so all of them launch ranks the same way."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CONTROLLERS = ("gloo", "mpi", "mpirun")


def _bin(name: str) -> str:
    """Prefer the executable beside this interpreter (the venv), then PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def rank_env(np_local: int, threads_per_rank: int | None = None, extra: dict | None = None) -> dict:
    """Environment for local ranks: threads split between them so they do not oversubscribe the cores."""
    env = dict(os.environ)
    threads = threads_per_rank or max(1, (os.cpu_count() or 1) // max(1, np_local))
    env.update({
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": "1",
        "OMP_NUM_THREADS": str(threads),
        "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        "PYTHONUNBUFFERED": "1",
    })
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


def launch_command(np: int, argv: list[str], controller: str = "gloo", hosts: str | None = None,
                   env_names: list[str] | None = None) -> list[str]:
    """The argv that starts `argv` as `np` local ranks with the given controller."""
    if controller not in CONTROLLERS:
        raise ValueError(f"controller {controller!r}: choose one of {CONTROLLERS}")
    if controller == "mpirun":
        cmd = [shutil.which("mpirun") or "mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
               "-np", str(np)]
        for name in env_names or []:
            cmd += ["-x", name]
        return cmd + argv
    return [_bin("horovodrun"), "-np", str(np), "-H", hosts or f"localhost:{np}", f"--{controller}"] + argv


def run_ranks(np: int, argv: list[str], controller: str = "gloo", threads_per_rank: int | None = None,
              env: dict | None = None, timeout: float | None = None, cwd: str | Path | None = None,
              capture: bool = True, hosts: str | None = None) -> subprocess.CompletedProcess:
    """Run `argv` on `np` local ranks and wait; the caller checks returncode and output.

    `hosts` (horovodrun only), e.g. "localhost:2,127.0.0.1:2": two names for this machine, so Horovod reports
    2 hosts of 2 ranks."""
    full_env = rank_env(np, threads_per_rank, env)
    if hosts and controller == "mpirun":
        raise ValueError("hosts: only horovodrun (gloo, mpi) places ranks on named hosts")
    names = sorted(set(full_env) - set(os.environ)) + ["TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS", "PATH"]
    if env:
        names += list(env)
    cmd = launch_command(np, argv, controller, hosts=hosts, env_names=sorted(set(names)))
    return subprocess.run(cmd, env=full_env, cwd=cwd, timeout=timeout, text=True,
                          stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.STDOUT if capture else None)


def python_module(module: str, *args: str) -> list[str]:
    """argv running `python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def exaclimate(*args: str) -> list[str]:
    """argv running the exaclimate CLI with this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "exascale_climate.cli", *args]
