"""Maps of a CAM5 field with the TC/AR masks drawn as contours, and truth / prediction / error panels.

Drawing functions take arrays and a matplotlib Axes, so notebooks reuse them; `plot_file` is what
`exaclimate plot` runs. Figures are made with the object-oriented API (no pyplot global state), rendered with the
Agg backend, and saved at exactly the requested pixel size.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exascale_climate.errors import ExaclimateError
from exascale_climate.utils.io import atomic_path
from exascale_climate.variables import BY_NAME

CLASS_COLOURS = {1: "#d62728", 2: "#1f77b4"}  # TC red, AR blue
CLASS_LABELS = {1: "tropical cyclone", 2: "atmospheric river"}
DEFAULT_SIZE = (1200, 700)  # pixels (width, height)
DPI = 100


@dataclass
class MapData:
    """What a map needs: one field, its grid, and the masks to overlay."""

    field: np.ndarray  # (H, W)
    lat: np.ndarray
    lon: np.ndarray
    var: str
    time: str | None = None
    truth: np.ndarray | None = None  # (H, W) class labels
    pred: np.ndarray | None = None


def parse_size(text: str) -> tuple[int, int]:
    """"WxH" in pixels -> (W, H)."""
    try:
        w, h = (int(p) for p in text.lower().split("x"))
        if w < 50 or h < 50:
            raise ValueError
    except ValueError:
        raise ExaclimateError(f"--size {text!r}: expected WxH in pixels, each at least 50, e.g. 1200x700") from None
    return w, h


def new_figure(size: tuple[int, int]):
    """A figure of exactly size=(W, H) pixels, independent of pyplot (safe in threads and notebooks)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")


def save_figure(fig, out: str | Path) -> Path:
    """PNG written atomically at the figure's pixel size (no tight bbox, which would change it)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return Path(out)


def overlay_masks(ax, lat, lon, labels: np.ndarray, linestyle: str = "-", suffix: str = "") -> list:
    """Contour each event class of `labels` on `ax`; returns legend handles for the classes present."""
    from matplotlib.lines import Line2D

    handles = []
    for cls, colour in CLASS_COLOURS.items():
        present = labels == cls
        if not present.any():
            continue
        ax.contour(lon, lat, present.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.2,
                   linestyles=linestyle)
        handles.append(Line2D([], [], color=colour, linestyle=linestyle, label=CLASS_LABELS[cls] + suffix))
    return handles


COAST_GRID = (181, 360)  # 1-degree land-sea mask for the coastline contour


def draw_coastlines(ax, colour: str = "0.35", linewidth: float = 0.6, lon_min: float = 0.0):
    """Coastlines as the 0.5 contour of the toolkit's own coarse land fraction (data/geography.py): no map
    data file to download, and the same Earth the synthetic fields are made on. Longitudes from `lon_min`."""
    from exascale_climate.data.geography import geography
    from exascale_climate.data.grid import default_coordinates

    land, _ = geography(*COAST_GRID)
    lat, lon = default_coordinates(*COAST_GRID)
    shift = int(np.searchsorted(lon, lon_min % 360.0))
    lon = np.concatenate([lon[shift:], lon[:shift] + 360.0]) + (lon_min - lon_min % 360.0)
    land = np.roll(land, -shift, axis=1)
    lon = np.append(lon, lon[0] + 360.0)  # close the seam
    land = np.concatenate([land, land[:, :1]], axis=1)
    return ax.contour(lon, lat, land, levels=[0.5], colors=[colour], linewidths=linewidth)


def draw_field(ax, data: MapData, cmap: str = "viridis", title: str | None = None, show_truth: bool = True,
               show_pred: bool = False):
    """Field as a colour map on lat/lon axes, colour bar with units, mask contours and a legend."""
    units = BY_NAME[data.var].units if data.var in BY_NAME else ""
    mesh = ax.pcolormesh(data.lon, data.lat, data.field, cmap=cmap, shading="auto")
    draw_coastlines(ax, colour="white", lon_min=float(np.min(data.lon)))
    ax.figure.colorbar(mesh, ax=ax, label=f"{data.var} [{units}]" if units else data.var, shrink=0.9)
    handles = []
    if show_truth and data.truth is not None:
        handles += overlay_masks(ax, data.lat, data.lon, data.truth, "-", " (truth)")
    if show_pred and data.pred is not None:
        handles += overlay_masks(ax, data.lat, data.lon, data.pred, "--", " (predicted)")
    if handles:
        ax.legend(handles=handles, loc="lower left", fontsize="small", framealpha=0.8)
    _lat_lon_axes(ax, data)
    ax.set_title(title or _title(data.var, data.time))
    return mesh


def draw_classes(ax, labels: np.ndarray, data: MapData, title: str):
    """A categorical class map (background white, TC red, AR blue) with a legend."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    cmap = ListedColormap(["#ffffff", CLASS_COLOURS[1], CLASS_COLOURS[2]])
    ax.pcolormesh(data.lon, data.lat, labels, cmap=cmap, vmin=-0.5, vmax=2.5, shading="auto")
    ax.legend(handles=[Patch(color=CLASS_COLOURS[c], label=CLASS_LABELS[c]) for c in (1, 2)],
              loc="lower left", fontsize="small")
    _lat_lon_axes(ax, data)
    ax.set_title(title)


def draw_boxes(ax, boxes, linestyle: str = "-", suffix: str = "") -> list:
    """Rectangles for boxes given in degrees as rows (class, lat_min, lat_max, lon_min, lon_max); a box across
    the date line (lon_min > lon_max) is drawn as its two pieces. Returns legend handles."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    x0, x1 = ax.get_xlim() if ax.has_data() else (0.0, 360.0)
    seen = set()
    for cls, lat_min, lat_max, lon_min, lon_max in boxes:
        cls = int(cls)
        pieces = [(lon_min, lon_max)] if lon_min <= lon_max else [(lon_min, max(x1, 360.0)), (min(x0, 0.0), lon_max)]
        for a, b in pieces:
            ax.add_patch(Rectangle((a, lat_min), b - a, lat_max - lat_min, fill=False, linewidth=1.4,
                                   edgecolor=CLASS_COLOURS.get(cls, "k"), linestyle=linestyle))
        seen.add(cls)
    return [Line2D([], [], color=CLASS_COLOURS[c], linestyle=linestyle, label=CLASS_LABELS[c] + suffix)
            for c in sorted(seen) if c in CLASS_COLOURS]


def sample_box_degrees(path, lat, lon, labels=None) -> list:
    """The file's true boxes in degrees: stored (`exaclimate data boxes`), else derived from its labels."""
    from exascale_climate.data.boxes import boxes_from_mask, read_boxes
    from exascale_climate.data.grid import spans_globe
    from exascale_climate.errors import DataError
    from exascale_climate.evaluate.detection import box_degrees

    try:
        boxes = read_boxes(path)
    except DataError as e:
        if labels is None or "no stored boxes" not in str(e):
            raise
        boxes = boxes_from_mask(labels, spans_globe(lon))
    return [(b[0], *box_degrees(b, lat, lon)) for b in boxes]


def event_table_boxes(csv_path, source: str, time: str | None = None) -> list:
    """Predicted boxes in degrees from a `predict` events.csv: the rows of `source` (and `time` if given)."""
    import csv

    from exascale_climate.errors import DataError

    rows = []
    try:
        with open(csv_path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("source") != source or (time and row.get("time") and row["time"] != time):
                    continue
                if not row.get("box_lat_min"):
                    continue
                cls = {"tropical_cyclone": 1, "atmospheric_river": 2}.get(row["event_class"], 0)
                rows.append((cls, *(float(row[k]) for k in ("box_lat_min", "box_lat_max", "box_lon_min",
                                                            "box_lon_max"))))
    except (OSError, KeyError, ValueError) as e:
        raise DataError(csv_path, f"not a readable event table with box columns ({e})") from None
    return rows


ERROR_NAMES = ("correct background", "correct event", "missed (false negative)", "false alarm", "wrong class")


def error_map(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-pixel outcome codes, indices into ERROR_NAMES."""
    out = np.zeros(truth.shape, dtype=np.int8)
    out[(truth == pred) & (truth > 0)] = 1
    out[(truth > 0) & (pred == 0)] = 2
    out[(truth == 0) & (pred > 0)] = 3
    out[(truth > 0) & (pred > 0) & (truth != pred)] = 4
    return out


def draw_errors(ax, data: MapData):
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    colours = ["#ffffff", "#2ca02c", "#ff7f0e", "#9467bd", "#000000"]
    ax.pcolormesh(data.lon, data.lat, error_map(data.truth, data.pred), cmap=ListedColormap(colours),
                  vmin=-0.5, vmax=4.5, shading="auto")
    ax.legend(handles=[Patch(color=c, label=n) for c, n in zip(colours[1:], ERROR_NAMES[1:])],
              loc="lower left", fontsize="x-small")
    _lat_lon_axes(ax, data)
    ax.set_title("error (truth vs prediction)")


def _lat_lon_axes(ax, data: MapData):
    ax.set_xlabel("longitude [degrees east]")
    ax.set_ylabel("latitude [degrees north]")
    ax.set_xlim(float(np.min(data.lon)), float(np.max(data.lon)))
    ax.set_ylim(float(np.min(data.lat)), float(np.max(data.lat)))


def _title(var: str, time: str | None) -> str:
    long_name = BY_NAME[var].long_name if var in BY_NAME else var
    return f"{var}: {long_name}" + (f" — {time}" if time else "")


def render_map(data: MapData, out: str | Path, size: tuple[int, int] = DEFAULT_SIZE, show_truth: bool = True) -> Path:
    """One map (field + contours), or with a prediction the truth / prediction / error panels."""
    fig = new_figure(size)
    if data.pred is None:
        draw_field(fig.add_subplot(1, 1, 1), data, show_truth=show_truth)
    elif data.truth is None or not show_truth:
        draw_field(fig.add_subplot(1, 1, 1), data, show_truth=False, show_pred=True,
                   title=_title(data.var, data.time) + " (prediction)")
    else:
        axes = fig.subplots(2, 2)
        draw_field(axes[0, 0], data, show_truth=True, show_pred=True)
        draw_classes(axes[0, 1], data.truth, data, "truth")
        draw_classes(axes[1, 0], data.pred, data, "prediction")
        draw_errors(axes[1, 1], data)
        fig.suptitle(data.time or "")
    return save_figure(fig, out)


def read_prediction(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """The `mask` variable of a `exaclimate predict` netCDF file (first time step)."""
    import xarray as xr

    from exascale_climate.errors import DataError

    try:
        with xr.open_dataset(path) as ds:
            if "mask" not in ds:
                raise DataError(path, "no 'mask' variable; expected the output of `exaclimate predict`", field="mask")
            mask = ds["mask"].values
    except (OSError, ValueError) as e:
        raise DataError(path, f"cannot read the prediction ({e})") from None
    mask = mask.reshape(mask.shape[-2:]) if mask.ndim == 3 and mask.shape[0] == 1 else mask
    if mask.shape != tuple(shape):
        raise DataError(path, f"mask shape {mask.shape} does not match the field's grid {tuple(shape)}", field="mask")
    return mask.astype(np.int64)


def plot_file(path: str | Path, out: str | Path, var: str = "TMQ", truth: bool = False,
              pred_path: str | Path | None = None, size: tuple[int, int] = DEFAULT_SIZE, boxes: bool = False,
              pred_boxes: str | Path | None = None) -> Path:
    """`exaclimate plot`: one sample file (netCDF or HDF5) as a PNG map; `boxes` adds the file's true event
    boxes (solid), `pred_boxes` a `predict` events.csv's boxes for this file (dashed)."""
    if boxes or pred_boxes:
        return _plot_boxes(path, out, var, boxes, pred_boxes, size)
    from exascale_climate.data.samples import read_sample
    from exascale_climate.data.grid import sample_coordinates

    if var not in BY_NAME:
        raise ExaclimateError(f"--var {var!r}: not one of the 16 CAM5 variables ({', '.join(BY_NAME)})")
    sample = read_sample(path, channels=[var], with_labels=truth)
    if truth and sample.labels is None:
        raise ExaclimateError(f"{path}: --truth asked for labels but the file has none")
    lat, lon = sample_coordinates(sample)
    h, w = sample.data.shape[:2]
    pred = read_prediction(pred_path, (h, w)) if pred_path else None
    data = MapData(field=sample.data[..., 0], lat=lat, lon=lon, var=var, time=sample.time,
                   truth=sample.labels if truth else None, pred=pred)
    return render_map(data, out, size, show_truth=truth)



def _plot_boxes(path, out, var: str, boxes: bool, pred_boxes, size) -> Path:
    from exascale_climate.data.samples import read_sample
    from exascale_climate.data.grid import sample_coordinates

    if var not in BY_NAME:
        raise ExaclimateError(f"--var {var!r}: not one of the 16 CAM5 variables ({', '.join(BY_NAME)})")
    sample = read_sample(path, channels=[var], with_labels=boxes)
    lat, lon = sample_coordinates(sample)
    data = MapData(field=sample.data[..., 0], lat=lat, lon=lon, var=var, time=sample.time)
    fig = new_figure(size)
    ax = fig.add_subplot(1, 1, 1)
    draw_field(ax, data, show_truth=False)
    handles = []
    if boxes:
        handles += draw_boxes(ax, sample_box_degrees(path, lat, lon, sample.labels), "-", " (true box)")
    if pred_boxes:
        handles += draw_boxes(ax, event_table_boxes(pred_boxes, Path(path).name, sample.time), "--",
                              " (predicted box)")
    if handles:
        ax.legend(handles=handles, loc="lower left", fontsize="small", framealpha=0.8)
    _lat_lon_axes(ax, data)
    return save_figure(fig, out)
