"""Rank-aware logging: rank 0 prints progress, other ranks only warnings (unless asked); JSON-lines metrics."""
import subprocess
import sys

from exascale_climate.utils.log import JsonLinesWriter, read_json_lines

SCRIPT = ("from exascale_climate.utils.log import setup_logging, get_logger\n"
          "setup_logging({verbosity})\n"
          "log = get_logger('t')\n"
          "log.debug('debug-line'); log.info('info-line'); log.warning('warn-line')\n")


def stderr_of(verbosity=0, env=None):
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith(("HOROVOD_", "OMPI_", "SLURM_", "PMI"))}
    full.update(env or {})
    return subprocess.run([sys.executable, "-c", SCRIPT.format(verbosity=verbosity)], env=full,
                          capture_output=True, text=True, check=True).stderr


def test_rank0_prints_info_other_ranks_only_warnings():
    rank0 = stderr_of(env={"HOROVOD_RANK": "0", "HOROVOD_SIZE": "2"})
    rank1 = stderr_of(env={"HOROVOD_RANK": "1", "HOROVOD_SIZE": "2"})
    assert "info-line" in rank0 and "[rank 0]" in rank0
    assert "info-line" not in rank1 and "warn-line" in rank1 and "[rank 1]" in rank1
    every = stderr_of(env={"HOROVOD_RANK": "1", "HOROVOD_SIZE": "2", "EXACLIMATE_LOG_ALL_RANKS": "1"})
    assert "info-line" in every


def test_verbosity_levels():
    assert "debug-line" not in stderr_of(0) and "info-line" in stderr_of(0)
    assert "debug-line" in stderr_of(1)
    quiet = stderr_of(-1)
    assert "info-line" not in quiet and "warn-line" in quiet


def test_json_lines_round_trip(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with JsonLinesWriter(path) as w:
        w.write({"step": 1, "loss": 0.5})
        w.write({"step": 2, "loss": 0.25})
    records = read_json_lines(path)
    assert [(r["step"], r["loss"]) for r in records] == [(1, 0.5), (2, 0.25)]
    assert all("time" in r for r in records)
