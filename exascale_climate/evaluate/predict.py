"""Segment CAM5 / ClimateNet files with a trained model and write CF-conventions netCDF masks + an event table.

Any grid works: the model is fully convolutional but needs H and W divisible by its down-sampling factor, so
each input is PADDED (not tiled) up to the next multiple -- periodically in longitude on a global grid (the
globe wraps; regional grids reflect) and by reflection in latitude, split evenly on both sides -- and the
prediction is cropped back to the input grid.
Inputs are processed one file and one time step at a time, so a directory of any size streams through.
"""
from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exascale_climate.data.layouts import Sample, detect_layout, time_steps
from exascale_climate.data.samples import read_sample
from exascale_climate.errors import DataError, ExaclimateError
from exascale_climate.data.grid import sample_coordinates, spans_globe
from exascale_climate.evaluate.events import Event, find_events, wind_speed, write_event_table
from exascale_climate.utils.io import atomic_path, printable
from exascale_climate.utils.log import get_logger
from exascale_climate.utils.progress import progress_bar
from exascale_climate.variables import CLASS_NAMES, NUM_CLASSES

log = get_logger("predict")
TC_FIELDS = ("PSL", "UBOT", "VBOT")  # minimum sea-level pressure; lowest-level wind speed
INPUT_SUFFIXES = (".nc", ".nc4", ".h5", ".hdf5")
FLAG_MEANINGS = " ".join(CLASS_NAMES)
NO_COPY = ("_FillValue", "missing_value")  # encoding attributes: the writer sets its own


def pad_amounts(size: int, divisor: int) -> tuple[int, int]:
    """(before, after) padding that makes `size` a multiple of `divisor`, split evenly."""
    total = (-size) % divisor
    return total // 2, total - total // 2


def _pad_axis(x: np.ndarray, axis: int, before: int, after: int, periodic: bool) -> np.ndarray:
    if not (before or after):
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (before, after)
    mode = "wrap" if periodic else ("reflect" if max(before, after) < x.shape[axis] else "edge")
    return np.pad(x, widths, mode=mode)


def pad_for_model(x: np.ndarray, divisor: int, periodic_lon: bool = True) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Pad (B, H, W, C) to multiples of `divisor` -- longitude wraps on a global grid (else reflects), latitude
    reflects -- and return the padded array with the (rows, cols) slices that crop back to the input."""
    top, bottom = pad_amounts(x.shape[1], divisor)
    left, right = pad_amounts(x.shape[2], divisor)
    x = _pad_axis(x, 2, left, right, periodic_lon)
    x = _pad_axis(x, 1, top, bottom, periodic=False)
    return x, (slice(top, x.shape[1] - bottom), slice(left, x.shape[2] - right))


# ------------------------------------------------------------------------------------------ model
class Segmenter:
    """A trained model plus the exact input treatment of training (channels, normalisation), for inference.

    The trained Keras model has a fixed input grid; a fully convolutional network's weights do not depend on it,
    so another (padded) grid gets the same architecture built for that grid with the trained weights copied in.
    """

    def __init__(self, model, cfg, stats, source: str = ""):
        from exascale_climate.evaluate.prior import trained_weights
        from exascale_climate.models import required_divisor
        from exascale_climate.pipeline.dataset import channels_of
        from exascale_climate.pipeline.normalize import make_normalizer

        self.model = model
        self.cfg = cfg
        self.source = source
        self.channels = channels_of(cfg)
        self.divisor = required_divisor(cfg.model)
        self.normalize = make_normalizer(cfg, stats)
        self.class_weights = trained_weights(cfg, stats)  # what its loss weighted by (evaluate.prior)
        self._forward: dict[tuple[int, int], object] = {}

    def _forward_for(self, grid: tuple[int, int]):
        """A compiled softmax(model(x)) for inputs on `grid` (built once per grid)."""
        if grid not in self._forward:
            import tensorflow as tf

            model = self.model
            if tuple(model.input_shape[1:3]) != grid:
                from exascale_climate.models import build_model

                model = build_model(self.cfg.model, grid + (len(self.channels),), self.cfg.train.precision)
                model.set_weights(self.model.get_weights())
            self._forward[grid] = tf.function(lambda x: tf.nn.softmax(model(x, training=False), axis=-1),
                                              reduce_retracing=True)
        return self._forward[grid]

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, stats_file: str | Path | None = None,
                        precision: str | None = None) -> "Segmenter":
        from exascale_climate.utils.runtime import apply_tf_threads, configure_threads

        configure_threads()
        apply_tf_threads()
        from exascale_climate.pipeline.dataset import load_stats
        from exascale_climate.train.checkpoints import load_for_inference

        model, cfg = load_for_inference(checkpoint, precision)
        if stats_file:  # an explicit file wins over the run's staged copy and its data.stats_file
            cfg.data.stats_file = str(stats_file)
            cfg.pipeline.stage_dir = ""
        try:
            stats = load_stats(cfg)
        except DataError as e:
            where = e.path + (f" [{e.field}]" if e.field else "")
            raise DataError(e.path, f"{str(e)[len(where) + 2:]} (the run's normalisation statistics; "
                                    "point --stats at its stats.h5)", field=e.field) from None
        return cls(model, cfg, stats, source=str(checkpoint))

    def probabilities(self, data: np.ndarray, periodic_lon: bool = True) -> np.ndarray:
        """Class probabilities (B, H, W, K) float32 for raw fields (B, H, W, C) in the model's channel order."""
        x = self.normalize(np.asarray(data, np.float32))
        padded, (rows, cols) = pad_for_model(x, self.divisor, periodic_lon)
        probs = self._forward_for(tuple(padded.shape[1:3]))(padded).numpy()
        return probs[:, rows, cols, :]

    def segment(self, sample: Sample, fields: np.ndarray) -> np.ndarray:
        """Probabilities (H, W, K) of one sample read by `read`, padding periodically if its grid is global."""
        _, lon = sample_coordinates(sample)
        return self.probabilities(fields[None], periodic_lon=spans_globe(lon))[0]

    def read(self, path: str | Path, time_index: int = 0, with_labels: bool = False,
             extra: tuple[str, ...] = ()) -> tuple[Sample, np.ndarray]:
        """A sample with the model's channels first plus `extra` fields when the file has them."""
        wanted = self.channels + [v for v in extra if v not in self.channels]
        try:
            sample = read_sample(path, channels=wanted, with_labels=with_labels, time_index=time_index)
        except DataError as e:
            if not extra or e.field not in extra:
                raise
            sample = read_sample(path, channels=self.channels, with_labels=with_labels, time_index=time_index)
        return sample, sample.data[..., : len(self.channels)]


# ------------------------------------------------------------------------------------------ netCDF out
def _input_coordinates(path: Path, sample: Sample, steps: int):
    """lat/lon/time coordinates as in the input file (netCDF: copied with their attributes, raw values)."""
    import xarray as xr

    from exascale_climate.utils.io import library_path

    if detect_layout(path) == "netcdf":
        with library_path(path) as name, xr.open_dataset(name, decode_times=False, decode_cf=False) as ds:
            coords = {name: ds[name].load() for name in ("time", "lat", "lon") if name in ds.variables}
        if {"lat", "lon"} <= coords.keys():
            coords = {k: xr.Variable(v.dims, v.values, {a: x for a, x in v.attrs.items() if a not in NO_COPY})
                      for k, v in coords.items()}
            if "time" in coords and coords["time"].dims != ("time",):
                del coords["time"]
            return coords
    lat, lon = sample_coordinates(sample)
    coords = {
        "lat": xr.Variable(("lat",), lat, {"units": "degrees_north", "standard_name": "latitude",
                                          "long_name": "latitude", "axis": "Y"}),
        "lon": xr.Variable(("lon",), lon, {"units": "degrees_east", "standard_name": "longitude",
                                          "long_name": "longitude", "axis": "X"}),
    }
    if sample.time and steps == 1:
        coords["time"] = xr.Variable(("time",), np.array([0.0]), {
            "units": f"hours since {sample.time.replace('T', ' ')}", "standard_name": "time", "axis": "T",
            "calendar": sample.attrs.get("calendar", "standard")})
    return coords


def write_mask_netcdf(path: str | Path, masks: np.ndarray, coords: dict, probabilities: np.ndarray | None = None,
                      attrs: dict | None = None) -> Path:
    """CF-1.8 netCDF: `mask` (time, lat, lon) with flag_values/flag_meanings, optional `probability`
    (time, class, lat, lon); coordinates as given (copied from the input). Written atomically."""
    import xarray as xr

    data_vars = {"mask": xr.Variable(("time", "lat", "lon"), masks.astype(np.int8), {
        "long_name": "extreme weather class (model prediction)",
        "flag_values": np.arange(NUM_CLASSES, dtype=np.int8),
        "flag_meanings": FLAG_MEANINGS,
        "valid_range": np.array([0, NUM_CLASSES - 1], dtype=np.int8),
    })}
    encoding = {"mask": {"zlib": True, "complevel": 4, "_FillValue": None}}
    if probabilities is not None:
        data_vars["probability"] = xr.Variable(
            ("time", "class", "lat", "lon"), np.moveaxis(probabilities.astype(np.float32), -1, 1),
            {"long_name": "class probability (softmax of the model output)", "units": "1",
             "valid_range": np.array([0.0, 1.0], dtype=np.float32)})
        data_vars["class"] = xr.Variable(("class",), np.arange(NUM_CLASSES, dtype=np.int8), {
            "long_name": "extreme weather class", "flag_values": np.arange(NUM_CLASSES, dtype=np.int8),
            "flag_meanings": FLAG_MEANINGS})
        encoding["probability"] = {"zlib": True, "complevel": 4, "_FillValue": None}
    for name in ("lat", "lon", "time"):
        if name in coords:
            encoding[name] = {"_FillValue": None}
    ds = xr.Dataset(data_vars, coords=coords, attrs={
        "Conventions": "CF-1.8", "title": "Extreme weather segmentation (TC / AR masks)",
        "history": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ} exaclimate predict",
        **(attrs or {})})
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, format="NETCDF4", encoding=encoding)
    return Path(path)


# ------------------------------------------------------------------------------------------ driver
def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given, directories as their netCDF/HDF5 files (sorted; stats.h5 and temporaries skipped)."""
    from exascale_climate.utils.io import is_temp_name

    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and f.suffix in INPUT_SUFFIXES
                            and f.name != "stats.h5" and not is_temp_name(f))
        elif p.exists():
            files.append(p)
        else:
            raise DataError(p, "no such file or directory")
    if not files:
        raise ExaclimateError(f"no netCDF/HDF5 input files in {', '.join(map(str, inputs))}")
    return files


@dataclass
class FilePrediction:
    masks: np.ndarray  # (T, H, W) int8
    probabilities: np.ndarray | None  # (T, H, W, K)
    events: list[Event]
    first: Sample  # the first time step (its grid, time and attributes describe the file)


def predict_file(segmenter: Segmenter, path: Path, keep_probabilities: bool = False,
                 prior_correction: float = 0.0) -> FilePrediction:
    """All time steps of one file: masks (classes after the prior correction, `evaluate.prior`), optional
    probabilities (the model's own), and the TC/AR objects of each step."""
    from exascale_climate.evaluate.prior import corrected_classes

    steps = time_steps(path)
    masks, probs, events, first = [], [], [], None
    for t in range(steps):
        sample, fields = segmenter.read(path, time_index=t, extra=TC_FIELDS)
        p = segmenter.segment(sample, fields)
        mask = corrected_classes(p, segmenter.class_weights, prior_correction).astype(np.int8)
        masks.append(mask)
        if keep_probabilities:
            probs.append(p)
        events += events_for_sample(sample, mask, source=printable(path.name))
        first = first or sample
    return FilePrediction(np.stack(masks), np.stack(probs) if probs else None, events, first)


def events_for_sample(sample: Sample, mask: np.ndarray, source: str = "") -> list[Event]:
    """Events of `mask` on the sample's grid, with TC intensity from the sample's PSL/UBOT/VBOT if present."""
    lat, lon = sample_coordinates(sample)
    field = {v: sample.data[..., sample.variables.index(v)] for v in TC_FIELDS if v in sample.variables}
    wind = wind_speed(field["UBOT"], field["VBOT"]) if {"UBOT", "VBOT"} <= field.keys() else None
    return find_events(mask, lat, lon, time=sample.time or "", psl=field.get("PSL"), wind=wind, source=source)


def output_name(path: Path) -> str:
    return f"{path.stem}.mask.nc"


def predict(checkpoint: str | Path, inputs: list[str | Path], out_dir: str | Path, *, probabilities: bool = False,
            stats_file: str | Path | None = None, strict: bool = False, precision: str | None = None,
            prior_correction: float = 0.0) -> dict:
    """`exaclimate predict`: one CF netCDF mask file per input plus `events.csv` for all of them.

    prior_correction: classes from the probabilities divided by the trained class weights to this power
    (`evaluate.prior`; 0: the plain argmax).

    A bad input (DataError) is named and skipped, or with `strict` ends the run; either way, and on an
    interruption too, `events.csv` is written for the files whose masks were written, so masks and table agree.
    Returns {"outputs", "events_csv", "events", "files", "skipped": [{"file", "error"}]}.
    """
    from exascale_climate import __version__

    files = expand_inputs(inputs)
    targets: dict[str, Path] = {}
    for path in files:
        clash = targets.setdefault(output_name(path), path)
        if clash != path:
            raise ExaclimateError(f"{clash} and {path} would both write {output_name(path)}; predict them "
                                  "into different --out directories")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from exascale_climate.evaluate import detection
    from exascale_climate.evaluate.prior import check_exponent

    prior_correction = check_exponent(prior_correction)
    boxes = detection.is_detector_checkpoint(checkpoint)  # semisup: box-filled masks, one event per box
    if boxes and prior_correction:
        raise ExaclimateError("--prior-correction: only for segmentation runs (a semisup detector predicts boxes)")
    segmenter = detection.load_detector(checkpoint, stats_file, precision) if boxes else \
        Segmenter.from_checkpoint(checkpoint, stats_file, precision)
    all_events: list[Event] = []
    written, skipped = [], []
    with progress_bar("predict", len(files)) as advance, _event_table_kept(out_dir / "events.csv", all_events):
        for path in files:
            try:
                result = detection.predict_boxes_file(segmenter, path) if boxes else \
                    predict_file(segmenter, path, keep_probabilities=probabilities,
                                 prior_correction=prior_correction)
            except DataError as e:
                if strict:
                    raise
                log.warning("skipped %s", e)
                skipped.append({"file": str(path), "error": str(e)})
                advance(1)
                continue
            coords = _input_coordinates(path, result.first, len(result.masks))
            target = out_dir / output_name(path)
            write_mask_netcdf(target, result.masks, coords, result.probabilities, attrs={
                "source": f"exascale_climate {__version__}, model {segmenter.cfg.model.name}, "
                          f"checkpoint {printable(segmenter.source)}",
                "input_file": printable(str(path)),
                "grid_handling": f"padded to multiples of {segmenter.divisor} (longitude wrap, latitude "
                                 "reflection), cropped back" + ("; mask = predicted boxes filled" if boxes else ""),
                **({"prior_correction": f"mask = argmax of the class probabilities / trained class weights "
                                        f"{[round(float(w), 4) for w in segmenter.class_weights]} ^ "
                                        f"{prior_correction:g}"} if prior_correction else {}),
            })
            all_events += result.events
            written.append(str(target))
            log.info("%s -> %s (%d events)", path.name, target, len(result.events))
            advance(1)
    if skipped and not written:
        raise ExaclimateError(f"none of the {len(files)} input file(s) could be read; the first: "
                              f"{skipped[0]['error']}")
    events_path = out_dir / "events.csv"
    return {"outputs": written, "events_csv": str(events_path), "events": len(all_events),
            "files": len(written), "skipped": skipped}


@contextlib.contextmanager
def _event_table_kept(path: Path, events: list[Event]):
    """Write the event table of `events` (the files done so far) however the block ends."""
    try:
        yield
    finally:
        write_event_table(path, events)
