"""Hybrid-mode batch scripts: the servers on their own nodes. The host-file lines of the rendered script are
run by bash against a fake allocation (a stub `scontrol`, an LSF host file) and the resulting placement read."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from exascale_climate.config import load_config
from exascale_climate.errors import ConfigError
from exascale_climate.jobs.render import find_template, job_context, job_paths, render


def script(tmp_path: Path, scheduler: str, template: str = "generic", groups: int = 2, servers: int = 2) -> str:
    cfg = load_config("demo", [f"job.scheduler={scheduler}", f"job.template={template}", "job.nodes=2",
                               "job.tasks_per_node=4", "distributed.mode=hybrid", f"distributed.groups={groups}",
                               f"distributed.parameter_servers={servers}", "job.stage=false"])
    tpl = find_template(scheduler, template)
    return render(tpl, job_context(cfg, job_paths(cfg, "t", tmp_path), tpl, workdir=tmp_path))


def host_lines(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line.startswith(("HYBRID_HOSTS=", "scontrol show", "awk ")))


def test_slurm_places_one_server_per_extra_node(tmp_path):
    text = script(tmp_path, "slurm")
    assert "#SBATCH --nodes=4\n" in text and "#SBATCH --ntasks=10\n" in text and "#SBATCH --ntasks-per-node" not in text
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "scontrol").write_text("#!/bin/sh\nprintf 'n0\\nn1\\nn2\\nn3\\n'\n")
    os.chmod(stub / "scontrol", 0o755)
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}", "TMPDIR": str(tmp_path), "JOB_ID": "7"}
    subprocess.run(["bash", "-c", host_lines(text)], env=env, check=True)
    ranks = (tmp_path / "exaclimate-hosts-7").read_text().split()
    assert ranks == ["n0"] * 4 + ["n1"] * 4 + ["n2", "n3"]  # ranks 0-7 compute, 8 and 9 the servers
    assert re.search(r"srun .*--distribution=arbitrary --ntasks=10 --kill-on-bad-exit=0", text)
    assert 'train --status' in text
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)


def test_lsf_places_one_server_per_extra_node(tmp_path):
    text = script(tmp_path, "lsf", servers=1)
    assert "#BSUB -n 12\n" in text  # 3 whole nodes of 4 slots
    hostfile = tmp_path / "djob"
    hostfile.write_text("".join(f"h{n}\n" * 4 for n in range(3)))
    env = {**os.environ, "TMPDIR": str(tmp_path), "JOB_ID": "9", "LSB_DJOB_HOSTFILE": str(hostfile)}
    subprocess.run(["bash", "-c", host_lines(text)], env=env, check=True)
    assert (tmp_path / "exaclimate-hosts-9").read_text().splitlines() == ["h0 slots=4", "h1 slots=4", "h2 slots=1"]
    assert "--enable-recovery" in text and "-np 9 --map-by slot" in text


def test_hybrid_refused_where_a_template_cannot_place_servers(tmp_path):
    with pytest.raises(ConfigError, match="job.template: 'summit' does not place parameter servers"):
        script(tmp_path, "lsf", "summit")
    with pytest.raises(ConfigError, match="distributed.groups: 3 groups cannot split 8 compute ranks"):
        script(tmp_path, "slurm", groups=3)


GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("scheduler,golden", [("slurm", "hybrid-slurm-generic.sbatch"),
                                              ("lsf", "hybrid-lsf-generic.lsf")])
def test_submit_groups_and_servers_render_the_golden_scripts(scheduler, golden, tmp_path):
    """`exaclimate submit --groups 2 --parameter-servers 1 --dry-run` (the CLI path, staging on): the whole script
    against a golden file (regenerate with EXACLIMATE_UPDATE_GOLDEN=1), valid bash, shellcheck-clean; the
    stage-in runs with the training's placement and shards over the compute ranks only."""
    import shutil

    from click.testing import CliRunner

    from exascale_climate.cli import main

    result = CliRunner().invoke(main, ["submit", "--scheduler", scheduler, "--nodes", "2", "--tasks-per-node", "2",
                                       "--time", "00:20:00", "--groups", "2", "--parameter-servers", "1",
                                       "--run-dir", "runs/hybrid", "--config", "demo", "--stage", "--dry-run"])
    assert result.exit_code == 0, result.output
    text = result.output.replace(str(Path.cwd()), "/WORKDIR")  # the renderer's absolute paths, made stable
    text = re.sub(r"PYTHON=.*", "PYTHON=/PYTHON", text)
    text = re.sub(r"jobs/[^/\s']+/config.yaml", "jobs/STAMP/config.yaml", text)
    path = GOLDEN / golden
    if os.environ.get("EXACLIMATE_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)
    stage_lines = [line for line in text.splitlines() if " stage --src" in line]
    assert len(stage_lines) == 1 and stage_lines[0].startswith("run_hybrid ") and "--train-ranks 4" in stage_lines[0]
    assert re.search(r"run_hybrid .* train --config", text)
    if shutil.which("shellcheck"):
        check = subprocess.run(["shellcheck", "-s", "bash", "-"], input=text, text=True, capture_output=True)
        assert check.returncode == 0, check.stdout
