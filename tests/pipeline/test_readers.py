"""The reader processes' shutdown: a real Python process reads a real dataset with `pipeline.reader_mode=process`
the way training does, then exits; it must exit (rc 0), and leave no reader process behind.

`Pool.terminate()` (the old exit hook, and multiprocessing's own finalizer) first takes the task queue's read lock,
which an idle worker holds while it waits in `get()`. If that worker is dead (SIGTERM sent to every process of the
job, as SLURM does at the time limit) the lock is never released and the exit hangs forever in
`_help_stuff_finish`; the `killed` case builds that state on purpose and checks it was built. The subprocess
timeout is the hang detector, not a speed test."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
HANG_S = 600  # generous: the machine is shared; a hang is forever

CHILD = '''
import os, signal, sys, time
from pathlib import Path


def busy(marker):
    """A read that takes long: says it has started, then sleeps."""
    Path(marker).touch()
    time.sleep(600)


if __name__ == "__main__":
    from exascale_climate.config import load_config
    from exascale_climate.pipeline import readers
    from exascale_climate.pipeline.dataset import build_dataset, load_stats, split_files

    root, mode = Path(sys.argv[1]), sys.argv[2]
    cfg = load_config(None, [f"data.train_dir={root}/train", f"data.valid_dir={root}/valid",
                             f"data.test_dir={root}/test", "train.batch_size=1", "pipeline.normalization=none",
                             "pipeline.reader_mode=process", "pipeline.readers=2"])
    ds = build_dataset(cfg, split_files(cfg, "train"), load_stats(cfg), training=True)
    if mode == "partial":  # stopped mid-epoch: reads still in flight at exit
        next(iter(ds))
    else:
        print("batches", sum(1 for _ in ds), flush=True)
    pool = readers._process_pool(2)
    if mode == "busy":  # a worker in a long read at exit
        marker = root / "busy-started"
        pool.apply_async(busy, (str(marker),))
        while not marker.exists():
            time.sleep(0.05)
    if mode == "killed":  # SIGTERM to the idle readers, as a scheduler sends it to every process of the job
        dead = set()
        for worker in list(pool._pool):
            os.kill(worker.pid, signal.SIGTERM)
            worker.join()
            dead.add(worker.pid)
        held = not pool._inqueue._rlock.acquire(block=False)  # the dead worker that waited in get() kept it
        if not held:
            pool._inqueue._rlock.release()
        print("lock held by a dead worker", held, flush=True)
        while len([w for w in pool._pool if w.is_alive() and w.pid not in dead]) < 2:  # the pool replaces them
            time.sleep(0.05)
    print("workers", *[w.pid for w in pool._pool], flush=True)
    print("exiting", mode, flush=True)
'''


def run_child(tmp_path: Path, root: Path, mode: str) -> tuple[int | None, str, str]:
    script = tmp_path / "child.py"  # a file, not -c: spawned workers import the main module from it
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, str(script), str(root), mode], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=HANG_S)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the child and its stuck workers
        out, err = proc.communicate()
        return None, out, err


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("mode", ["epoch", "epoch", "partial", "busy", "killed"])
def test_a_process_using_the_reader_pool_exits_and_leaves_no_reader_behind(dataset, tmp_path, mode):
    rc, out, err = run_child(tmp_path, dataset, mode)
    assert rc is not None, f"{mode}: the process did not exit in {HANG_S} s (hung at exit)\n{out}\n{err[-3000:]}"
    assert rc == 0, err[-3000:]
    lines = out.splitlines()
    assert lines[-1] == f"exiting {mode}"
    if mode != "partial":
        assert "batches 6" in lines
    if mode == "killed":
        assert "lock held by a dead worker True" in lines  # the state that hung terminate() was really built
    workers = [int(p) for p in next(line for line in lines if line.startswith("workers ")).split()[1:]]
    assert len(workers) == 2
    assert not [pid for pid in workers if alive(pid)]
