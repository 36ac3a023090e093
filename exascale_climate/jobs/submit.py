"""`exaclimate submit` and `exaclimate jobs status|cancel`: render a batch script, check it, keep it with the
run, hand it to SLURM (`sbatch`) or LSF (`bsub`), and ask the scheduler about the job afterwards.

Why the config is frozen at submission: the job reads `<run_dir>/jobs/<stamp>/config.yaml`, written from the
resolved config (file + `--set`), so a job waiting in the queue is not changed by later edits, config errors
surface before queueing, and `--set` values never pass through a shell.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from exascale_climate.config import Config, config_from_dict, save_config
from exascale_climate.errors import ConfigError, ExaclimateError
from exascale_climate.jobs.directives import validate_lsf
from exascale_climate.jobs.render import JobPaths, Template, find_template, job_context, job_paths, render
from exascale_climate.utils.io import atomic_path, atomic_write_text

SUBMIT_TOOL = {"slurm": "sbatch", "lsf": "bsub"}


class SchedulerError(ExaclimateError):
    """The scheduler refused a script or a request, or is not installed / reachable."""


@dataclass
class PreparedJob:
    scheduler: str
    template: Template | Path
    paths: JobPaths
    script: str
    workdir: Path

    @property
    def script_path(self) -> Path:
        return self.paths.script(self.scheduler)


@dataclass
class SubmitResult:
    job_id: str | None
    script_path: Path | None
    script: str
    exit_code: int | None = None  # the job's exit code when waited for


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        scheduler = "SLURM" if name[0] == "s" else "LSF"
        raise SchedulerError(f"{name}: not found; {scheduler} is not installed on this machine "
                             "(use --dry-run to only print the script)")
    return path


def _run(argv: list[str], *, input_text: str | None = None, cwd: Path | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=input_text, cwd=cwd, text=True, capture_output=True, timeout=timeout)


def _first_error_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def slurm_reachable() -> bool:
    """True when the SLURM client tools are installed and a controller answers."""
    if not shutil.which("sbatch") or not shutil.which("scontrol"):
        return False
    try:
        return _run(["scontrol", "ping"], timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def prepare(cfg: Config, *, python: str | None = None, workdir: Path | None = None,
            stamp: str | None = None) -> PreparedJob:
    """Render the script for `cfg.job` (nothing written yet)."""
    workdir = Path(workdir or Path.cwd()).resolve()
    stamp = stamp or f"{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(2).hex()}"
    template = find_template(cfg.job.scheduler, cfg.job.template)
    if isinstance(template, Template) and template.scheduler != cfg.job.scheduler:
        raise ConfigError(f"job.template: {template.name!r} is a {template.scheduler} template")
    paths = job_paths(cfg, stamp, workdir)
    context = job_context(cfg, paths, template, python=python, workdir=workdir)
    return PreparedJob(cfg.job.scheduler, template, paths, render(template, context), workdir)


def check_script(job: PreparedJob, *, with_scheduler: bool) -> None:
    """`bash -n`, then the scheduler's own check: `sbatch --test-only` (when asked), LSF's directive parser."""
    syntax = _run(["bash", "-n"], input_text=job.script)
    if syntax.returncode != 0:
        raise ConfigError(f"{job.script_path}: not valid bash: {_first_error_line(syntax.stderr)}")
    if job.scheduler == "lsf":
        validate_lsf(job.script, source=str(job.script_path))
    elif with_scheduler:
        test = _run([_tool("sbatch"), "--test-only"], input_text=job.script, cwd=job.workdir)
        if test.returncode != 0:
            raise SchedulerError(f"{job.script_path}: sbatch --test-only refused it: "
                                 f"{_first_error_line(test.stderr)}")


def write_job(job: PreparedJob, cfg: Config) -> Path:
    """The frozen config and the script, each written atomically, and the log directory."""
    save_config(cfg, job.paths.config_file)
    with atomic_path(job.script_path) as tmp:
        Path(tmp).write_text(job.script)
        os.chmod(tmp, 0o755)
    job.paths.log_dir.mkdir(parents=True, exist_ok=True)
    return job.script_path


def _parse_job_id(scheduler: str, output: str) -> str:
    if scheduler == "slurm":  # --parsable: "<id>" or "<id>;<cluster>"
        m = re.match(r"\s*(\d+)", output)
    else:  # "Job <1234> is submitted to queue <batch>."
        m = re.search(r"Job <(\d+)>", output)
    if not m:
        raise SchedulerError(f"cannot read a job id from the scheduler's answer: {output.strip()!r}")
    return m.group(1)


def _submit_argv(scheduler: str, wait: bool) -> list[str]:
    tool = _tool(SUBMIT_TOOL[scheduler])
    if scheduler == "slurm":
        return [tool, "--parsable"] + (["--wait"] if wait else [])
    return [tool] + (["-K"] if wait else [])  # the script goes to bsub on stdin


def submit_script(scheduler: str, script_path: Path, *, wait: bool = False, cwd: Path | None = None,
                  announce: Callable[[str], None] | None = None) -> tuple[str, int | None]:
    """Submit a written script; returns (job id, the job's exit code if `wait`). The id is announced as soon
    as the scheduler gives it, before waiting."""
    argv = _submit_argv(scheduler, wait)
    if scheduler == "slurm":
        argv.append(str(script_path))
    stdin = open(script_path) if scheduler == "lsf" else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=cwd)
        first = proc.stdout.readline()
        job_id = None
        if first.strip():
            try:
                job_id = _parse_job_id(scheduler, first)
            except SchedulerError:
                pass
        if job_id and announce:
            announce(job_id)
        rest, err = proc.communicate()
    finally:
        if stdin is not subprocess.DEVNULL:
            stdin.close()
    if job_id is None:
        if proc.returncode != 0:
            raise SchedulerError(f"{argv[0]} refused {script_path}: {_first_error_line(err or first + rest)}")
        job_id = _parse_job_id(scheduler, first + rest)
        if announce:
            announce(job_id)
    return job_id, (proc.returncode if wait else None)


def with_job_options(cfg: Config, options: dict | None) -> Config:
    """`cfg` with command-line job options (None = keep the config's value) set on `cfg.job`, checked like
    config keys. Values are taken verbatim, not read as YAML (a job named `yes` stays a string)."""
    chosen = {k: v for k, v in (options or {}).items() if v is not None}
    if not chosen:
        return cfg
    tree = cfg.to_dict()
    tree["job"].update(chosen)
    return config_from_dict(tree)


def submit(cfg: Config, *, options: dict | None = None, dry_run: bool = False, wait: bool = False,
           python: str | None = None, workdir: Path | None = None,
           announce: Callable[[str], None] | None = None) -> SubmitResult:
    """Render, check, write and submit the job described by `cfg.job` (updated with `options`).

    `dry_run`: only render and check (with `sbatch --test-only` when a SLURM controller answers); nothing is
    written or submitted. `wait`: block until the job ends; its exit code is returned.
    """
    cfg = with_job_options(cfg, options)
    job = prepare(cfg, python=python, workdir=workdir)
    if dry_run:
        check_script(job, with_scheduler=job.scheduler == "slurm" and slurm_reachable())
        return SubmitResult(None, None, job.script)
    _tool(SUBMIT_TOOL[job.scheduler])  # before anything is written
    check_script(job, with_scheduler=True)
    script_path = write_job(job, cfg)

    def record(job_id: str) -> None:  # kept with the script at once, also when waiting is interrupted
        atomic_write_text(job.paths.job_dir / "job_id", job_id + "\n")
        if announce:
            announce(job_id)

    job_id, exit_code = submit_script(job.scheduler, script_path, wait=wait, cwd=job.workdir, announce=record)
    return SubmitResult(job_id, script_path, job.script, exit_code)


# ------------------------------------------------------------------------------------- status / cancel
_JOB_ID = re.compile(r"\d+(_\d+)?(\[\d+\])?")


def _check_job_id(job_id: str) -> str:
    if not _JOB_ID.fullmatch(job_id):
        raise ConfigError(f"JOBID: {job_id!r} is not a job id (digits, e.g. 12345)")
    return job_id


def job_status(job_id: str, scheduler: str = "slurm") -> dict:
    """{'job_id', 'state', 'elapsed', 'reason'/'exit_code'} from squeue (recent jobs) or bjobs."""
    _check_job_id(job_id)
    if scheduler == "slurm":
        out = _run([_tool("squeue"), "-h", "--states=all", "-j", job_id, "-o", "%i|%T|%M|%R"])
        lines = [line for line in out.stdout.splitlines() if line.strip()]
        if out.returncode == 0 and lines:
            jid, state, elapsed, reason = lines[0].split("|", 3)
            return {"job_id": jid, "state": state, "elapsed": elapsed, "reason": reason}
        acct = _run([_tool("sacct"), "-n", "-X", "-P", "-j", job_id, "-o", "JobID,State,Elapsed,ExitCode"]) \
            if shutil.which("sacct") else None
        if acct is not None and acct.returncode == 0 and acct.stdout.strip():
            jid, state, elapsed, exit_code = acct.stdout.strip().splitlines()[0].split("|", 3)
            return {"job_id": jid, "state": state, "elapsed": elapsed, "exit_code": exit_code}
        raise SchedulerError(f"job {job_id}: unknown to SLURM ({_first_error_line(out.stderr or 'not in squeue')})")
    out = _run([_tool("bjobs"), "-noheader", "-o", "jobid stat run_time exit_code delimiter='|'", job_id])
    if out.returncode != 0 or not out.stdout.strip():
        raise SchedulerError(f"job {job_id}: unknown to LSF ({_first_error_line(out.stderr or out.stdout)})")
    jid, state, elapsed, exit_code = (out.stdout.strip().splitlines()[0].split("|") + ["", "", ""])[:4]
    return {"job_id": jid, "state": state, "elapsed": elapsed, "exit_code": exit_code}


ENDED_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                "BOOT_FAIL", "DEADLINE", "DONE", "EXIT"}


def cancel_job(job_id: str, scheduler: str = "slurm") -> None:
    """scancel / bkill. An unknown or already ended job is an error (scancel itself says nothing then)."""
    state = job_status(job_id, scheduler)["state"]
    if state.split()[0] in ENDED_STATES:
        raise SchedulerError(f"job {job_id}: already ended ({state}); nothing to cancel")
    argv = [_tool("scancel"), job_id] if scheduler == "slurm" else [_tool("bkill"), job_id]
    out = _run(argv)
    if out.returncode != 0 or "error" in out.stderr.lower():
        raise SchedulerError(f"{Path(argv[0]).name} {job_id}: {_first_error_line(out.stderr or out.stdout)}")
