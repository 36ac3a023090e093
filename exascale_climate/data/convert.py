"""netCDF (or older HDF5) -> DeepCAM-layout HDF5 training samples, and (re)labelling files in place.

Each output is written to a temporary name and renamed, so an interrupted run leaves no half file; a rerun skips
outputs that already exist (resume). Bad inputs raise DataError naming the file and variable, or with
`skip_bad` are reported and skipped.
"""
from __future__ import annotations

import shutil
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from exascale_climate.config import LabellerConfig
from exascale_climate.data.layouts import detect_layout, expand_inputs, netcdf_time_steps, time_steps
from exascale_climate.data.samples import read_sample
from exascale_climate.data.writers import write_deepcam_sample, write_labels
from exascale_climate.errors import DataError, ExaclimateError
from exascale_climate.utils.io import atomic_path, out_of_space_message, printable, remove_stale_temps
from exascale_climate.utils.log import get_logger
from exascale_climate.utils.progress import progress_bar

log = get_logger("data.convert")
KEPT_ATTRS = ("label_source", "calendar", "seed")  # carried from the input into each sample (seed: provenance)


def output_name(path: Path, time_index: int, steps: int) -> str:
    """`data-<stem>.h5` (the stem of ClimateNet/synthetic files is already `data-<time stamp>`)."""
    stem = path.stem if path.stem.startswith("data-") else f"data-{path.stem}"
    return f"{stem}.h5" if steps == 1 else f"{stem}-{time_index:04d}.h5"


def _convert_file(path: Path, out_dir: Path, channels, dtype, compression, chunks, overwrite) -> tuple[int, int]:
    """(written, already there) for one input file."""
    steps = time_steps(path)
    written = existing = 0
    for t in range(steps):
        target = out_dir / output_name(path, t, steps)
        if target.exists() and not overwrite:
            existing += 1
            continue
        sample = read_sample(path, channels=channels, with_labels=True, time_index=t)
        write_deepcam_sample(target, sample.data, sample.labels, sample.variables, source=printable(path.name),
                             time=sample.time, lat=sample.lat, lon=sample.lon, dtype=dtype,
                             compression=compression, chunks=chunks,
                             attrs={k: sample.attrs[k] for k in KEPT_ATTRS if k in sample.attrs})
        written += 1
    return written, existing


def _convert_one(args) -> tuple[str, int, int, tuple | None]:
    """Worker: never raises DataError (it does not pickle); returns its (path, message, field) instead."""
    path, out_dir, channels, dtype, compression, chunks, overwrite = args
    try:
        written, existing = _convert_file(Path(path), Path(out_dir), channels, dtype, compression, chunks, overwrite)
        return path, written, existing, None
    except DataError as e:
        where = e.path + (f" [{e.field}]" if e.field else "")
        return path, 0, 0, (e.path, str(e)[len(where) + 2:], e.field)


def convert(inputs, out_dir, *, channels: list[str] | None = None, dtype: str = "float32",
            compression: str | None = None, chunks=None, skip_bad: bool = False, overwrite: bool = False,
            workers: int = 1) -> dict:
    """Convert every time step of every input (a file, or a directory's data files) to one DeepCAM sample in
    `out_dir`.

    Returns {"written", "existing", "skipped": [{"file", "error"}], "out_dir"}.
    """
    inputs = expand_inputs(inputs)
    if not inputs:
        raise DataError("<inputs>", "no input files given")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    jobs = [(str(p), str(out), list(channels) if channels else None, dtype, compression, chunks, overwrite)
            for p in inputs]
    summary = {"out_dir": str(out), "written": 0, "existing": 0, "skipped": []}
    try:
        _run_jobs(jobs, workers, summary, skip_bad)
    except OSError as e:
        message = out_of_space_message(e, _still_needed(inputs, out))
        if message is None:
            raise
        raise ExaclimateError(message) from e
    log.info("converted into %s: %d written, %d already there, %d skipped", out, summary["written"],
             summary["existing"], len(summary["skipped"]))
    return summary


def _still_needed(inputs, out: Path) -> str | None:
    """What a full disk still had to take: the samples not yet in `out` times the size of one written sample
    (the largest there; the same options give the same size uncompressed, compressed it is an estimate)."""
    try:
        missing = sum(1 for path in inputs for t, n in _steps(path) if not (out / output_name(path, t, n)).exists())
        sizes = [p.stat().st_size for p in out.glob("data-*.h5")]
    except (OSError, DataError):
        return None
    if not missing or not sizes:
        return None
    each = max(sizes)
    return f"about {missing * each} bytes needed for the {missing} sample(s) still to write, {each} bytes each"


def _steps(path: Path):
    n = time_steps(path)
    return [(t, n) for t in range(n)]


def _run_jobs(jobs, workers: int, summary: dict, skip_bad: bool) -> None:
    with progress_bar("convert", len(jobs)) as advance:
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
                results = pool.map(_convert_one, jobs)
                for result in results:
                    _collect(summary, result, skip_bad)
                    advance()
        else:
            for job in jobs:
                _collect(summary, _convert_one(job), skip_bad)
                advance()


def _collect(summary: dict, result, skip_bad: bool) -> None:
    path, written, existing, error = result
    if error:
        err = DataError(*error)
        if not skip_bad:
            raise err
        log.warning("skipped %s", err)
        summary["skipped"].append({"file": path, "error": str(err)})
    summary["written"] += written
    summary["existing"] += existing


# --------------------------------------------------------------------------------------------- label
def label_files(inputs, out_dir=None, cfg: LabellerConfig | None = None, skip_bad: bool = False) -> dict:
    """Run the heuristic labeller on each file (or each data file of a directory) and write LABELS (netCDF) or
    labels (HDF5).

    Without `out_dir` files are relabelled in place (through a temporary copy, renamed over the original).
    """
    from exascale_climate.data.labeller import REQUIRED, label_fields
    from exascale_climate.data.grid import sample_coordinates

    cfg = cfg or LabellerConfig()
    inputs = expand_inputs(inputs)
    source = "heuristic labeller (exascale_climate.data.labeller)"
    summary = {"labelled": 0, "skipped": [], "class_counts": [0, 0, 0]}
    out = Path(out_dir) if out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out)
    with progress_bar("label", len(inputs)) as advance:
        for path in map(Path, inputs):
            try:
                layout = detect_layout(path)
                steps = netcdf_time_steps(path) if layout == "netcdf" else 1
                per_step = []
                for t in range(steps):
                    sample = read_sample(path, channels=list(REQUIRED), with_labels=False, time_index=t)
                    lat, lon = sample_coordinates(sample)
                    fields = {name: sample.data[..., i] for i, name in enumerate(sample.variables)}
                    per_step.append(label_fields(fields, lat, lon, cfg))
                target = (out / path.name) if out else path
                with atomic_path(target) as tmp:
                    shutil.copyfile(path, tmp)
                    write_labels(tmp, layout, per_step, source)
            except DataError as e:
                if not skip_bad:
                    raise
                log.warning("skipped %s", e)
                summary["skipped"].append({"file": str(path), "error": str(e)})
                advance()
                continue
            for labels in per_step:
                for c in range(3):
                    summary["class_counts"][c] += int((labels == c).sum())
            summary["labelled"] += 1
            advance()
    return summary
