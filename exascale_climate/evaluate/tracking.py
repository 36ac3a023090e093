"""Tracks of tropical cyclones and atmospheric rivers over time (`exaclimate track`).

TCs are linked as TempestExtremes' StitchNodes links detected nodes: a detection at a later time continues a
track when it lies within a great-circle range of the track's last position (here a speed, km per hour, times
the hours elapsed, so 3-hourly and 6-hourly data use the same setting), at most `max_gap` time steps may be
missing inside a track, and tracks shorter than a minimum lifetime are dropped. Where StitchNodes takes the
nearest candidate, the candidates of one time step are assigned jointly (Hungarian assignment) with the cost
measured from the position each track's last motion predicts, so two storms passing close keep their identities.
ARs are linked by overlap of their masks, as TECA's connected-component tracking does: a river continues the
track whose last object it overlaps most, when the shared area is at least a fraction of the smaller object.

Inputs are masks on a lat/lon grid: labelled ClimateNet files (`LABELS`) or `exaclimate predict` output
(`mask`, with the fields of its `input_file` for the TC intensity when that file is still there).
"""
from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from exascale_climate.config import TrackConfig
from exascale_climate.data.grid import cell_areas_km2, great_circle_km, label_objects, spans_globe
from exascale_climate.errors import DataError, ExaclimateError
from exascale_climate.evaluate.events import AR_CLASS, TC_CLASS, spherical_centroid
from exascale_climate.utils.io import atomic_path, atomic_write_text, library_path, printable
from exascale_climate.utils.log import get_logger
from exascale_climate.variables import CLASS_NAMES, LABEL_VARIABLE

log = get_logger("track")
NO_LINK = 1e12  # assignment cost of a forbidden pair


# ------------------------------------------------------------------------------------------ data model
@dataclass
class Detection:
    """One object at one time step; `cells` (flat grid indices) only for ARs, which link by overlap."""

    time: np.datetime64
    lat: float
    lon: float
    area_km2: float = float("nan")
    min_psl_pa: float = float("nan")
    max_wind_ms: float = float("nan")
    cells: np.ndarray | None = None
    source: str = ""


@dataclass
class Track:
    track_id: int
    event_class: str
    points: list[Detection] = field(default_factory=list)

    @property
    def start(self) -> np.datetime64:
        return self.points[0].time

    @property
    def end(self) -> np.datetime64:
        return self.points[-1].time

    @property
    def lifetime_hours(self) -> float:
        return hours_between(self.start, self.end)

    @property
    def path_km(self) -> float:
        """Length of the path: sum of the great-circle legs between consecutive points."""
        lat = np.array([p.lat for p in self.points])
        lon = np.array([p.lon for p in self.points])
        return float(great_circle_km(lat[:-1], lon[:-1], lat[1:], lon[1:]).sum()) if len(lat) > 1 else 0.0

    @property
    def min_psl_pa(self) -> float:
        return _nan_reduce(np.nanmin, [p.min_psl_pa for p in self.points])

    @property
    def max_wind_ms(self) -> float:
        return _nan_reduce(np.nanmax, [p.max_wind_ms for p in self.points])


def _nan_reduce(func, values) -> float:
    values = np.asarray(values, np.float64)
    return float(func(values)) if np.isfinite(values).any() else float("nan")


def hours_between(a: np.datetime64, b: np.datetime64) -> float:
    return float((b - a) / np.timedelta64(1, "s")) / 3600.0


def parse_time(text: str | None, where: str) -> np.datetime64:
    if not text:
        raise DataError(where, "no time coordinate; tracking needs the time of every step", field="time")
    try:
        return np.datetime64(str(text).replace(" ", "T")[:19], "s")
    except ValueError:
        raise DataError(where, f"time {text!r} is not an ISO date", field="time") from None


# ------------------------------------------------------------------------------------------ linking
def _step_hours(times: list[np.datetime64]) -> float:
    """The nominal time step: the median spacing of the distinct times (gaps are counted in these)."""
    distinct = sorted(set(times))
    if len(distinct) < 2:
        return 0.0
    return float(np.median([hours_between(a, b) for a, b in zip(distinct[:-1], distinct[1:])]))


def _missing_steps(last: np.datetime64, now: np.datetime64, step_h: float) -> int:
    return int(round(hours_between(last, now) / step_h)) - 1 if step_h > 0 else 0


def _predicted(track: Track, now: np.datetime64) -> tuple[float, float]:
    """Where the track's last leg, continued at the same velocity, puts it at `now` (longitude wrapped)."""
    last = track.points[-1]
    if len(track.points) < 2:
        return last.lat, last.lon
    prev = track.points[-2]
    leg = hours_between(prev.time, last.time)
    if leg <= 0:
        return last.lat, last.lon
    ahead = hours_between(last.time, now) / leg
    dlon = (last.lon - prev.lon + 180.0) % 360.0 - 180.0
    lat = float(np.clip(last.lat + ahead * (last.lat - prev.lat), -90.0, 90.0))
    return lat, (last.lon + ahead * dlon) % 360.0


def _by_time(detections: list[Detection]) -> list[tuple[np.datetime64, list[Detection]]]:
    times = sorted({d.time for d in detections})
    return [(t, [d for d in detections if d.time == t]) for t in times]


def _link(detections: list[Detection], event_class: str, cost_fn, max_gap: int, step_h: float) -> list[Track]:
    """Generic time-ordered linking: at each step, the open tracks (no more than `max_gap` steps missing) and the
    new detections are assigned to minimise the total cost; pairs `cost_fn` forbids (None) never link."""
    tracks: list[Track] = []
    for now, found in _by_time(detections):
        open_tracks = [t for t in tracks if _missing_steps(t.end, now, step_h) <= max_gap]
        cost = np.full((len(open_tracks), len(found)), NO_LINK)
        for i, track in enumerate(open_tracks):
            for j, det in enumerate(found):
                c = cost_fn(track, det, now)
                if c is not None:
                    cost[i, j] = c
        used: set[int] = set()
        if cost.size:
            for i, j in zip(*linear_sum_assignment(cost)):
                if cost[i, j] < NO_LINK:
                    open_tracks[i].points.append(found[j])
                    used.add(j)
        for j, det in enumerate(found):
            if j not in used:
                tracks.append(Track(0, event_class, [det]))
    return tracks


def link_cyclones(detections: list[Detection], cfg: TrackConfig, step_h: float | None = None) -> list[Track]:
    """TC tracks: range = tc_max_speed_km_h x hours since the track's last point, from that point (StitchNodes);
    cost = distance from the position the track's motion predicts."""
    step_h = _step_hours([d.time for d in detections]) if step_h is None else step_h

    def cost(track: Track, det: Detection, now) -> float | None:
        last = track.points[-1]
        reach = cfg.tc_max_speed_km_h * hours_between(last.time, now)
        if great_circle_km(last.lat, last.lon, det.lat, det.lon) > reach:
            return None
        return float(great_circle_km(*_predicted(track, now), det.lat, det.lon))

    tracks = _link(detections, CLASS_NAMES[TC_CLASS], cost, cfg.tc_max_gap_steps, step_h)
    return [t for t in tracks if t.lifetime_hours >= cfg.tc_min_lifetime_hours and len(t.points) >= cfg.min_points]


def link_rivers(detections: list[Detection], areas_km2: np.ndarray, cfg: TrackConfig,
                step_h: float | None = None) -> list[Track]:
    """AR tracks by overlap: shared area / the smaller object's area >= ar_min_overlap; the largest overlaps win."""
    step_h = _step_hours([d.time for d in detections]) if step_h is None else step_h
    flat_areas = areas_km2.ravel()

    def cost(track: Track, det: Detection, now) -> float | None:
        last = track.points[-1]
        shared = flat_areas[np.intersect1d(last.cells, det.cells, assume_unique=True)].sum()
        if shared <= 0 or shared < cfg.ar_min_overlap * min(last.area_km2, det.area_km2):
            return None
        return -float(shared)

    tracks = _link(detections, CLASS_NAMES[AR_CLASS], cost, cfg.ar_max_gap_steps, step_h)
    return [t for t in tracks if t.lifetime_hours >= cfg.ar_min_lifetime_hours and len(t.points) >= cfg.min_points]


def number_tracks(tracks: list[Track]) -> list[Track]:
    """Ids 1..N in order of first appearance (then class, latitude), so the numbering is reproducible."""
    tracks.sort(key=lambda t: (t.start, t.event_class, t.points[0].lat, t.points[0].lon))
    for k, t in enumerate(tracks, 1):
        t.track_id = k
    return tracks


# ------------------------------------------------------------------------------------------ detections
@dataclass
class Frame:
    """One time step of masks on a lat/lon grid, with the TC intensity fields when known."""

    time: np.datetime64
    mask: np.ndarray  # (H, W) classes
    lat: np.ndarray
    lon: np.ndarray
    psl: np.ndarray | None = None
    wind: np.ndarray | None = None
    source: str = ""


def detections_of(frame: Frame, areas: np.ndarray) -> tuple[list[Detection], list[Detection]]:
    """(TC detections, AR detections) of one frame: connected objects, spherical centroids, intensities."""
    periodic = spans_globe(frame.lon)
    lat2d = np.broadcast_to(frame.lat[:, None], frame.mask.shape)
    lon2d = np.broadcast_to(frame.lon[None, :], frame.mask.shape)
    out: dict[int, list[Detection]] = {TC_CLASS: [], AR_CLASS: []}
    for cls in (TC_CLASS, AR_CLASS):
        objects, n = label_objects(frame.mask == cls, periodic)
        for k in range(1, n + 1):
            inside = objects == k
            w = areas[inside]
            clat, clon = spherical_centroid(lat2d[inside], lon2d[inside], w)
            det = Detection(frame.time, clat, clon, float(w.sum()), source=frame.source)
            if cls == TC_CLASS:
                if frame.psl is not None:
                    det.min_psl_pa = float(frame.psl[inside].min())
                if frame.wind is not None:
                    det.max_wind_ms = float(frame.wind[inside].max())
            else:
                det.cells = np.flatnonzero(inside)
            out[cls].append(det)
    return out[TC_CLASS], out[AR_CLASS]


def _intensity_sample(path: Path, time_index: int, names=("PSL", "UBOT", "VBOT"), with_labels: bool = True):
    """A sample with the TC intensity fields the file has (one read when it has all of them)."""
    from exascale_climate.data.samples import read_sample

    try:
        return read_sample(path, channels=list(names), with_labels=with_labels, time_index=time_index)
    except DataError as e:
        if e.field not in names:
            raise
    present = []
    for name in names:
        try:
            read_sample(path, channels=[name], with_labels=False, time_index=time_index)
            present.append(name)
        except DataError:
            pass
    return read_sample(path, channels=present or None, with_labels=with_labels, time_index=time_index)


def _fields_of(sample) -> dict[str, np.ndarray]:
    return {v: sample.data[..., i] for i, v in enumerate(sample.variables) if v in ("PSL", "UBOT", "VBOT")}


def _frame_from_fields(time, mask, lat, lon, fields, source) -> Frame:
    wind = np.hypot(fields["UBOT"], fields["VBOT"]) if {"UBOT", "VBOT"} <= fields.keys() else None
    return Frame(time, mask, np.asarray(lat, np.float64), np.asarray(lon, np.float64), fields.get("PSL"), wind,
                 source)


def read_frames(path: str | Path) -> list[Frame]:
    """Every time step of one input: a `predict` mask file, or a labelled ClimateNet netCDF / DeepCAM HDF5."""
    from exascale_climate.data.layouts import detect_layout, netcdf_time_steps
    from exascale_climate.data.grid import sample_coordinates

    path = Path(path)
    layout = detect_layout(path)
    if layout == "netcdf" and _has_variable(path, "mask"):
        return _read_mask_file(path)
    steps = netcdf_time_steps(path) if layout == "netcdf" else 1
    frames = []
    for t in range(steps):
        try:
            sample = _intensity_sample(path, t)
        except DataError as e:
            if e.field not in (LABEL_VARIABLE, "climate/labels_0", "climate/labels"):
                raise
            raise DataError(path, f"no {LABEL_VARIABLE} and no 'mask' variable: label it (`exaclimate data label`) "
                                  "or predict it first", field=LABEL_VARIABLE) from None
        lat, lon = sample_coordinates(sample)
        frames.append(_frame_from_fields(parse_time(sample.time, str(path)), sample.labels, lat, lon,
                                         _fields_of(sample), printable(path.name)))
    return frames


def _has_variable(path: Path, name: str) -> bool:
    import netCDF4

    try:
        with library_path(path) as name_for_lib, netCDF4.Dataset(name_for_lib) as nc:
            return name in nc.variables
    except OSError as e:
        raise DataError(path, f"corrupt netCDF file ({e})") from None


def _read_mask_file(path: Path) -> list[Frame]:
    import xarray as xr

    try:
        with library_path(path) as name_for_lib, \
                xr.open_dataset(name_for_lib, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)) as ds:
            mask = ds["mask"].values
            lat, lon = ds["lat"].values, ds["lon"].values
            times = [str(t) for t in ds["time"].values] if "time" in ds.variables else []
            source = ds.attrs.get("input_file", "")
    except (OSError, ValueError, KeyError) as e:
        raise DataError(path, f"cannot read the mask file ({e})", field="mask") from None
    if mask.ndim == 2:
        mask = mask[None]
    if len(times) != mask.shape[0]:
        raise DataError(path, "no time coordinate for every step of 'mask'", field="time")
    frames = []
    for t in range(mask.shape[0]):
        fields = {}
        if source and Path(source).is_file():
            try:
                fields = _fields_of(_intensity_sample(Path(source), t, with_labels=False))
            except DataError as e:
                log.warning("%s: no TC intensity from its input file (%s)", path, e)
        frames.append(_frame_from_fields(parse_time(times[t], str(path)), mask[t], lat, lon, fields,
                                         printable(path.name)))
    return frames


def track_frames(frames: list[Frame], cfg: TrackConfig) -> list[Track]:
    """All TC and AR tracks of a time series of frames (all on one grid), numbered 1..N."""
    if not frames:
        raise ExaclimateError("no time steps to track")
    grid = (frames[0].lat, frames[0].lon)
    for f in frames[1:]:
        if f.mask.shape != frames[0].mask.shape or not (np.allclose(f.lat, grid[0]) and np.allclose(f.lon, grid[1])):
            raise DataError(f.source, f"grid {f.mask.shape} differs from {frames[0].source}'s "
                                      f"{frames[0].mask.shape}; track files of one grid together", field="lat")
    times = [f.time for f in frames]
    if len(set(times)) != len(times):
        dup = next(t for t in times if times.count(t) > 1)
        sources = ", ".join(f.source for f in frames if f.time == dup)
        raise ExaclimateError(f"time {dup} appears in more than one input ({sources})")
    frames = sorted(frames, key=lambda f: f.time)
    areas = cell_areas_km2(*grid)
    cyclones, rivers = [], []
    for frame in frames:
        tc, ar = detections_of(frame, areas)
        cyclones += tc
        rivers += ar
    step_h = _step_hours(times)
    return number_tracks(link_cyclones(cyclones, cfg, step_h) + link_rivers(rivers, areas, cfg, step_h))


# ------------------------------------------------------------------------------------------ outputs
POINT_COLUMNS = ["track_id", "event_class", "time", "lat", "lon", "area_km2", "min_psl_pa", "max_wind_ms", "source"]
SUMMARY_COLUMNS = ["track_id", "event_class", "start", "end", "lifetime_hours", "points", "path_km", "start_lat",
                   "start_lon", "end_lat", "end_lon", "min_psl_pa", "max_wind_ms"]


def _iso(t: np.datetime64) -> str:
    return str(np.datetime64(t, "s"))


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.6g}" if abs(v) < 1e5 else f"{v:.1f}"
    return str(v)


def _csv(columns, rows) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return buf.getvalue()


def tracks_csv(tracks: list[Track]) -> str:
    """One row per track point."""
    return _csv(POINT_COLUMNS, ([t.track_id, t.event_class, _iso(p.time), round(p.lat, 4), round(p.lon, 4),
                                 p.area_km2, p.min_psl_pa, p.max_wind_ms, p.source]
                                for t in tracks for p in t.points))


def summary_csv(tracks: list[Track]) -> str:
    """One row per track: lifetime, path length, start/end, minimum PSL, maximum wind."""
    return _csv(SUMMARY_COLUMNS, ([t.track_id, t.event_class, _iso(t.start), _iso(t.end), t.lifetime_hours,
                                   len(t.points), t.path_km, round(t.points[0].lat, 4), round(t.points[0].lon, 4),
                                   round(t.points[-1].lat, 4), round(t.points[-1].lon, 4), t.min_psl_pa,
                                   t.max_wind_ms] for t in tracks))


def write_trajectory_netcdf(path: str | Path, tracks: list[Track], attrs: dict | None = None) -> Path:
    """CF-1.8 discrete sampling geometry, featureType trajectory, as a contiguous ragged array: the points of
    trajectory k are `rowSize[k]` consecutive `obs`; per-trajectory lifetime, path length, min PSL, max wind."""
    import xarray as xr

    epoch = np.datetime64("1970-01-01T00:00:00", "s")
    pts = [(t, p) for t in tracks for p in t.points]
    obs = lambda f, dtype=np.float64: np.array([f(t, p) for t, p in pts], dtype)  # noqa: E731
    per = lambda f, dtype=np.float64: np.array([f(t) for t in tracks], dtype)  # noqa: E731
    hours = obs(lambda t, p: hours_between(epoch, p.time))
    data_vars = {
        "trajectory": (("trajectory",), per(lambda t: t.track_id, np.int32),
                       {"cf_role": "trajectory_id", "long_name": "track id"}),
        "rowSize": (("trajectory",), per(lambda t: len(t.points), np.int32),
                    {"sample_dimension": "obs", "long_name": "number of points of each track"}),
        "event_class": (("trajectory",), per(lambda t: t.event_class, object),
                        {"long_name": "tropical_cyclone or atmospheric_river"}),
        "lifetime": (("trajectory",), per(lambda t: t.lifetime_hours), {"units": "hours",
                                                                        "long_name": "last minus first time"}),
        "path_length": (("trajectory",), per(lambda t: t.path_km), {"units": "km",
                                                                   "long_name": "great-circle path length"}),
        "track_min_psl": (("trajectory",), per(lambda t: t.min_psl_pa), {
            "units": "Pa", "long_name": "minimum sea-level pressure over the track"}),
        "track_max_wind": (("trajectory",), per(lambda t: t.max_wind_ms), {
            "units": "m s-1", "long_name": "maximum lowest-level wind speed over the track"}),
        "time": (("obs",), hours, {"units": "hours since 1970-01-01 00:00:00", "standard_name": "time",
                                   "calendar": "standard", "axis": "T"}),
        "lat": (("obs",), obs(lambda t, p: p.lat), {"units": "degrees_north", "standard_name": "latitude"}),
        "lon": (("obs",), obs(lambda t, p: p.lon), {"units": "degrees_east", "standard_name": "longitude"}),
        "area": (("obs",), obs(lambda t, p: p.area_km2), {"units": "km2", "long_name": "object area",
                                                          "coordinates": "time lat lon"}),
        "psl_min": (("obs",), obs(lambda t, p: p.min_psl_pa), {
            "units": "Pa", "standard_name": "air_pressure_at_mean_sea_level", "cell_methods": "area: minimum",
            "long_name": "minimum sea-level pressure in the object", "coordinates": "time lat lon"}),
        "wind_max": (("obs",), obs(lambda t, p: p.max_wind_ms), {
            "units": "m s-1", "standard_name": "wind_speed", "cell_methods": "area: maximum",
            "long_name": "maximum lowest-level wind speed in the object", "coordinates": "time lat lon"}),
    }
    ds = xr.Dataset({k: xr.Variable(*v) for k, v in data_vars.items()}, attrs={
        "Conventions": "CF-1.8", "featureType": "trajectory", "title": "TC and AR tracks (exaclimate track)",
        "history": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ} exaclimate track", **(attrs or {})})
    encoding = {name: {"_FillValue": None} for name in ("time", "lat", "lon", "trajectory", "rowSize")}
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, format="NETCDF4", encoding=encoding)
    return Path(path)


def read_tracks_csv(path: str | Path) -> list[Track]:
    """Tracks back from a `tracks.csv` (for `verify` and notebooks)."""
    tracks: dict[int, Track] = {}
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            missing = [c for c in ("track_id", "event_class", "time", "lat", "lon") if c not in columns]
            if missing:
                raise DataError(path, f"not a tracks table: no column(s) {missing}", field=missing[0])
            for line, row in enumerate(reader, 2):
                try:
                    tid = int(row["track_id"])
                    num = lambda k: float(row[k]) if row.get(k) not in (None, "") else float("nan")  # noqa: E731
                    det = Detection(parse_time(row["time"], f"{path}:{line}"), float(row["lat"]), float(row["lon"]),
                                    num("area_km2"), num("min_psl_pa"), num("max_wind_ms"),
                                    source=row.get("source", ""))
                except (TypeError, ValueError) as e:
                    raise DataError(f"{path}:{line}", f"bad value ({e})") from None
                tracks.setdefault(tid, Track(tid, row["event_class"])).points.append(det)
    except OSError as e:
        raise DataError(path, f"unreadable ({e.strerror})") from None
    for t in tracks.values():
        t.points.sort(key=lambda p: p.time)
    return [tracks[k] for k in sorted(tracks)]


def plot_tracks(tracks: list[Track], out: str | Path, size: tuple[int, int] = (1200, 650),
                title: str = "TC and AR tracks") -> Path:
    """Tracks on a world map with coastlines (the land-sea mask's 0.5 contour of data/geography.py); a track
    is broken where it crosses the map edge at 0/360 degrees."""
    from matplotlib.lines import Line2D

    from exascale_climate.evaluate.plots import CLASS_COLOURS, CLASS_LABELS, draw_coastlines, new_figure, save_figure

    fig = new_figure(size)
    ax = fig.add_subplot(1, 1, 1)
    draw_coastlines(ax)
    colours = {CLASS_NAMES[c]: CLASS_COLOURS[c] for c in (TC_CLASS, AR_CLASS)}
    for t in tracks:
        lat = np.array([p.lat for p in t.points])
        lon = np.array([p.lon for p in t.points]) % 360.0
        jumps = np.flatnonzero(np.abs(np.diff(lon)) > 180.0) + 1
        for seg_lat, seg_lon in zip(np.split(lat, jumps), np.split(lon, jumps)):
            ax.plot(seg_lon, seg_lat, "-", color=colours.get(t.event_class, "k"), linewidth=1.2)
        ax.plot(lon[0], lat[0], "o", color=colours.get(t.event_class, "k"), markersize=3)
        if t.event_class == CLASS_NAMES[TC_CLASS]:
            ax.annotate(str(t.track_id), (lon[0], lat[0]), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set_xlim(0, 360)
    ax.set_ylim(-90, 90)
    ax.set_xlabel("longitude [degrees east]")
    ax.set_ylabel("latitude [degrees north]")
    handles = [Line2D([], [], color=CLASS_COLOURS[c], label=f"{CLASS_LABELS[c]} "
                      f"({sum(t.event_class == CLASS_NAMES[c] for t in tracks)})") for c in (TC_CLASS, AR_CLASS)]
    ax.legend(handles=handles, loc="lower left", fontsize="small")
    ax.set_title(title)
    return save_figure(fig, out)


def read_events_csv(path: str | Path) -> list[Detection]:
    """TC detections from an event table (`predict`'s events.csv: time, event_class, centroid_lat, centroid_lon,
    area_km2, min_psl_pa, max_wind_ms), e.g. another detector's nodes; AR rows are skipped (they link by the
    overlap of their masks, which a table does not have)."""
    out, skipped = [], 0
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            missing = [c for c in ("time", "event_class", "centroid_lat", "centroid_lon") if c not in columns]
            if missing:
                raise DataError(path, f"not an event table: no column(s) {missing}", field=missing[0])
            for line, row in enumerate(reader, 2):
                if row["event_class"] != CLASS_NAMES[TC_CLASS]:
                    skipped += 1
                    continue
                num = lambda k: float(row[k]) if row.get(k) not in (None, "") else float("nan")  # noqa: E731
                try:
                    out.append(Detection(parse_time(row["time"], f"{path}:{line}"), num("centroid_lat"),
                                         num("centroid_lon") % 360.0, num("area_km2"), num("min_psl_pa"),
                                         num("max_wind_ms"), source=row.get("source", "")))
                except ValueError as e:
                    raise DataError(f"{path}:{line}", f"bad value ({e})") from None
    except OSError as e:
        raise DataError(path, f"unreadable ({e.strerror})") from None
    if skipped:
        log.warning("%s: %d AR row(s) skipped: ARs are tracked from masks (labelled or predicted files)", path, skipped)
    return out


def track(inputs: list[str | Path], out_dir: str | Path, cfg: TrackConfig, plot: bool = True) -> dict:
    """`exaclimate track`: tracks.csv (points), tracks_summary.csv, tracks.nc (CF trajectories), tracks.png.
    Inputs: mask files (TCs and ARs), or event tables (*.csv, TCs only)."""
    from exascale_climate.evaluate.predict import expand_inputs

    tables = [Path(p) for p in inputs if str(p).endswith(".csv")]
    frames: list[Frame] = []
    if tables:
        if len(tables) != len(inputs):
            raise ExaclimateError("give either event tables (*.csv) or mask files, not both")
        detections = [d for p in tables for d in read_events_csv(p)]
        if not detections:
            raise DataError(tables[0], "no tropical_cyclone rows to track")
        tracks = number_tracks(link_cyclones(detections, cfg))
        times = [d.time for d in detections]
    else:
        for path in expand_inputs(inputs):
            frames += read_frames(path)
        tracks = track_frames(frames, cfg)
        times = [f.time for f in frames]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "tracks.csv", tracks_csv(tracks))
    atomic_write_text(out / "tracks_summary.csv", summary_csv(tracks))
    write_trajectory_netcdf(out / "tracks.nc", tracks, attrs={
        "tc_max_speed_km_h": cfg.tc_max_speed_km_h, "tc_max_gap_steps": cfg.tc_max_gap_steps,
        "tc_min_lifetime_hours": cfg.tc_min_lifetime_hours, "ar_min_overlap": cfg.ar_min_overlap})
    result = {"steps": len(set(times)), "tracks": len(tracks),
              "tropical_cyclone": sum(t.event_class == CLASS_NAMES[TC_CLASS] for t in tracks),
              "atmospheric_river": sum(t.event_class == CLASS_NAMES[AR_CLASS] for t in tracks),
              "csv": str(out / "tracks.csv"), "netcdf": str(out / "tracks.nc")}
    if plot:
        result["png"] = str(plot_tracks(tracks, out / "tracks.png",
                                        title=f"{result['tropical_cyclone']} TC and {result['atmospheric_river']} "
                                              f"AR tracks, {_iso(min(times))} to {_iso(max(times))}"))
    return result
