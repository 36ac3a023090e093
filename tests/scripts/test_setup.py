"""scripts/setup.sh: which flavour it picks (dry run) and what it prints (only `[setup]` lines and errors).

No GPU here: the GPU branch is chosen from what `nvidia-smi -L` prints, so the tests put small stand-in
`nvidia-smi` scripts first on PATH (listing GPUs, or failing as it does without a driver). The full GPU
install (tensorflow[and-cuda], Horovod with NCCL) cannot run here; its decisions are what is checked.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "scripts" / "setup.sh"

NVIDIA_SMI = {
    "two_gpus": 'echo "GPU 0: Tesla V100-SXM2-16GB (UUID: GPU-a)"; echo "GPU 1: Tesla V100-SXM2-16GB (UUID: GPU-b)"',
    "no_driver": 'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."; exit 9',
    "no_devices": 'echo "No devices were found"; exit 6',
}


def run_setup(tmp_path, *args, nvidia_smi=None, **env_extra):
    env = {k: v for k, v in os.environ.items() if k != "EXACLIMATE_GPU"}
    env.update(EXACLIMATE_CACHE=str(tmp_path / "cache"), **env_extra)
    if nvidia_smi:
        fake = tmp_path / "bin"
        fake.mkdir(exist_ok=True)
        (fake / "nvidia-smi").write_text(f"#!/bin/sh\n{NVIDIA_SMI[nvidia_smi]}\n")
        (fake / "nvidia-smi").chmod(0o755)
        env["PATH"] = f"{fake}{os.pathsep}{env['PATH']}"
    return subprocess.run(["bash", str(SETUP), *args], env=env, capture_output=True, text=True, timeout=900)


def plan(tmp_path, **kwargs):
    proc = run_setup(tmp_path, "--dry-run", **kwargs)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("=", 1) for line in proc.stdout.splitlines())


@pytest.mark.parametrize("nvidia_smi,gpu_env,flavour", [
    ("two_gpus", None, "gpu"),
    ("no_driver", None, "cpu"),
    ("no_devices", None, "cpu"),
    ("no_driver", "1", "gpu"),     # forced: a login node without GPUs building for the compute nodes
    ("two_gpus", "0", "cpu"),      # forced CPU on a GPU node
])
def test_dry_run_picks_the_flavour(tmp_path, nvidia_smi, gpu_env, flavour):
    extra = {"EXACLIMATE_GPU": gpu_env} if gpu_env else {}
    p = plan(tmp_path, nvidia_smi=nvidia_smi, **extra)
    assert p["flavour"] == flavour
    if flavour == "gpu":
        assert p["tensorflow"] == "tensorflow[and-cuda]==2.18.1" and p["removes"] == "tensorflow-cpu"
        assert "HOROVOD_GPU_OPERATIONS=NCCL" in p["horovod_env"].split()
        assert p["extras"] == "dev,gpu" and "cuda_problem" in p
    else:
        assert p["tensorflow"] == "tensorflow-cpu==2.18.1" and p["removes"] == "tensorflow"
        assert "HOROVOD_GPU_OPERATIONS" not in p["horovod_env"]
        assert p["extras"] == "dev,cpu" and "cuda_problem" not in p
    assert ("2 GPU(s)" in p["reason"]) == (nvidia_smi == "two_gpus" and gpu_env is None)


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi")
def test_without_nvidia_smi_it_stays_on_cpu_and_the_wheel_cache_key_names_the_flavour(tmp_path):
    cpu = plan(tmp_path)
    gpu = plan(tmp_path, EXACLIMATE_GPU="1")
    assert cpu["flavour"] == "cpu" and cpu["reason"] == "nvidia-smi sees no GPU"
    assert cpu["wheel_dir"].endswith("-cpu") and gpu["wheel_dir"].endswith("-cuda12-nccl")
    assert Path(cpu["wheel_dir"]).parent == Path(gpu["wheel_dir"]).parent == tmp_path / "cache" / "wheels"


def test_bad_flavour_and_failed_steps_are_one_setup_error(tmp_path):
    bad = run_setup(tmp_path, "--dry-run", EXACLIMATE_GPU="yes")
    assert bad.returncode != 0 and bad.stderr == "[setup] error: EXACLIMATE_GPU must be 1, 0 or unset, not 'yes'\n"
    # A step that fails (a venv where none can be made) names itself and shows the end of the log.
    failed = run_setup(tmp_path, EXACLIMATE_VENV="/proc/no-venv-here", EXACLIMATE_GPU="0")
    assert failed.returncode != 0 and failed.stdout == ""
    lines = failed.stderr.splitlines()
    assert lines[0] == "[setup] creating /proc/no-venv-here"
    assert lines[1].startswith("[setup] error: ") and str(tmp_path / "cache" / "setup.log") in lines[1]
    assert all(line.startswith("    ") for line in lines[2:]) and len(lines) > 2


@pytest.mark.slow
def test_on_a_ready_machine_it_prints_only_setup_lines_and_logs_the_rest(tmp_path):
    """A fresh venv that sees this venv's packages (a .pth): dependencies resolve without downloads, Horovod is
    already built. First run: installs (pip's output goes to the log only); second run: one line."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "zz_ready_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {"EXACLIMATE_VENV": str(venv), "EXACLIMATE_GPU": "0", "PYTHONPATH": ""}
    log = tmp_path / "cache" / "setup.log"

    first = run_setup(tmp_path, **env)
    assert first.returncode == 0, first.stderr + log.read_text()
    assert first.stdout == ""
    lines = first.stderr.splitlines()
    assert all(line.startswith("[setup] ") for line in lines), lines
    assert lines[0] == "[setup] installing Python dependencies (cpu flavour: EXACLIMATE_GPU=0)"
    assert lines[-1].startswith("[setup] ready (cpu): exaclimate, version ") and lines[-1].endswith(f"log: {log}")
    assert "Requirement already satisfied: tensorflow-cpu==2.18.1" in log.read_text()  # pip's chatter: in the log

    second = run_setup(tmp_path, **env)
    assert second.returncode == 0 and second.stdout == ""
    assert second.stderr.splitlines() == [lines[-1]]
