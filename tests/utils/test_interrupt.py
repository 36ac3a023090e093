"""SIGINT / SIGTERM during the real CLI (a subprocess on real files): it stops at once, exits 130 / 143, leaves no
temporary behind, and what it completed is intact. The signal is sent when the run is seen working from outside
(a temporary file in the output directory, or a data file open in /proc/<pid>/fd)."""
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest

from exascale_climate.data.writers import write_deepcam_sample, write_netcdf_sample
from exascale_climate.data.grid import default_coordinates
from exascale_climate.variables import VARIABLE_NAMES

REPO = Path(__file__).resolve().parents[2]
GRID = (192, 288)  # big enough that a gzip:9 sample takes a visible moment to write on a busy machine


# Plausible weather (issue 23: values outside a variable's physical range are rejected on read), hand-picked in
# VARIABLE_NAMES order; PSL and TMQ get their means below.
MEAN = np.array([0, 0, 0, 0, 0, 0.01, 97000, 0, 220, 255, 1e-7, 288, 287, 100, 11800, 60], np.float32)
SPREAD = np.array([1, 1, 1, 1, 1, 0.001, 1, 1, 1, 1, 1e-8, 1, 1, 1, 1, 1], np.float32)


def make_inputs(directory: Path, count: int, kind: str = "netcdf") -> list[Path]:
    """One random sample written for real, hard-linked under `count` names (distinct outputs, little disk)."""
    rng = np.random.default_rng(0)
    h, w = GRID
    data = (rng.normal(0.0, 1.0, (h, w, len(VARIABLE_NAMES))) * SPREAD + MEAN).astype(np.float32)
    data[..., VARIABLE_NAMES.index("PSL")] += 101000.0
    data[..., VARIABLE_NAMES.index("TMQ")] += 20.0
    labels = rng.integers(0, 3, (h, w)).astype(np.uint8)
    lat, lon = default_coordinates(h, w)
    directory.mkdir(parents=True, exist_ok=True)
    if kind == "netcdf":
        first = write_netcdf_sample(directory / "sample-000.nc", data, labels, list(VARIABLE_NAMES), lat=lat,
                                    lon=lon, time_hours=0.0)
    else:
        first = write_deepcam_sample(directory / "data-000.h5", data, labels, list(VARIABLE_NAMES), lat=lat,
                                     lon=lon, source="test")
    paths = [Path(first)]
    for i in range(1, count):
        link = directory / f"{Path(first).stem.rsplit('-', 1)[0]}-{i:03d}{Path(first).suffix}"
        os.link(first, link)
        paths.append(link)
    return paths


def temporaries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name) if directory.is_dir() else []


def run_until(args, trigger, sig, ignore_sigint=False):
    """Start `exaclimate ARGS`, send `sig` as soon as `trigger(proc)` holds; return (exit code, stderr,
    pids of the descendants seen when the signal was sent)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def setup():  # a background job of a non-interactive shell starts with SIGINT ignored
        if ignore_sigint:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen([sys.executable, "-m", "exascale_climate.cli", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=setup)
    children = []
    try:
        while proc.poll() is None:
            if trigger(proc):
                children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
                proc.send_signal(sig)
                break
            time.sleep(0.002)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err.decode(), children


def has_temp(directory: Path):
    return lambda proc: bool(temporaries(directory))


def opened_under(directory: Path):
    """True once the process has a file of `directory` open (seen in /proc, outside the code under test)."""
    def check(proc):
        try:
            return any(f.path.startswith(str(directory)) for f in psutil.Process(proc.pid).open_files())
        except psutil.Error:
            return False
    return check


def assert_intact_samples(out: Path, expected_shape):
    for p in out.glob("*.h5"):
        with h5py.File(p, "r") as f:
            assert f["climate/data"].shape == expected_shape
            assert np.isfinite(f["climate/data"][()]).all()


@pytest.mark.parametrize("sig, ignore_sigint", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_convert_stops_at_once_and_removes_its_temporary(tmp_path, sig, ignore_sigint):
    inputs = make_inputs(tmp_path / "in", 40)
    out = tmp_path / "out"
    code, err, _ = run_until(["data", "convert", *inputs, "--out", out, "--compression", "gzip:9"], has_temp(out),
                             sig, ignore_sigint)
    assert code == 128 + sig, err
    assert err.strip().splitlines()[-1].startswith(f"error: interrupted by {signal.Signals(sig).name}")
    assert "Traceback" not in err
    assert temporaries(out) == []
    done = list(out.glob("*.h5"))
    assert len(done) < len(inputs)  # it stopped, it did not finish the conversion first
    assert_intact_samples(out, GRID + (len(VARIABLE_NAMES),))


def test_convert_workers_die_with_the_parent_on_sigterm(tmp_path):
    inputs = make_inputs(tmp_path / "in", 40)
    out = tmp_path / "out"
    code, err, children = run_until(["data", "convert", *inputs, "--out", out, "--compression", "gzip:9",
                                     "--workers", "2"], has_temp(out), signal.SIGTERM)
    assert code == 143, err
    assert children, "the pool's workers were running when the signal was sent"
    # the workers are killed before the parent exits, the resource tracker (spared on purpose) leaves by itself as
    # it goes: each is gone, a zombie its dead parent did not reap, or caught mid-exit (its memory already
    # released, so no command line) and gone a moment later (1 run in 10 here)
    left = []
    for pid in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            left.append(psutil.Process(pid))
    _, alive = psutil.wait_procs(left, timeout=10)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [(p.pid, p.status(), p.cmdline()) for p in alive]
    assert temporaries(out) == []
    assert len(list(out.glob("*.h5"))) < len(inputs)
    assert_intact_samples(out, GRID + (len(VARIABLE_NAMES),))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_label_stops_on_a_signal_without_temporaries(tmp_path, sig):
    inputs = make_inputs(tmp_path / "in", 20)
    out = tmp_path / "labelled"
    code, err, _ = run_until(["data", "label", *inputs, "--out", out], has_temp(out), sig)
    assert code == 128 + sig, err
    assert temporaries(out) == []
    import netCDF4

    done = list(out.glob("*.nc"))
    assert len(done) < len(inputs)
    for p in done:  # every file there is complete: it opens and has labels of the grid
        with netCDF4.Dataset(p) as nc:
            assert nc.variables["LABELS"].shape[-2:] == GRID


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stats_stops_on_a_signal_and_writes_no_stats_file(tmp_path, sig):
    data = tmp_path / "data" / "train"
    make_inputs(data, 300, kind="deepcam")
    out = tmp_path / "data" / "stats.h5"
    code, err, _ = run_until(["data", "stats", data, "--out", out], opened_under(data), sig)
    assert code == 128 + sig, err
    assert not out.exists()
    assert temporaries(out.parent) == [] and temporaries(data) == []


def test_label_in_place_on_sigterm_leaves_every_file_whole(tmp_path):
    inputs = make_inputs(tmp_path / "in", 20)
    import netCDF4

    original = {p.name: p.stat().st_ino for p in inputs}
    code, err, _ = run_until(["data", "label", *inputs], has_temp(tmp_path / "in"), signal.SIGTERM)
    assert code == 143, err
    assert temporaries(tmp_path / "in") == []
    files = sorted((tmp_path / "in").glob("*.nc"))
    assert sorted(p.name for p in files) == sorted(original)
    relabelled = [p for p in files if p.stat().st_ino != original[p.name]]  # replaced by a finished copy
    assert len(relabelled) < len(files)
    for p in files:
        with netCDF4.Dataset(p) as nc:
            assert nc.variables["LABELS"].shape[-2:] == GRID and nc.variables["TMQ"].shape[-2:] == GRID


SWALLOWER = """
import sys, time
from exascale_climate.utils.interrupt import stop_on_signals
from exascale_climate.utils.io import atomic_path

out = sys.argv[1]
with stop_on_signals(out):
    with atomic_path(out + "/result.bin") as tmp:
        open(tmp, "wb").write(b"x" * 1000)
        while True:  # code that swallows every exception: the interruption can never unwind through it
            try:
                time.sleep(0.01)
            except BaseException:
                pass
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interruption_that_cannot_unwind_still_ends_the_process_and_its_temporaries(tmp_path, sig):
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", SWALLOWER, str(out)], env=env, stderr=subprocess.PIPE)
    try:
        while proc.poll() is None and not temporaries(out):
            time.sleep(0.002)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, err.decode()
    assert err.decode().strip() == (f"error: interrupted by {signal.Signals(sig).name}: stopped, temporary files "
                                    "removed, complete outputs kept")
    assert list(out.iterdir()) == []


def test_an_interruption_wrapped_by_a_c_extension_is_still_the_interruption(tmp_path):
    """h5py turns an exception raised inside its attribute-iteration callback into `SystemError(...) from` it (seen
    once under SIGTERM in `predict`, a traceback and exit 1); `stop_on_signals` treats it as the interruption.
    A SystemError with another cause stays what it is."""
    from exascale_climate.utils.interrupt import Interrupted, stop_on_signals

    with pytest.raises(Interrupted) as info:
        with stop_on_signals(tmp_path):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except Interrupted as e:  # what h5py's with_phil wrapper does with it
                raise SystemError("<cyfunction FastRLock.__exit__> returned a result with an exception set") from e
    assert info.value.exit_code == 128 + signal.SIGTERM
    with pytest.raises(SystemError):
        with stop_on_signals(tmp_path):
            raise SystemError("unrelated") from ValueError("x")


@pytest.mark.parametrize("walk", ["attributes", "links"])
def test_sigterm_inside_a_real_h5py_callback_is_the_interruption(tmp_path, walk):
    """The wrapping above, by h5py itself: SIGTERM arrives while h5py runs a Python callback of `h5a.iterate` (what
    `attrs` iteration runs, e.g. `layouts.climate_attrs` in every sample read) or of `visititems_links`; the
    handler's Interrupted comes back out of h5py as `SystemError("<cyfunction FastRLock.__exit__> returned a result
    with an exception set")` caused by it (h5py 3.16), and `stop_on_signals` makes that the interruption."""
    from exascale_climate.utils.interrupt import Interrupted, stop_on_signals

    path = tmp_path / "many.h5"
    with h5py.File(path, "w") as f:
        for i in range(200):
            f.attrs[f"a{i:03d}"] = i
            f.create_group(f"g{i:03d}")
    calls = []

    def callback(*args):
        calls.append(args[0])
        if len(calls) == 50:  # the signal lands inside the callback: the handler runs in the interrupted sleep
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)

    raw = []
    with pytest.raises(Interrupted) as info:
        with stop_on_signals(tmp_path):
            try:
                with h5py.File(path, "r") as f:
                    if walk == "attributes":
                        h5py.h5a.iterate(f.id, callback)
                    else:
                        f.visititems_links(callback)
            except BaseException as e:
                raw.append(e)
                raise
    assert info.value.exit_code == 128 + signal.SIGTERM
    assert len(calls) == 50  # stopped in the callback that saw the signal, not after the walk
    assert isinstance(raw[0], SystemError) and isinstance(raw[0].__cause__, Interrupted), (
        f"h5py {h5py.__version__} now raises {raw[0]!r}: the wrapping this test exercises is gone")
    assert "FastRLock.__exit__" in str(raw[0])


SPARE_TRACKERS = """
import os, signal, subprocess, sys, time
from multiprocessing import resource_tracker
from joblib.externals.loky.backend import resource_tracker as loky_tracker
from exascale_climate.utils.interrupt import Interrupted, stop_on_signals
resource_tracker.ensure_running()
loky_tracker.ensure_running()
worker = subprocess.Popen(["sleep", "600"])
print(resource_tracker._resource_tracker._pid, loky_tracker._resource_tracker._pid, worker.pid, flush=True)
try:
    with stop_on_signals(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
except Interrupted:
    print("interrupted", flush=True)
sys.stdin.read()  # held open while the test looks at the processes
"""


def test_an_interruption_stops_the_workers_but_not_the_resource_trackers(tmp_path):
    """The handler kills every child process but the standard library's and loky's resource trackers (they clean
    up after the process; a killed one printed 'resource_tracker: process died unexpectedly' and loky KeyErrors at
    the end of every CI run, from the tests above that signal pytest itself). Seen from outside with psutil."""
    proc = subprocess.Popen([sys.executable, "-c", SPARE_TRACKERS, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        tracker, loky, worker = (int(x) for x in proc.stdout.readline().split())
        assert proc.stdout.readline().strip() == "interrupted", proc.stderr.read()
        assert not psutil.pid_exists(worker) or psutil.Process(worker).status() == psutil.STATUS_ZOMBIE
        for pid in (tracker, loky):
            assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
            assert psutil.Process(pid).ppid() == proc.pid
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
