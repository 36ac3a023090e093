"""The CLI root: help, version, info --json naming the Horovod build, one-line user errors."""
import json
import socket
import subprocess
import sys

from click.testing import CliRunner

from exascale_climate import __version__
from exascale_climate.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_help_lists_command_groups():
    result = run("--help")
    assert result.exit_code == 0
    for group in ("config", "data", "model", "bench", "jobs", "info"):
        assert f"  {group} " in result.output


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and __version__ in result.output


def test_info_json_names_horovod_build():
    # A real subprocess: info imports TensorFlow and Horovod as a user's shell would.
    # --require-gpu on this GPU-less machine: the report still prints, then one error line and exit 2.
    proc = subprocess.run([sys.executable, "-m", "exascale_climate.cli", "info", "--json", "--require-gpu"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: 1 of 1 rank(s) have no GPU: rank 0 ({socket.gethostname()}, local rank 0); "
        "TensorFlow sees 0 GPU(s) on rank 0's node"]
    info = json.loads(proc.stdout)
    assert info["versions"]["tensorflow"] == "2.18.1"
    assert info["horovod"]["available"] is True
    assert info["horovod"]["version"] == "0.28.1"
    # Frameworks from Horovod's build, checked against pip's record of the installed files (a framework counts
    # when its compiled extension was installed); this venv's Horovod was built with TensorFlow only.
    import importlib.metadata

    installed = [str(f) for f in importlib.metadata.files("horovod")]
    built = {fw for fw in ("tensorflow", "torch", "mxnet")
             if any(f.startswith(f"horovod/{fw}/mpi_lib") and f.endswith(".so") for f in installed)}
    assert {k for k, v in info["horovod"]["frameworks"].items() if v} == built == {"tensorflow"}
    assert set(info["horovod"]["frameworks"]) == {"tensorflow", "torch", "mxnet"}
    assert [(r["rank"], r["local_rank"], r["gpus"]) for r in info["ranks"]] == [(0, 0, [])]  # one process, CPU
    assert info["horovod"]["controllers"] == {"gloo": True, "mpi": True}
    assert info["cpu"]["count"] >= 1
    assert info["threads"]["TF_NUM_INTRAOP_THREADS"]


def test_config_show_prints_resolved_yaml():
    result = run("config", "show", "--config", "demo", "--set", "train.batch_size=3")
    assert result.exit_code == 0
    assert "batch_size: 3" in result.output


def test_bad_precision_is_one_line_naming_the_key():
    proc = subprocess.run([sys.executable, "-m", "exascale_climate.cli", "train", "--config", "demo", "--set",
                           "train.precision=bogus"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: train.precision: 'bogus' is not allowed; choose one of 'float32', "
                                   "'mixed_float16', 'mixed_bfloat16'")


def test_user_error_is_one_line_with_exit_code_2():
    proc = subprocess.run([sys.executable, "-m", "exascale_climate.cli", "config", "show", "--set", "train.epochs=-1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: train.epochs: -1 is too small; must be >= 1 (allowed: 1..1000000)"
    assert "Traceback" not in proc.stderr
    verbose = subprocess.run([sys.executable, "-m", "exascale_climate.cli", "-v", "config", "show", "--set",
                              "train.epochs=-1"], capture_output=True, text=True)
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr
