"""A real single-node SLURM for the job tests (scripts/slurm_local.sh), started once per session."""
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SLURM_SCRIPT = REPO / "scripts" / "slurm_local.sh"
SLURM_BINARIES = ("slurmctld", "slurmd", "munged", "sbatch", "srun", "squeue", "scancel", "scontrol")


def _free_port_pair() -> int:
    """A port p with p and p+1 free (slurmctld, slurmd), so a cluster someone else runs is not disturbed."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


@pytest.fixture(scope="session")
def slurm_cluster():
    """Start slurmctld + slurmd + munged under a temp dir; yields SLURM_CONF (also set in os.environ)."""
    missing = [b for b in SLURM_BINARIES if not shutil.which(b)]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing; scripts/setup.sh --with-slurm)")
    # Not under pytest's basetemp: munged runs as user munge and must reach its socket directory.
    state = Path(tempfile.mkdtemp(prefix="exaclimate-slurm-"))
    env = dict(os.environ, EXACLIMATE_SLURM_PORT=str(_free_port_pair()))
    started = subprocess.run([str(SLURM_SCRIPT), "start", str(state)], env=env, text=True, capture_output=True,
                             timeout=120)
    assert started.returncode == 0, f"slurm_local.sh start failed:\n{started.stdout}\n{started.stderr}"
    conf = str(state / "slurm.conf")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    try:
        yield conf
    finally:
        subprocess.run([str(SLURM_SCRIPT), "stop", str(state)], env=env, timeout=120, check=False)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        shutil.rmtree(state, ignore_errors=True)
