"""scripts/slurm_local.sh itself: clean shell, and `status` of a cluster that is not running."""
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "slurm_local.sh"


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck is not installed")
def test_script_passes_shellcheck():
    check = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout


def test_status_of_a_stopped_cluster_and_bad_usage(tmp_path):
    status = subprocess.run([str(SCRIPT), "status", str(tmp_path)], capture_output=True, text=True)
    assert status.returncode == 3 and status.stdout.strip() == "stopped"
    usage = subprocess.run([str(SCRIPT), "restart"], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr
