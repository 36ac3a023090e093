"""Jobs on a real single-node SLURM (scripts/slurm_local.sh): the rendered stage + train + evaluate job on
2 ranks (`srun --mpi=pmix`), exit codes, status/cancel, the scheduler's refusal, and injection attempts."""
import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from exascale_climate.config import CONFIG_DIR
from exascale_climate.jobs.submit import submit_script
from exascale_climate.utils.launch import exaclimate

pytestmark = [pytest.mark.slurm, pytest.mark.multirank]
GRID = (32, 64)
# Shell metacharacters that must arrive as plain text: a quote break-out, command substitution, backticks.
HOSTILE_NAME = 'x"; touch {marker}; #'
HOSTILE_VALUE = "$(touch {marker})`touch {marker}`'; touch {marker}"


def run_cli(*args, cwd=None, timeout=300):
    return subprocess.run(exaclimate(*args), cwd=cwd, text=True, capture_output=True, timeout=timeout)


def scontrol_job(job_id: str) -> dict:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], text=True, capture_output=True, check=True)
    # One line of Key=Value pairs; values may contain blanks, so split on " Key=" boundaries.
    return dict(re.findall(r"(\w[\w/:]*)=(.*?)(?= \w[\w/:]*=|$)", out.stdout.strip()))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A tiny labelled data set in the DeepCAM layout: root/{train,valid,test}/data-*.h5 + stats.h5."""
    from exascale_climate.data.synthetic import weather_like
    from exascale_climate.data.writers import write_deepcam_sample
    from exascale_climate.data.stats import compute_stats, write_stats
    from exascale_climate.variables import VARIABLE_NAMES

    root = tmp_path_factory.mktemp("job data")  # a blank in the path on purpose
    rng = np.random.default_rng(7)
    for split, count in (("train", 4), ("valid", 2), ("test", 2)):
        for i in range(count):
            data = weather_like(rng.normal(size=(*GRID, len(VARIABLE_NAMES))))  # plausible: checked on read
            labels = rng.integers(0, 3, size=GRID, dtype=np.uint8)
            write_deepcam_sample(root / split / f"data-2000-01-{i + 1:02d}-{split}.h5", data, labels,
                                 list(VARIABLE_NAMES), source="tests/jobs")
    write_stats(root / "stats.h5", compute_stats(sorted((root / "train").glob("data-*.h5")), progress=False))
    return root


def job_config(tmp_path: Path, data_root: Path) -> Path:
    """The demo config shrunk to a few steps at a small grid."""
    tree = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text())
    tree["data"].update(train_dir=str(data_root / "train"), valid_dir=str(data_root / "valid"),
                        test_dir=str(data_root / "test"), stats_file=str(data_root / "stats.h5"))
    tree["data"]["synth"]["grid"] = f"{GRID[0]}x{GRID[1]}"
    tree["pipeline"] = {"stage_dir": ""}
    tree["model"]["tiramisu"].update(growth_rate=4, initial_filters=8)
    tree["train"].update(batch_size=1, epochs=1, max_steps=2, log_every_steps=1)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_rendered_job_stages_trains_and_evaluates_on_two_ranks(slurm_cluster, dataset, tmp_path):
    """`exaclimate submit --wait` end to end, with hostile names: the job runs, the shell runs none of them."""
    marker = tmp_path / "pwned"
    job_name = HOSTILE_NAME.format(marker=marker)
    run_dir = tmp_path / f"run dir $(touch {marker})"
    result = run_cli("submit", "--scheduler", "slurm", "--nodes", "1", "--tasks-per-node", "2",
                     "--time", "00:10:00", "--job-name", job_name, "--run-dir", str(run_dir),
                     "--config", str(job_config(tmp_path, dataset)),
                     "--set", f"job.account={HOSTILE_VALUE.format(marker=marker)}", "--wait", cwd=tmp_path)
    job_id = result.stdout.split()[0]
    logs = "".join(p.read_text() for p in (run_dir / "logs").glob("*.out"))
    assert result.returncode == 0, result.stderr + logs
    assert not marker.exists()
    job = scontrol_job(job_id)
    assert job["JobName"] == job_name and job["JobState"] == "COMPLETED"
    submitted = next((run_dir / "jobs").iterdir())
    assert (submitted / "job_id").read_text().strip() == job_id
    assert yaml.safe_load((submitted / "config.yaml").read_text())["job"]["account"] == \
        HOSTILE_VALUE.format(marker=marker)
    # The run itself: 2 ranks trained from the node-local copy, then evaluated.
    assert "stage-in" in logs and "[exaclimate] done" in logs
    assert (run_dir / "config.yaml").is_file()
    assert "on 2 rank(s)" in logs
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["kind"] == "train"] == [1, 2]
    assert (run_dir / "checkpoints" / "ckpt-2").is_dir()
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert evaluation["samples"] == 2 and 0.0 <= evaluation["model"]["mean_iou"] <= 1.0
    stage_dir = Path(re.search(r"stage-in .* -> (.*)", logs).group(1).strip())
    assert stage_dir.name == f"exaclimate-{job_id}"
    assert not stage_dir.exists()  # the node-local copy is removed at the end


def test_failing_job_exit_code_reaches_the_user(slurm_cluster, dataset, tmp_path):
    """A job whose launcher fails (an MPI plugin this cluster lacks): `set -e` ends the script there and
    `submit --wait` exits with the job's code. The job name is hostile too and must stay inert."""
    marker = tmp_path / "pwned"
    result = run_cli("submit", "--nodes", "1", "--tasks-per-node", "2", "--time", "00:05:00",
                     "--run-dir", str(tmp_path / "run"), "--config", str(job_config(tmp_path, dataset)),
                     "--set", "job.srun_mpi=no_such_plugin",
                     "--set", f"job.job_name={HOSTILE_VALUE.format(marker=marker)}", "--wait", cwd=tmp_path)
    job_id = result.stdout.split()[0]
    job_exit = int(scontrol_job(job_id)["ExitCode"].split(":")[0])
    assert job_exit != 0
    assert result.returncode == job_exit
    assert f"job {job_id} failed with exit code {job_exit}" in result.stderr
    log = next((tmp_path / "run" / "logs").glob("*.out")).read_text()
    assert "no_such_plugin" in log and "[exaclimate] done" not in log
    assert not marker.exists()
    status = run_cli("jobs", "status", job_id, "--json")
    assert json.loads(status.stdout)["state"] == "FAILED"


def test_status_and_cancel(slurm_cluster, tmp_path):
    script = tmp_path / "held.sbatch"
    script.write_text(f"#!/bin/bash\n#SBATCH --hold\n#SBATCH --output={tmp_path}/held.out\nsleep 600\n")
    job_id, _ = submit_script("slurm", script, cwd=tmp_path)
    status = run_cli("jobs", "status", job_id, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == {**json.loads(status.stdout), "job_id": job_id, "state": "PENDING"}
    cancel = run_cli("jobs", "cancel", job_id)
    assert cancel.returncode == 0 and f"cancelled {job_id}" in cancel.stdout
    assert json.loads(run_cli("jobs", "status", job_id, "--json").stdout)["state"] == "CANCELLED"
    again = run_cli("jobs", "cancel", job_id)
    assert again.returncode == 2 and "already ended (CANCELLED)" in again.stderr
    unknown = run_cli("jobs", "cancel", "999999")
    assert unknown.returncode == 2 and "unknown to SLURM" in unknown.stderr
    bad = run_cli("jobs", "cancel", "1; touch /tmp/pwned")
    assert bad.returncode == 2 and "not a job id" in bad.stderr


def test_scheduler_refusal_is_reported_and_nothing_is_written(slurm_cluster, dataset, tmp_path):
    run_dir = tmp_path / "run"
    for extra in ([], ["--dry-run"]):
        result = run_cli("submit", "--nodes", "1", "--tasks-per-node", "2", "--time", "00:05:00",
                         "--partition", "no_such_partition", "--run-dir", str(run_dir),
                         "--config", str(job_config(tmp_path, dataset)), *extra, cwd=tmp_path)
        assert result.returncode == 2, result.stdout
        assert "sbatch --test-only refused it" in result.stderr and "partition" in result.stderr
        assert not run_dir.exists()


@pytest.mark.slow  # ~5 min, mostly SLURM's own requeue delay
def test_warning_signal_checkpoints_requeues_and_the_requeued_job_resumes(slurm_cluster, dataset, tmp_path):
    """The scheduler's warning, delivered as SLURM does (`scancel --signal=USR1`: to the ranks of the job step): the
    ranks checkpoint and exit 75, the job script requeues itself, the requeued job resumes and completes."""
    run_dir = tmp_path / "run"
    result = run_cli("submit", "--scheduler", "slurm", "--nodes", "1", "--tasks-per-node", "2", "--time", "00:20:00",
                     "--run-dir", str(run_dir), "--config", str(job_config(tmp_path, dataset)),
                     "--set", "train.max_steps=0", "--set", "train.epochs=40", "--set", "job.evaluate=false",
                     "--set", "train.checkpoint.every_steps=1", "--set", "distributed.stop_check_every_steps=1",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.split()[0]
    deadline = time.monotonic() + 600
    while not list(run_dir.glob("checkpoints/ckpt-*")):
        assert time.monotonic() < deadline, "no checkpoint appeared"
        assert scontrol_job(job_id)["JobState"] in ("PENDING", "RUNNING", "CONFIGURING"), scontrol_job(job_id)
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR1", job_id], check=True)
    while scontrol_job(job_id)["JobState"] not in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
        assert time.monotonic() < deadline + 900, scontrol_job(job_id)
        time.sleep(1)
    job = scontrol_job(job_id)
    logs = "".join(p.read_text() for p in (run_dir / "logs").glob("*.out"))
    assert job["JobState"] == "COMPLETED", logs[-4000:]
    assert int(job["Restarts"]) == 1, job
    assert "requeueing job" in logs and "resumed from" in logs, logs[-4000:]
    stopped = int(re.search(r"stopped by SIGUSR1 after step (\d+)", logs).group(1))
    final = json.loads(sorted((run_dir / "checkpoints").glob("ckpt-*"),
                              key=lambda p: int(p.name.split("-")[1]))[-1].joinpath("state.json").read_text())
    assert final["step"] == 40 * 2 and stopped < final["step"]  # 4 files / 2 ranks = 2 steps per epoch
