"""Rendering the batch templates: valid bash, shellcheck-clean, golden LSF scripts, quoting of hostile input."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from exascale_climate.cli import main
from exascale_climate.config import CONFIG_DIR, config_from_dict, load_config
from exascale_climate.errors import ConfigError
from exascale_climate.jobs.directives import parse_directives, validate_lsf
from exascale_climate.jobs.render import (
    TEMPLATES, find_template, format_walltime, job_context, job_paths, lsf_walltime, parse_walltime, render,
    render_examples,
)

REPO = Path(__file__).resolve().parents[2]
DEMO = CONFIG_DIR / "demo.yaml"
GOLDEN = Path(__file__).parent / "golden"
WORKDIR = Path("/work dir/project")  # a space on purpose
PYTHON = "/opt/venv with space/bin/python"
HOSTILE_NAME = 'x"; touch /tmp/pwned; #'
HOSTILE_VALUE = "$(touch /tmp/pwned)`touch /tmp/pwned`'; touch /tmp/pwned"


def job_cfg(**job):
    tree = load_config(DEMO).to_dict()
    tree["job"].update(job)
    return config_from_dict(tree)


def render_job(cfg, workdir=WORKDIR, stamp="golden"):
    template = find_template(cfg.job.scheduler, cfg.job.template)
    paths = job_paths(cfg, stamp, workdir)
    return render(template, job_context(cfg, paths, template, python=PYTHON, workdir=workdir))


def shell_values(script: str, names=("PYTHON", "CONFIG", "RUN_DIR", "DATA_SRC")) -> dict:
    """What bash itself makes of the script's variable assignments."""
    lines = [line for line in script.splitlines() if re.match(rf"^({'|'.join(names)})=", line)]
    probe = "\n".join(lines + [f'printf "%s\\0" "${n}"' for n in names])
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout
    return dict(zip(names, out.split("\0")[:-1]))


ALL_TEMPLATES = sorted(TEMPLATES)


@pytest.mark.parametrize("scheduler,name", ALL_TEMPLATES)
def test_every_template_renders_valid_bash(scheduler, name):
    script = render_job(job_cfg(scheduler=scheduler, template=name, nodes=2, tasks_per_node=2))
    syntax = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert syntax.returncode == 0, syntax.stderr
    for step in ("stage --src", "train --config", "evaluate --checkpoint"):
        assert step in script
    assert "THREADS" in script and "OMP_NUM_THREADS" in script


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck is not installed")
@pytest.mark.parametrize("scheduler,name", ALL_TEMPLATES)
def test_every_template_passes_shellcheck(scheduler, name, tmp_path):
    script = tmp_path / "job.sh"
    account = LSF_HOSTILE if scheduler == "lsf" else HOSTILE_VALUE
    script.write_text(render_job(job_cfg(scheduler=scheduler, template=name, job_name=HOSTILE_NAME,
                                         account=account, stage_root="/scratch/my dir")))
    check = subprocess.run(["shellcheck", "-s", "bash", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout


@pytest.mark.parametrize("name", ["summit", "generic"])
def test_lsf_scripts_match_golden_files(name):
    """Any change to an LSF script is deliberate: regenerate with EXACLIMATE_UPDATE_GOLDEN=1."""
    cfg = job_cfg(scheduler="lsf", template=name, nodes=3, tasks_per_node=6, time="01:30:20",
                  account="CLI 101", partition="batch", job_name=HOSTILE_NAME, run_dir="runs/it's a run")
    script = render_job(cfg)
    golden = GOLDEN / f"lsf-{name}.lsf"
    if os.environ.get("EXACLIMATE_UPDATE_GOLDEN"):
        golden.write_text(script)
    assert script == golden.read_text()


LSF_HOSTILE = 'it\'s "odd"; touch /tmp/pwned #'


def test_lsf_directives_parse_back_to_the_inputs():
    cfg = job_cfg(scheduler="lsf", template="summit", nodes=3, tasks_per_node=6, time="01:30:20",
                  account=LSF_HOSTILE, job_name=HOSTILE_NAME, run_dir="runs/it's a run")
    directives = validate_lsf(render_job(cfg))
    assert directives["-J"] == HOSTILE_NAME
    assert directives["-P"] == LSF_HOSTILE
    assert directives["-nnodes"] == "3"
    assert directives["-W"] == "01:31"  # LSF takes minutes: rounded up
    assert directives["-o"] == f"{WORKDIR}/runs/it's a run/logs/x_touch_tmp_pwned-%J.out"
    assert directives["-alloc_flags"] == "nvme smt4"


def test_lsf_directives_refuse_dollar_and_backticks():
    """LSF might expand them inside #BSUB lines; there is no LSF here to prove otherwise."""
    with pytest.raises(ConfigError, match="not allowed in #BSUB"):
        render_job(job_cfg(scheduler="lsf", account=HOSTILE_VALUE))
    with pytest.raises(ConfigError, match="not allowed in #BSUB"):
        render_job(job_cfg(scheduler="lsf", run_dir="runs/$HOME"))


def test_summit_runs_six_resource_sets_per_node_and_stages_to_nvme():
    script = render_job(job_cfg(scheduler="lsf", template="summit", nodes=2, tasks_per_node=6))
    assert "jsrun --nrs $((NODES * 6)) --rs_per_host 6 --tasks_per_rs 1 --cpu_per_rs 7 --gpu_per_rs 1" in script
    assert 'STAGE_ROOT="/mnt/bb/$USER"' in script
    assert "THREADS=7" in script


def test_gpu_slurm_binds_one_rank_per_gpu():
    script = render_job(job_cfg(scheduler="slurm", template="gpu", nodes=2, tasks_per_node=4, cpus_per_task=16,
                                constraint="gpu"))
    options = {d.option: d.value for d in parse_directives(script, "#SBATCH")}
    assert options["--gpus-per-task"] == "1" and options["--cpus-per-task"] == "16"
    assert options["--ntasks-per-node"] == "4" and options["--constraint"] == "gpu"
    assert "--gpu-bind=single:1" in script and "SLURM_CPU_BIND=cores" in script
    assert "THREADS=16" in script


@pytest.mark.parametrize("scheduler,name", ALL_TEMPLATES)
def test_hostile_values_stay_plain_text(scheduler, name):
    lsf = scheduler == "lsf"
    run_dir = "runs/a b/it's \"quoted\" " + ("; touch /tmp/pwned" if lsf else "$(touch /tmp/pwned)")
    account = LSF_HOSTILE if lsf else HOSTILE_VALUE
    cfg = job_cfg(scheduler=scheduler, template=name, job_name=HOSTILE_NAME, account=account, run_dir=run_dir)
    script = render_job(cfg)
    values = shell_values(script)
    assert values["RUN_DIR"] == f"{WORKDIR}/{run_dir}"
    assert values["PYTHON"] == PYTHON
    assert values["CONFIG"] == f"{WORKDIR}/{run_dir}/jobs/golden/config.yaml"
    prefix = "#SBATCH" if scheduler == "slurm" else "#BSUB"
    directives = {d.option: d.value for d in parse_directives(script, prefix)}
    assert directives.get("--job-name", directives.get("-J")) == HOSTILE_NAME
    assert directives.get("--account", directives.get("-P")) == account


def test_newlines_in_values_are_refused():
    with pytest.raises(ConfigError, match="job.job_name"):
        render_job(job_cfg(job_name="ok\n#SBATCH --nodes=100"))
    with pytest.raises(ConfigError, match="job.run_dir"):
        render_job(job_cfg(run_dir="runs/a\nrm -rf /"))


def test_unknown_template_variables_are_errors(tmp_path):
    own = tmp_path / "mine.sh.j2"
    own.write_text("#!/bin/bash\necho {{ job_name }} {{ no_such_variable }}\n")
    with pytest.raises(ConfigError, match="no_such_variable"):
        render_job(job_cfg(template=str(own)))
    own.write_text("#!/bin/bash\necho {{ job_name }} on {{ nodes }} nodes\n")
    assert render_job(job_cfg(template=str(own), job_name="a b", nodes=3)) == "#!/bin/bash\necho 'a b' on 3 nodes\n"


def test_unknown_template_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="summit"):
        find_template("lsf", "nosuch")
    with pytest.raises(ConfigError, match="gpu"):
        find_template("slurm", "summit")


def test_walltime_parsing():
    assert parse_walltime("01:30:00") == 5400
    assert parse_walltime(5400) == 5400  # YAML 1.1 reads an unquoted 1:30:00 as 5400
    assert parse_walltime("1-02:00:00") == 26 * 3600
    assert format_walltime(5430) == "01:30:30"
    assert lsf_walltime(61) == "00:02"
    for bad in ("90 minutes", "1:60:00", "00:00:00"):
        with pytest.raises(ConfigError, match="job.time"):
            parse_walltime(bad)
    assert load_config(DEMO, ["job.time=10:00:00"]).job.time == "36000"  # what YAML makes of it
    assert "--time=10:00:00" in render_job(load_config(DEMO, ["job.time=10:00:00"]))


def test_staging_needs_a_train_directory_named_train():
    with pytest.raises(ConfigError, match="data.train_dir"):
        render_job(load_config(DEMO, ["data.train_dir=somewhere/training"]))
    script = render_job(load_config(DEMO, ["data.train_dir=somewhere/training", "job.stage=false",
                                             "data.test_dir=elsewhere/test"]))
    assert "stage --src" not in script
    assert f"EVAL_DATA='{WORKDIR}/elsewhere/test'" in script


def test_slurm_directory_examples_are_rendered_from_the_templates():
    """slurm/ is generated: `python -m exascale_climate.jobs.render slurm` after changing a template."""
    examples = render_examples()
    on_disk = {p.name: p.read_text() for p in (REPO / "slurm").iterdir() if p.suffix in (".sbatch", ".lsf")}
    assert sorted(on_disk) == sorted(examples)
    for name, text in examples.items():
        assert on_disk[name] == text, f"slurm/{name} is stale: run python -m exascale_climate.jobs.render slurm"


def test_dry_run_prints_the_script_and_writes_nothing(tmp_path):
    runner = CliRunner()
    with runner.isolated_filesystem(temp_dir=tmp_path):
        result = runner.invoke(main, ["submit", "--scheduler", "lsf", "--template", "summit", "--nodes", "2",
                                      "--tasks-per-node", "6", "--time", "00:10:00", "--job-name", HOSTILE_NAME,
                                      "--config", "demo", "--run-dir", "my run", "--dry-run"])
        assert result.exit_code == 0, result.output
        assert "#BSUB -nnodes 2" in result.output and "#BSUB -W 00:10" in result.output
        assert validate_lsf(result.output)["-J"] == HOSTILE_NAME
        assert not Path("my run").exists()


def test_bad_job_options_are_one_line_errors(tmp_path):
    result = CliRunner().invoke(main, ["submit", "--time", "soon", "--config", str(DEMO), "--dry-run"])
    assert result.exit_code == 2 and "job.time" in result.output
    result = CliRunner().invoke(main, ["submit", "--nodes", "0", "--config", str(DEMO), "--dry-run"])
    assert result.exit_code == 2 and "job.nodes" in result.output


@pytest.mark.skipif(bool(shutil.which("bsub")), reason="LSF is installed here: this would submit for real")
def test_submitting_to_lsf_without_lsf_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["submit", "--scheduler", "lsf", "--config", str(DEMO),
                                       "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2 and "bsub: not found" in result.output
    assert not (tmp_path / "run").exists()


def test_gpu_templates_check_that_every_rank_has_a_gpu_before_anything_else():
    """The GPU jobs start with `exaclimate info --require-gpu` on all ranks (a rank without a GPU stops the job
    instead of training on the CPU); the CPU templates do not."""
    examples = render_examples()
    for name in ("slurm-gpu.sbatch", "lsf-summit.lsf"):
        script = examples[name]
        check = script.index('run_ranks "${EXACLIMATE[@]}" info --require-gpu')
        assert check < script.index(" stage --src") < script.index(" train --config")
    assert "Horovod pins" not in examples["slurm-gpu.sbatch"]
    assert "--gpu-bind=single:1" in examples["slurm-gpu.sbatch"]
    for name in ("slurm-generic.sbatch", "lsf-generic.lsf"):
        assert "--require-gpu" not in examples[name]
