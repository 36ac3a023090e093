"""One GPU per local rank: the decision table, and on this CPU machine the path that real ranks take.

There is no GPU here, so what can be observed is (1) which GPU a local rank would get for a given number of
visible GPUs, and (2) that ranks reach the pinning point before TensorFlow fixes its devices (visible devices
can still be changed after `init_world`, which is what makes `set_visible_devices` effective on a GPU node).
"""
import json
import subprocess
import sys

import pytest

from exascale_climate.utils.devices import gpu_for_local_rank
from exascale_climate.utils.launch import exaclimate, launch_command, rank_env, run_ranks


@pytest.mark.parametrize("local_rank,local_size,visible,expected", [
    (0, 4, 4, 0), (3, 4, 4, 3),            # a 4-GPU node with 4 ranks: one each
    (1, 2, 8, 1),                           # fewer ranks than GPUs: the first ones
    (0, 4, 1, 0), (3, 4, 1, 0),             # the scheduler gave each task one GPU (srun --gpus-per-task=1)
    (2, 4, 2, 0), (3, 4, 2, 1),             # more ranks than GPUs: shared round-robin
    (0, 1, 0, None), (5, 6, 0, None),       # no GPU: CPU
])
def test_gpu_for_local_rank(local_rank, local_size, visible, expected):
    assert gpu_for_local_rank(local_rank, local_size, visible) == expected


def test_local_rank_outside_the_node_is_refused():
    with pytest.raises(ValueError, match="local rank 2"):
        gpu_for_local_rank(2, 2, 4)


PINNING_PROBE = """
import json, sys
import exascale_climate.utils.runtime as runtime

late = None
original = runtime.select_devices


def probed(world):  # the observer: is TensorFlow still unconfigured when the pinning runs?
    global late
    import tensorflow as tf
    try:  # raises RuntimeError once TensorFlow has initialised its devices (a GPU list of [] would not)
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()])
        late = False
    except RuntimeError:
        late = True
    return original(world)


runtime.select_devices = probed
world = runtime.init_world()
import tensorflow as tf
from exascale_climate.utils.devices import device_report
out = dict(device_report(world), too_late=late, result=float(tf.reduce_sum(tf.ones(3))))
open(sys.argv[1] + f"/rank-{world.rank}.json", "w").write(json.dumps(out))
"""


@pytest.mark.multirank
def test_ranks_pin_before_tensorflow_fixes_its_devices_under_mpirun(tmp_path):
    result = run_ranks(2, [sys.executable, "-c", PINNING_PROBE, str(tmp_path)], controller="mpirun", timeout=300)
    assert result.returncode == 0, result.stdout
    reports = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("rank-*.json"))]
    assert [(r["rank"], r["local_rank"], r["local_size"]) for r in reports] == [(0, 0, 2), (1, 1, 2)]
    for r in reports:
        assert r["too_late"] is False  # nothing in init_world ran a TensorFlow op before the pinning point
        assert r["physical_gpus"] == 0 and r["gpu_index"] is None and r["gpus"] == []
        assert r["result"] == 3.0  # and TensorFlow computes on the CPU afterwards


@pytest.mark.slow
@pytest.mark.multirank
def test_info_lists_every_rank_of_two_simulated_hosts_once(tmp_path):
    """`exaclimate info` under 4 ranks as 2 hosts: rank 0 prints one report with every rank's devices."""
    cmd = launch_command(4, exaclimate("info", "--json"), "gloo", hosts="localhost:2,127.0.0.1:2")
    proc = subprocess.run(cmd, env=rank_env(2), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line.split(":", 1)[1] for line in proc.stdout.splitlines() if "<stdout>:" in line]
    assert all(line.startswith("[0]") for line in proc.stdout.splitlines() if "<stdout>:" in line)
    info = json.loads("\n".join(lines))
    ranks = info["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1, 2, 3]
    assert [(r["local_rank"], r["local_size"]) for r in ranks] == [(0, 2), (1, 2), (0, 2), (1, 2)]
    assert all(r["gpus"] == [] and r["physical_gpus"] == 0 for r in ranks)
    assert info["horovod"]["frameworks"]["tensorflow"] is True
