"""Render batch scripts from the Jinja2 templates in `jobs/templates/`, with every user value shell-quoted.

Why quoting is the renderer's job, not the template author's: every `{{ value }}` goes through `shlex.quote`
(Jinja's `finalize`), so a template cannot forget it. Scheduler directive lines (`#SBATCH`, `#BSUB`) are not
parsed by the shell; their values use the `sbatch` / `bsub` filters, which quote for the scheduler's own
parser and mark the result as already safe. Values with newlines or control characters are refused (a
newline would start a new directive or command). Unknown template variables are errors (StrictUndefined).
"""
from __future__ import annotations

import math
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import jinja2

from exascale_climate.config import Config
from exascale_climate.errors import ConfigError

TEMPLATE_DIR = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Template:
    """A bundled template and the resources it assumes when the config leaves them at 0."""

    scheduler: str
    name: str
    file: str
    description: str
    cpus_per_task: int = 0
    gpus_per_task: int = 0


TEMPLATES = {
    ("slurm", "generic"): Template("slurm", "generic", "slurm-generic.sh.j2",
                                   "generic SLURM cluster: sbatch + srun --mpi=pmix"),
    ("slurm", "gpu"): Template("slurm", "gpu", "slurm-gpu.sh.j2",
                               "GPU SLURM system (Piz Daint / Perlmutter style): one rank per GPU, CPU binding",
                               gpus_per_task=1),
    ("lsf", "summit"): Template("lsf", "summit", "lsf-summit.sh.j2",
                                "Summit-style LSF: bsub + jsrun, 6 ranks per node, NVMe staging to /mnt/bb/$USER",
                                cpus_per_task=7, gpus_per_task=1),
    ("lsf", "generic"): Template("lsf", "generic", "lsf-generic.sh.j2", "generic LSF cluster: bsub + mpirun"),
}
SCRIPT_SUFFIX = {"slurm": ".sbatch", "lsf": ".lsf"}


class Raw(str):
    """Text that is already safe where it is inserted (a directive value quoted for its scheduler)."""


def _finalize(value):
    if isinstance(value, Raw):
        return value
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"job template: {value!r} cannot be written into a script (a template bug)")
    if isinstance(value, int):
        return str(value)
    return shlex.quote(str(value))


def sbatch_quote(value) -> Raw:
    """Quote a value for an `#SBATCH` line: sbatch splits on blanks, honours double quotes and backslashes."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return Raw(f'"{text}"')


def bsub_quote(value) -> Raw:
    """Quote a value for a `#BSUB` line: double quotes as in LSF's documentation. `$` and backticks are
    refused: whether LSF expands them in directives is not something we can check without LSF."""
    text = str(value)
    if "$" in text or "`" in text:
        raise ConfigError(f"{text!r}: '$' and '`' are not allowed in #BSUB directives (LSF may expand them)")
    return Raw(sbatch_quote(text))


def _environment(extra_dir: Path | None = None) -> jinja2.Environment:
    dirs = [str(extra_dir)] if extra_dir else []
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(dirs + [str(TEMPLATE_DIR)]),
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["sbatch"] = sbatch_quote
    env.filters["bsub"] = bsub_quote
    return env


def find_template(scheduler: str, name: str = "") -> Template | Path:
    """A bundled template by name (empty = the scheduler's generic one), or the path of a user's .j2 file."""
    name = name or "generic"
    if (scheduler, name) in TEMPLATES:
        return TEMPLATES[(scheduler, name)]
    path = Path(name)
    if path.suffix == ".j2" and path.is_file():
        return path
    known = ", ".join(n for (s, n) in TEMPLATES if s == scheduler)
    raise ConfigError(f"job.template: {name!r} is not a {scheduler} template; choose one of {known} "
                      "or give the path of a .j2 file")


def parse_walltime(value) -> int:
    """HH:MM:SS (or D-HH:MM:SS) to seconds. YAML 1.1 reads an unquoted 1:00:00 or 10:00:00 as seconds: plain
    integers are therefore seconds."""
    text = str(value).strip()
    if text.isdigit():
        seconds = int(text)
    else:
        m = re.fullmatch(r"(?:(\d+)-)?(\d{1,3}):([0-5]\d):([0-5]\d)", text)
        if not m:
            raise ConfigError(f"job.time: {value!r} is not a wall-clock time; use HH:MM:SS, e.g. 01:30:00")
        days, hours, minutes, secs = (int(g or 0) for g in m.groups())
        seconds = ((days * 24 + hours) * 60 + minutes) * 60 + secs
    if seconds <= 0:
        raise ConfigError(f"job.time: {value!r} must be longer than zero")
    return seconds


def format_walltime(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def lsf_walltime(seconds: int) -> str:
    """LSF's -W takes [hours:]minutes: round up to whole minutes."""
    minutes = math.ceil(seconds / 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _check_text(key: str, value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(f"{key}: {value!r} contains a newline or control character; not allowed in a job script")
    return value


def _absolute(workdir: Path, path: str) -> str:
    return str(Path(os.path.normpath(workdir / path)))


@dataclass
class JobPaths:
    """Where a submitted job keeps its script, frozen config and logs (all absolute)."""

    run_dir: Path
    log_dir: Path
    job_dir: Path  # <run_dir>/jobs/<stamp>: the script and the config exactly as submitted

    @property
    def config_file(self) -> Path:
        return self.job_dir / "config.yaml"

    def script(self, scheduler: str) -> Path:
        return self.job_dir / f"job{SCRIPT_SUFFIX[scheduler]}"


def job_paths(cfg: Config, stamp: str, workdir: Path | None = None) -> JobPaths:
    workdir = workdir or Path.cwd()
    run_dir = Path(_absolute(workdir, _check_text("job.run_dir", cfg.job.run_dir)))
    log_dir = Path(_absolute(workdir, _check_text("job.log_dir", cfg.job.log_dir))) if cfg.job.log_dir \
        else run_dir / "logs"
    return JobPaths(run_dir, log_dir, run_dir / "jobs" / stamp)


def job_context(cfg: Config, paths: JobPaths, template: Template | Path, *, python: str | None = None,
                workdir: Path | None = None, config_file: str | None = None) -> dict:
    """Every variable a template may use, resolved from the config; paths absolute so compute nodes find
    them, and the interpreter of the submitting process so the job runs the same installation."""
    job = cfg.job
    workdir = workdir or Path.cwd()
    for key in ("job_name", "account", "partition", "constraint", "stage_root", "srun_mpi"):
        _check_text(f"job.{key}", getattr(job, key))
    for i, module in enumerate(job.modules):
        _check_text(f"job.modules[{i}]", module)
    if not re.fullmatch(r"[A-Za-z0-9_]*", job.srun_mpi):
        raise ConfigError(f"job.srun_mpi: {job.srun_mpi!r} is not an MPI plugin name (e.g. pmix, pmi2, cray_shasta)")
    defaults = template if isinstance(template, Template) else Template(job.scheduler, "custom", "", "")
    cpus = job.cpus_per_task or defaults.cpus_per_task
    gpus = job.gpus_per_task or defaults.gpus_per_task
    seconds = parse_walltime(job.time)
    warn = min(job.warn_before_s, seconds // 2)  # a warning before half the time would stop every job early
    if job.scheduler == "lsf" and "%" in str(paths.log_dir):
        raise ConfigError(f"job.log_dir: {str(paths.log_dir)!r} contains '%', which LSF reads as a pattern")
    # The log is named after the job, reduced to characters that are safe in a file name (%x would put a
    # job name with "/" into directories that do not exist).
    log_name = re.sub(r"[^A-Za-z0-9._+-]+", "_", job.job_name).strip("._") or "job"
    if job.scheduler == "slurm":  # sbatch expands %j; a literal % is %%
        log_file = str(paths.log_dir).replace("%", "%%") + f"/{log_name}-%j.out"
    else:
        log_file = f"{paths.log_dir}/{log_name}-%J.out"

    train_dir = Path(_absolute(workdir, cfg.data.train_dir))
    eval_split = "test" if cfg.data.test_dir else "valid"
    if Path(cfg.data.valid_dir).name == "validation" and not cfg.data.test_dir:
        eval_split = "validation"  # the MLPerf tree: staging keeps the directory name as published
    eval_dir = _absolute(workdir, cfg.data.test_dir or cfg.data.valid_dir)
    if job.stage and train_dir.name != "train":
        raise ConfigError(f"data.train_dir: {cfg.data.train_dir!r} must be <data root>/train for node-local "
                          "staging (the root's train/valid/test are copied); or set job.stage=false")
    return {
        "hybrid": hybrid_context(cfg, template),
        "scheduler": job.scheduler,
        "job_name": job.job_name,
        "nodes": job.nodes,
        "tasks_per_node": job.tasks_per_node,
        "ntasks": job.nodes * job.tasks_per_node,
        "cpus_per_task": cpus,
        "gpus_per_task": gpus,
        "threads": cfg.distributed.threads_per_rank or cpus,
        "time": format_walltime(seconds),
        "walltime_minutes": lsf_walltime(seconds),
        "warn_seconds": warn,
        "warn_minutes": lsf_walltime(warn) if warn else "",
        "account": job.account,
        "partition": job.partition,
        "constraint": job.constraint,
        "modules": list(job.modules),
        "srun_mpi": job.srun_mpi,
        "workdir": str(workdir),
        "python": python or sys.executable,
        "run_dir": str(paths.run_dir),
        "log_file": log_file,
        "config_file": config_file or str(paths.config_file),
        "data_src": str(train_dir.parent),
        "stage": job.stage,
        "stage_root": job.stage_root,
        "evaluate": job.evaluate,
        "eval_split": eval_split,
        "eval_dir": eval_dir,
    }


HYBRID_TEMPLATES = {("slurm", "generic"), ("lsf", "generic")}


def hybrid_context(cfg: Config, template: Template | Path) -> dict | None:
    """Hybrid mode's placement (docs/TRAINING.md): the compute ranks fill `job.nodes` nodes, then one parameter
    server per node on `distributed.parameter_servers` extra nodes (a server has a node's network to itself)."""
    d, job = cfg.distributed, cfg.job
    if d.mode != "hybrid":
        return None
    if isinstance(template, Template) and (template.scheduler, template.name) not in HYBRID_TEMPLATES:
        raise ConfigError(f"job.template: {template.name!r} does not place parameter servers yet; use the generic "
                          f"{template.scheduler} template for distributed.mode=hybrid")
    compute = job.nodes * job.tasks_per_node
    if compute % d.groups:
        raise ConfigError(f"distributed.groups: {d.groups} groups cannot split {compute} compute ranks "
                          f"({job.nodes} nodes x {job.tasks_per_node}) evenly")
    return {"groups": d.groups, "servers": d.parameter_servers, "compute_ranks": compute,
            "ntasks": compute + d.parameter_servers, "nodes": job.nodes + d.parameter_servers,
            "slots": (job.nodes + d.parameter_servers) * job.tasks_per_node}


def render(template: Template | Path, context: dict) -> str:
    """The script text; a variable the context lacks is an error naming it."""
    if isinstance(template, Path):
        env, name = _environment(template.parent), template.name
    else:
        env, name = _environment(), template.file
    try:
        return env.get_template(name).render(context)
    except jinja2.UndefinedError as e:
        raise ConfigError(f"job.template {name}: {e.message}; known variables: {', '.join(sorted(context))}") \
            from None
    except jinja2.TemplateError as e:
        raise ConfigError(f"job.template {name}: {e}") from None


# ----------------------------------------------------------------------------- examples in slurm/
# The ready-to-copy scripts in the repository's slurm/ directory are rendered from the templates above (the
# one source of truth) by `python -m exascale_climate.jobs.render slurm/`; a test checks they are current.
EXAMPLE_PYTHON = "/path/to/exascale_climate/.venv/bin/python"
EXAMPLE_WORKDIR = Path("/path/to/project")
EXAMPLE_CONFIG = "/path/to/project/tiramisu.yaml"  # `exaclimate config show --config tiramisu > tiramisu.yaml`
EXAMPLES: dict[str, dict] = {
    "slurm-generic.sbatch": {"scheduler": "slurm", "template": "generic", "nodes": 4, "tasks_per_node": 4,
                             "time": "02:00:00", "account": "my_account", "partition": "normal"},
    "slurm-gpu.sbatch": {"scheduler": "slurm", "template": "gpu", "nodes": 8, "tasks_per_node": 4,
                         "gpus_per_task": 1, "cpus_per_task": 16, "time": "02:00:00", "account": "my_account",
                         "constraint": "gpu", "srun_mpi": ""},
    "lsf-summit.lsf": {"scheduler": "lsf", "template": "summit", "nodes": 16, "tasks_per_node": 6,
                       "time": "02:00:00", "account": "CLI999"},
    "lsf-generic.lsf": {"scheduler": "lsf", "template": "generic", "nodes": 4, "tasks_per_node": 8,
                        "time": "02:00:00", "partition": "normal"},
}


def render_examples() -> dict[str, str]:
    """{file name: script} for slurm/: the paper's Tiramisu config, placeholder paths to edit."""
    from exascale_climate.config import config_from_dict, load_config

    scripts = {}
    for name, job in EXAMPLES.items():
        cfg = load_config("tiramisu", [])
        tree = cfg.to_dict()
        tree["job"].update(job, job_name="exaclimate-tiramisu", run_dir="runs/tiramisu")
        cfg = config_from_dict(tree)
        template = find_template(cfg.job.scheduler, cfg.job.template)
        paths = job_paths(cfg, "submitted", EXAMPLE_WORKDIR)
        scripts[name] = render(template, job_context(cfg, paths, template, python=EXAMPLE_PYTHON,
                                                     workdir=EXAMPLE_WORKDIR, config_file=EXAMPLE_CONFIG))
    return scripts


def write_examples(out_dir: str | Path) -> list[Path]:
    from exascale_climate.utils.io import atomic_path

    written = []
    for name, text in render_examples().items():
        with atomic_path(Path(out_dir) / name) as tmp:
            Path(tmp).write_text(text)
            os.chmod(tmp, 0o755)
        written.append(Path(out_dir) / name)
    return written


if __name__ == "__main__":
    for path in write_examples(sys.argv[1] if len(sys.argv) > 1 else "slurm"):
        print(path)
