"""`train.mllog`: MLPerf HPC mllog events beside metrics.jsonl (one process, the blob dataset), and the time
budget (`train.time_budget_s`) that `bench converge` stops on."""
from __future__ import annotations

import json
import subprocess

import pytest

from conftest import blob_overrides
from exascale_climate.utils.launch import exaclimate, rank_env
from exascale_climate.utils.log import read_json_lines


def _train(run_dir, overrides):
    argv = exaclimate("train", "--run-dir", str(run_dir), *sum((["--set", s] for s in overrides), []))
    result = subprocess.run(argv, env=rank_env(1, 2), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _events(path):
    """The mllog file read by hand: every `:::MLLOG {json}` line."""
    return [json.loads(line.split(":::MLLOG ", 1)[1]) for line in path.read_text().splitlines()
            if line.startswith(":::MLLOG ")]


def test_mllog_events_follow_the_run_and_a_reached_target_is_success(blob_data, tmp_path):
    run_dir = tmp_path / "run"
    _train(run_dir, blob_overrides(blob_data, **{"train.epochs": 4, "train.validate_every_steps": 2,
                                                 "train.target_iou": 0.5, "train.deterministic": "true",
                                                 "train.mllog.enabled": "true"}))
    events = _events(run_dir / "mllog.log")
    keys = [e["key"] for e in events]
    for key in ("submission_benchmark", "submission_org", "submission_division", "submission_status",
                "submission_platform", "number_of_nodes", "accelerators_per_node", "seed", "global_batch_size",
                "batchnorm_group_size", "gradient_accumulation_frequency", "opt_name", "opt_lr", "opt_betas",
                "opt_eps", "scheduler_lr_warmup_steps", "scheduler_lr_warmup_factor", "train_samples",
                "eval_samples", "init_start", "init_stop", "run_start", "run_stop", "cache_clear"):
        assert keys.count(key) == 1, key
    assert keys.index("init_start") < keys.index("init_stop") < keys.index("run_start") < keys.index("run_stop")
    valid = [r for r in read_json_lines(run_dir / "metrics.jsonl") if r["kind"] == "valid"]
    accuracy = [e for e in events if e["key"] == "eval_accuracy"]
    assert [e["value"] for e in accuracy] == [r["val_mean_iou"] for r in valid]
    # every 2 steps of 2 samples = 4 of the 16 training samples: a quarter epoch more each time
    assert [e["metadata"]["epoch_num"] for e in accuracy] == [0.25 * (i + 1) for i in range(len(accuracy))]
    by_key = {e["key"]: e for e in events}
    assert by_key["train_samples"]["value"] == 16 and by_key["eval_samples"]["value"] == 4
    assert by_key["global_batch_size"]["value"] == 2 and by_key["opt_name"]["value"] == "Adam"
    assert by_key["run_stop"]["metadata"]["status"] == "success"
    assert events[-1]["key"] == "run_stop" and accuracy[-1]["value"] >= 0.5
    # epoch_start 1 opens the first epoch; every closed epoch has its epoch_stop with the same number
    starts = [e["metadata"]["epoch_num"] for e in events if e["key"] == "epoch_start"]
    stops = [e["metadata"]["epoch_num"] for e in events if e["key"] == "epoch_stop"]
    assert starts[0] == 1 and stops == starts[:len(stops)]


def test_time_budget_stops_at_the_next_validation_and_is_logged_aborted(blob_data, tmp_path):
    run_dir = tmp_path / "run"
    result = _train(run_dir, blob_overrides(blob_data, **{"train.epochs": 4, "train.validate_every_steps": 2,
                                                          "train.time_budget_s": 0.001,
                                                          "train.mllog.enabled": "true"}))
    valid = [r for r in read_json_lines(run_dir / "metrics.jsonl") if r["kind"] == "valid"]
    assert [r["step"] for r in valid] == [2]  # the first validation is already past a 1 ms budget
    assert result["step"] == 2 and result["stop_reason"] == "time_budget" and result["samples"] == 4
    assert valid[0]["samples"] == 4 and valid[0]["train_seconds"] > 0
    events = _events(run_dir / "mllog.log")
    assert [e for e in events if e["key"] == "run_stop"][0]["metadata"]["status"] == "aborted"


MULTI = [pytest.param(4, "gloo", "localhost:2,127.0.0.1:2", 2, id="4-gloo-2hosts"),
         pytest.param(4, "mpirun", None, 1, id="4-mpirun")]


@pytest.mark.multirank
@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("np_,controller,hosts,nodes", MULTI)
def test_mllog_on_four_ranks_is_written_once_with_the_global_batch(blob_data, tmp_path, np_, controller, hosts,
                                                                   nodes):
    """4 ranks (2 simulated hosts; mpirun on one machine): one mllog file by rank 0 with each event once, the
    nodes Horovod reports, the global batch (2 x 4 ranks) and the epoch numbers of that batch; the accuracies are
    the ones metrics.jsonl holds."""
    from exascale_climate.utils.launch import run_ranks

    run_dir = tmp_path / "run"
    sets = blob_overrides(blob_data, **{"train.epochs": 2, "train.validate_every_steps": 1,
                                        "train.mllog.enabled": "true"})
    argv = exaclimate("train", "--run-dir", str(run_dir), *sum((["--set", s] for s in sets), []))
    result = run_ranks(np_, argv, controller, timeout=1500, hosts=hosts)
    assert result.returncode == 0, result.stdout[-3000:]
    assert [p.name for p in run_dir.iterdir() if "mllog" in p.name] == ["mllog.log"]
    events = _events(run_dir / "mllog.log")
    keys = [e["key"] for e in events]
    for key in ("submission_benchmark", "number_of_nodes", "global_batch_size", "train_samples", "init_start",
                "init_stop", "run_start", "run_stop"):
        assert keys.count(key) == 1, key
    by_key = {e["key"]: e for e in events}
    assert by_key["number_of_nodes"]["value"] == nodes
    assert by_key["global_batch_size"]["value"] == 2 * np_ and by_key["train_samples"]["value"] == 16
    valid = [r for r in read_json_lines(run_dir / "metrics.jsonl") if r["kind"] == "valid"]
    accuracy = [e for e in events if e["key"] == "eval_accuracy"]
    assert len(accuracy) == 4 and [e["value"] for e in accuracy] == [r["val_mean_iou"] for r in valid]
    # every step is 8 of the 16 samples: half an epoch more at each validation
    assert [e["metadata"]["epoch_num"] for e in accuracy] == [0.5, 1.0, 1.5, 2.0]
    assert events[-1]["key"] == "run_stop"


def test_cpu_budget_stops_and_the_recorded_cpu_time_fits_the_process_usage(blob_data, tmp_path):
    """`train.cpu_budget_s` counts rank 0's CPU seconds (a shared machine's quiet-equivalent time); the recorded
    `cpu_seconds` is bounded by what the OS charged the whole training process (getrusage of the child)."""
    import resource

    run_dir = tmp_path / "run"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = _train(run_dir, blob_overrides(blob_data, **{"train.epochs": 4, "train.validate_every_steps": 2,
                                                          "train.cpu_budget_s": 0.001,
                                                          "train.time_budget_s": 100000}))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    charged = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    valid = [r for r in read_json_lines(run_dir / "metrics.jsonl") if r["kind"] == "valid"]
    assert [r["step"] for r in valid] == [2] and result["stop_reason"] == "time_budget"
    assert 0 < valid[0]["cpu_seconds"] < charged
