"""Fuzzing the commands that read user input: malformed HDF5 / netCDF samples, config files and `--set` values.

Why: a careful user's 654 runs on malformed files found 72 tracebacks and 100 silent acceptances (issue 23); the
hand-written cases of tests/data/test_validate.py cover what was found, this covers what was not thought of.
Hypothesis draws a case (a valid small base file of one of the layouts the toolkit reads, then one mutation:
bytes truncated or flipped, a dtype, shape, attribute, link, name or value replaced), writes it, and runs the
commands on it; each run ends in one outcome (`classify`). One home for the generators: the tests
(tests/bench/test_fuzz.py) and `exaclimate bench fuzz` both draw from here.

The property of every run (OK_OUTCOMES): a non-zero exit with one `error:` line naming the file or key (or, for
`data inspect`, its PROBLEM lines naming the file), or exit 0 on an input that is valid; never a traceback
without -v, a hang, a crash on a signal, a silent acceptance of an invalid input, or a temporary or partial
output left behind.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exascale_climate.variables import BY_NAME, LABEL_VARIABLE, VARIABLE_NAMES

GRID = (24, 32)  # small: thousands of files in minutes; divisible by the demo networks' down-sampling (8)
LAYOUTS = ("deepcam", "gordonbell", "netcdf4", "netcdf3")
# Mid-range values in each variable's units, hand-picked (not read from the code's range table).
TYPICAL = {"TMQ": 30.0, "U850": 5.0, "V850": -3.0, "UBOT": 4.0, "VBOT": -2.0, "QREFHT": 0.01, "PS": 98000.0,
           "PSL": 101000.0, "T200": 220.0, "T500": 255.0, "PRECT": 1e-7, "TS": 288.0, "TREFHT": 287.0,
           "Z1000": 100.0, "Z200": 11800.0, "ZBOT": 60.0}
OUTCOMES = ("error", "accepted", "traceback", "silent", "bad-message", "half-written", "hang", "crash")
OK_OUTCOMES = ("error", "accepted")
SUBPROCESS_TIMEOUT_S = 300  # generous: the machine is shared; a hang is minutes of no progress, not slowness


# ------------------------------------------------------------------------------------------- base files
def base_fields(grid=GRID, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 16) plausible float32 fields (mid-range plus 1% noise) and (H, W) labels with one TC and one AR."""
    rng = np.random.default_rng(seed)
    h, w = grid
    data = np.stack([np.float32(TYPICAL[n]) * (1 + 0.01 * rng.standard_normal(grid, np.float32))
                     for n in VARIABLE_NAMES], -1).astype(np.float32)
    labels = np.zeros(grid, np.uint8)
    labels[h // 2 - 2:h // 2 + 2, 4:8] = 1
    labels[h // 4:h // 4 + 2, 12:w - 4] = 2
    return data, labels


def coordinates(grid=GRID) -> tuple[np.ndarray, np.ndarray]:
    h, w = grid
    return (np.linspace(-90 + 90 / h, 90 - 90 / h, h), np.arange(w) * (360.0 / w))


def write_hdf5_base(path: Path, layout: str, data, labels) -> None:
    import h5py

    lat, lon = coordinates(data.shape[:2])
    with h5py.File(path, "w") as f:
        c = f.create_group("climate")
        if layout == "deepcam":
            c.create_dataset("data", data=data)
            c.create_dataset("labels_0", data=labels)
        else:  # Gordon Bell: channels first, `labels`, per-file stats (mean, max, min, std)
            c.create_dataset("data", data=np.ascontiguousarray(np.moveaxis(data, -1, 0)))
            c.create_dataset("labels", data=labels)
            flat = data.reshape(-1, data.shape[-1]).astype(np.float64)
            c.create_dataset("stats", data=np.stack([flat.mean(0), flat.max(0), flat.min(0), flat.std(0)], -1))
        c.attrs["variables"] = np.array(VARIABLE_NAMES, dtype=h5py.string_dtype())
        c.create_dataset("lat", data=lat)
        c.create_dataset("lon", data=lon)
        c.attrs["time"] = "2000-01-01T00:00:00"


def write_netcdf_base(path: Path, fmt: str, data, labels) -> None:
    import netCDF4

    lat, lon = coordinates(data.shape[:2])
    with netCDF4.Dataset(path, "w", format=fmt) as nc:
        nc.createDimension("time", None)
        nc.createDimension("lat", len(lat))
        nc.createDimension("lon", len(lon))
        t = nc.createVariable("time", "f8", ("time",))
        t.units, t.calendar = "hours since 2000-01-01 00:00:00", "noleap"
        t[:] = [6.0]
        nc.createVariable("lat", "f8", ("lat",))[:] = lat
        nc.createVariable("lon", "f8", ("lon",))[:] = lon
        for i, name in enumerate(VARIABLE_NAMES):
            v = nc.createVariable(name, "f4", ("time", "lat", "lon"))
            v.units = BY_NAME[name].units
            v[0] = data[..., i]
        nc.createVariable(LABEL_VARIABLE, "i1" if fmt.startswith("NETCDF3") else "u1", ("time", "lat", "lon"))[0] = labels


def write_base(path: Path, layout: str, data=None, labels=None) -> Path:
    if data is None:
        data, labels = base_fields()
    if layout in ("deepcam", "gordonbell"):
        write_hdf5_base(path, layout, data, labels)
    else:
        write_netcdf_base(path, "NETCDF4" if layout == "netcdf4" else "NETCDF3_64BIT_OFFSET", data, labels)
    return path


# ------------------------------------------------------------------------------------------- mutations
@dataclass
class Case:
    """One drawn input: the base layout, the mutation and its parameters; `valid` says whether a correct reader
    must accept it (True), reject it (False), or may do either (None: e.g. a bit flipped where it may not
    matter)."""

    layout: str
    mutation: str
    params: dict = field(default_factory=dict)
    name: str = "data-2000-01-01-06-00-00"  # the file's stem (str, or bytes for a name that is not UTF-8)
    valid: bool | None = False

    def describe(self) -> str:
        params = {k: (f"array{v.shape} {v.dtype}" if isinstance(v, np.ndarray) and v.size > 4 else v)
                  for k, v in self.params.items()}
        return f"{self.layout}/{self.mutation} {params} name={self.name!r}"[:400]


def _hdf5_edit(path: Path, layout: str, edit) -> None:
    import h5py

    with h5py.File(path, "a") as f:
        edit(f, f["climate"], "labels_0" if layout == "deepcam" else "labels")


def _replace(group, name: str, **kwargs) -> None:
    del group[name]
    group.create_dataset(name, **kwargs)


def _field_shape(layout: str, grid=GRID) -> tuple[int, ...]:
    return grid + (16,) if layout == "deepcam" else (16,) + grid


def _dtype_array(kind: str, shape) -> np.ndarray:
    import h5py

    if kind == "string":
        return np.full(shape, b"x", "S4")
    if kind == "vlen-string":
        return np.full(shape, "x", dtype=object).astype(h5py.string_dtype())
    if kind == "compound":
        return np.zeros(shape, [("a", "f4"), ("b", "i4")])
    if kind == "complex":
        return np.ones(shape, np.complex64)
    if kind == "bool":
        return np.ones(shape, bool)
    if kind == "opaque":
        return np.zeros(shape, "V4")
    raise ValueError(kind)


def apply_hdf5_mutation(path: Path, case: Case) -> None:
    """Structural edits of a DeepCAM / Gordon Bell file with h5py."""
    import h5py

    p, layout = case.params, case.layout
    m = case.mutation
    shape = _field_shape(layout)

    def edit(f, climate, labels_name):
        if m == "fields-dtype":
            _replace(climate, "data", data=_dtype_array(p["kind"], shape))
        elif m == "fields-shape":
            _replace(climate, "data", data=np.full(p["shape"], 50.0, np.float32) if 0 not in p["shape"] and p["shape"]
                     else (np.zeros(p["shape"], np.float32) if p["shape"] else np.float32(3.0)))
        elif m == "fields-null":
            _replace(climate, "data", data=h5py.Empty("f4"))
        elif m == "fields-huge":
            big = (p["rows"], 2 ** p["log_cols"], 16) if layout == "deepcam" else (16, p["rows"], 2 ** p["log_cols"])
            _replace(climate, "data", shape=big, dtype="f4", chunks=tuple(min(s, 64) for s in big),
                     compression=p["filter"] or None)
        elif m == "fields-value":
            data = climate["data"][()]
            idx = (p["row"], p["col"], p["channel"]) if layout == "deepcam" else (p["channel"], p["row"], p["col"])
            data[idx] = p["value"]
            climate["data"][...] = data
        elif m == "labels":
            _replace(climate, labels_name, data=p["array"])
        elif m == "labels-missing":
            del climate[labels_name]
        elif m == "variables":
            climate.attrs["variables"] = p["value"]
        elif m == "variables-missing":
            del climate.attrs["variables"]
        elif m == "coordinate":
            _replace(climate, p["coord"], data=p["values"])
        elif m == "attribute-bytes":
            climate.attrs[p["attr"]] = np.bytes_(p["raw"])
        elif m == "link":
            target = labels_name if p["target"] == "labels_0" else p["target"]
            del climate[target]
            climate[target] = (h5py.SoftLink("/nowhere") if p["kind"] == "soft"
                                    else h5py.ExternalLink("missing.h5", "/x"))
        elif m == "kind-swap":
            if p["what"] == "climate":
                del f["climate"]
                f.create_dataset("climate", data=np.zeros(3))
            else:
                del climate["data"]
                climate.create_group("data")
        elif m == "object-name":
            # an extra object whose name is not UTF-8 (valid: unknown objects are ignored), or `climate` renamed so
            f.move("climate", p["raw"]) if p["rename"] else f.create_dataset(p["raw"], data=np.zeros(2))
        elif m == "stats":
            _replace(climate, "stats", data=p["array"])
        else:
            raise ValueError(m)

    _hdf5_edit(path, layout, edit)


def apply_netcdf_mutation(path: Path, case: Case) -> None:
    """Structural edits of a ClimateNet netCDF file: the file is rewritten with one thing changed."""
    import netCDF4

    p, m = case.params, case.mutation
    fmt = "NETCDF4" if case.layout == "netcdf4" else "NETCDF3_64BIT_OFFSET"
    data, labels = base_fields()
    lat, lon = coordinates()
    if m == "fields-value":
        data[p["row"], p["col"], p["channel"]] = p["value"]
    time_values = [6.0] if m != "time-records" else list(range(p["records"]))
    with netCDF4.Dataset(path, "w", format=fmt) as nc:
        nc.createDimension("time", None)
        if m == "coordinate":
            values = p["values"]
            coord_len = {p["coord"]: len(values)}
        else:
            coord_len = {}
        nc.createDimension("lat", len(lat))
        nc.createDimension("lon", len(lon))
        t = nc.createVariable("time", "f8", ("time",))
        t.units = p.get("time_units", "hours since 2000-01-01 00:00:00") if m == "time-units" else \
            "hours since 2000-01-01 00:00:00"
        t.calendar = "noleap"
        if time_values:
            t[:] = time_values
        for coord, values in (("lat", lat), ("lon", lon)):
            if coord in coord_len:
                nc.createDimension(f"{coord}_bad", coord_len[coord])
                v = nc.createVariable(coord, "f8", (f"{coord}_bad",))
                v[:] = p["values"]
            else:
                nc.createVariable(coord, "f8", (coord,))[:] = values
        records = len(time_values)
        for i, name in enumerate(VARIABLE_NAMES):
            if m == "variable-missing" and name == p["name"]:
                continue
            dims = ("time", "lat", "lon")
            dtype = "f4"
            if m == "variable-dims" and name == p["name"]:
                dims = p["dims"]
            if m == "variable-dtype" and name == p["name"]:
                dtype = p["dtype"]
            if m == "variable-dtype" and name == p["name"] and dtype == "str":
                if fmt != "NETCDF4":
                    dtype = "S1"
                else:
                    v = nc.createVariable(name, str, dims)
                    for r in range(records):
                        v[r] = np.full(data.shape[:2], "x", dtype=object)
                    continue
            v = nc.createVariable(name, dtype, dims)
            units = BY_NAME[name].units
            if m == "units" and name == p["name"]:
                units = p["units"]
            if isinstance(units, bytes):
                v.setncattr("units", np.bytes_(units))
            else:
                v.units = units
            values = data[..., i]
            if dims == ("time", "lat", "lon"):
                for r in range(records):
                    v[r] = values.astype(v.dtype) if dtype != "S1" else np.full(values.shape, b"x")
            elif dims == ("time", "lon", "lat"):
                for r in range(records):
                    v[r] = values.T
            elif dims == ("lat", "lon"):
                v[:] = values
            elif dims == ("lat",):
                v[:] = values[:, 0]
            elif dims == ("time",):
                if records:
                    v[:] = np.full(records, values[0, 0])
        if not (m == "labels-missing"):
            lab_dtype = "i1" if fmt != "NETCDF4" else "u1"
            lab = labels
            if m == "labels":
                lab = p["array"]
                lab_dtype = "f4" if lab.dtype.kind == "f" else "i2"
            v = nc.createVariable(LABEL_VARIABLE, lab_dtype, ("time", "lat", "lon"))
            for r in range(records):
                v[r] = lab
        if m == "attribute-bytes":
            nc.setncattr(p["attr"], np.bytes_(p["raw"]))


def apply_byte_mutation(path: Path, case: Case) -> None:
    """Truncation, bit flips, zeroed ranges, an empty file or garbage, on the bytes of a valid file."""
    p = case.params
    raw = bytearray(path.read_bytes())
    m = case.mutation
    if m == "truncate":
        raw = raw[:int(len(raw) * p["fraction"])]
    elif m == "bitflip":
        span = min(len(raw), p["region"])
        for offset, bit in p["flips"]:
            raw[offset % span] ^= 1 << bit
    elif m == "zero-range":
        start = p["start"] % len(raw)
        raw[start:start + p["length"]] = bytes(len(raw[start:start + p["length"]]))
    elif m == "empty":
        raw = bytearray()
    elif m == "garbage":
        raw = bytearray(p["bytes"])
    elif m == "prefix":  # a valid signature in front of garbage
        raw = bytearray(p["signature"] + p["bytes"])
    else:
        raise ValueError(m)
    path.write_bytes(bytes(raw))


BYTE_MUTATIONS = ("truncate", "bitflip", "zero-range", "empty", "garbage", "prefix")


def materialize(case: Case, directory: Path) -> Path:
    """Write the case's file in `directory` and return its path (its name may not be UTF-8: the libraries
    cannot create such a file, so it is written under a plain name and renamed)."""
    suffix = ".h5" if case.layout in ("deepcam", "gordonbell") else ".nc"
    stem = case.name if isinstance(case.name, bytes) else case.name.encode()
    path = Path(os.fsdecode(os.path.join(os.fsencode(directory), stem + suffix.encode())))
    work = Path(directory) / f"making{suffix}"
    if case.mutation in ("valid", *BYTE_MUTATIONS) or case.layout in ("deepcam", "gordonbell"):
        write_base(work, case.layout)
    if case.mutation in BYTE_MUTATIONS:
        apply_byte_mutation(work, case)
    elif case.mutation == "valid":
        pass
    elif case.layout in ("deepcam", "gordonbell"):
        apply_hdf5_mutation(work, case)
    else:
        apply_netcdf_mutation(work, case)
    os.rename(work, path)
    return path


# ------------------------------------------------------------------------------------------- strategies
def file_cases():
    """Hypothesis strategy of Case: every layout, every mutation family."""
    from hypothesis import strategies as st

    h, w = GRID
    layout = st.sampled_from(LAYOUTS)
    hdf5 = st.sampled_from(("deepcam", "gordonbell"))
    netcdf = st.sampled_from(("netcdf4", "netcdf3"))
    names = st.one_of(st.just("data-2000-01-01-06-00-00"), st.just("data with spaces"),
                      st.just("données-ü-雨"), st.binary(min_size=1, max_size=6).map(
                          lambda b: b"data-" + b.replace(b"/", b"_").replace(b"\x00", b"_") + b"\xff"))
    nonfinite = st.sampled_from((float("nan"), float("inf"), -float("inf")))
    big = st.sampled_from((3e38, -1e30, 1e12))
    value = st.fixed_dictionaries({"row": st.integers(0, h - 1), "col": st.integers(0, w - 1),
                                   "channel": st.integers(0, 15), "value": st.one_of(nonfinite, big)})

    def case(layouts, mutation, params, valid=False):
        return st.builds(lambda lay, prm, nm: Case(lay, mutation, prm, nm, valid), layouts, params, names)

    bad_labels = st.one_of(
        st.builds(lambda v: np.full(GRID, v, np.float32), st.sampled_from((float("nan"), 0.5, 1.5))),
        st.builds(lambda v: np.full(GRID, v, np.int16), st.sampled_from((-1, 3, 7, 255))),
    )
    hdf5_labels_extra = st.one_of(st.just(np.full(GRID, b"1", "S1")), st.just(np.zeros(GRID, np.complex64)),
                                  st.just(np.zeros((w, h), np.uint8)), st.just(np.zeros((h, w, 1), np.uint8)))
    variables_attr = st.one_of(
        st.just(np.array([b"\xff\xfe"] * 16)), st.just(np.arange(16)),
        st.just(np.array(list(VARIABLE_NAMES[:15]) + ["TMQ"], dtype=object)),
        st.just(np.array(list(VARIABLE_NAMES[:15]) + ["FOO"], dtype=object)),
        st.just(np.array(list(VARIABLE_NAMES[:10]), dtype=object)),
        st.binary(max_size=20).map(np.bytes_),
    )
    coord = st.one_of(
        st.fixed_dictionaries({"coord": st.just("lat"), "values": st.one_of(
            st.just(np.full(h, np.nan)), st.just(np.linspace(0, 950, h)), st.just(np.zeros(h)),
            st.just(np.linspace(-90, 90, h + 3)))}),
        st.fixed_dictionaries({"coord": st.just("lon"), "values": st.one_of(
            st.just(np.full(w, np.inf)), st.just(np.zeros(w)), st.just(np.arange(w - 1) * 1.0))}),
    )
    bad_bytes = st.binary(min_size=1, max_size=12).filter(lambda b: not _is_utf8(b))
    strategies = [
        case(layout, "valid", st.just({}), True),
        case(layout, "truncate", st.fixed_dictionaries({"fraction": st.floats(0.0, 0.999)})),
        case(layout, "bitflip", st.fixed_dictionaries({"region": st.sampled_from((512, 4096, 1 << 30)),
                                                       "flips": st.lists(st.tuples(st.integers(0, 1 << 30),
                                                                                   st.integers(0, 7)),
                                                                         min_size=1, max_size=8)}), None),
        case(layout, "zero-range", st.fixed_dictionaries({"start": st.integers(0, 1 << 20),
                                                          "length": st.integers(1, 4096)}), None),
        case(layout, "empty", st.just({})),
        case(layout, "garbage", st.fixed_dictionaries({"bytes": st.binary(max_size=600)})),
        case(layout, "prefix", st.fixed_dictionaries({"signature": st.sampled_from(
            (b"\x89HDF\r\n\x1a\n", b"CDF\x01", b"CDF\x02", b"CDF\x05")), "bytes": st.binary(max_size=600)})),
        case(layout, "fields-value", value),
        case(hdf5, "fields-dtype", st.fixed_dictionaries({"kind": st.sampled_from(
            ("string", "vlen-string", "compound", "complex", "bool", "opaque"))})),
        case(hdf5, "fields-shape", st.fixed_dictionaries({"shape": st.sampled_from(
            ((h, w), (h, w, 16, 1), (0, w, 16), (h, 0, 16), (h, w, 0), (16,), (), (w, h, 16), (h, w, 15),
             (h, w, 17)))})),
        case(hdf5, "fields-null", st.just({})),
        case(hdf5, "fields-huge", st.fixed_dictionaries({"rows": st.integers(1, 1 << 22),
                                                         "log_cols": st.integers(10, 30),
                                                         "filter": st.sampled_from(("gzip", "lzf", ""))})),
        case(layout, "labels", st.fixed_dictionaries({"array": bad_labels})),
        case(hdf5, "labels", st.fixed_dictionaries({"array": hdf5_labels_extra})),
        case(hdf5, "variables", st.fixed_dictionaries({"value": variables_attr})),
        case(hdf5, "variables-missing", st.just({}), True),
        case(layout, "coordinate", coord),
        case(hdf5, "attribute-bytes", st.fixed_dictionaries({"attr": st.sampled_from(("time", "label_source",
                                                                                      "calendar")),
                                                             "raw": bad_bytes})),
        case(netcdf, "attribute-bytes", st.fixed_dictionaries({"attr": st.sampled_from(("title", "label_source")),
                                                               "raw": bad_bytes}), None),
        case(hdf5, "link", st.fixed_dictionaries({"kind": st.sampled_from(("soft", "external")),
                                                  "target": st.sampled_from(("data", "labels_0", "lat"))})),
        case(hdf5, "kind-swap", st.fixed_dictionaries({"what": st.sampled_from(("climate", "data"))})),
        case(hdf5, "object-name", st.fixed_dictionaries({"raw": bad_bytes.map(
            lambda b: b"x" + b.replace(b"\x00", b"_").replace(b"/", b"_")), "rename": st.booleans()})),
        case(st.just("gordonbell"), "stats", st.fixed_dictionaries({"array": st.sampled_from(
            (np.zeros((16, 3)), np.zeros((15, 4)), np.full((16, 4), b"x", "S1")))})),
        case(netcdf, "variable-missing", st.fixed_dictionaries({"name": st.sampled_from(VARIABLE_NAMES)})),
        case(netcdf, "variable-dims", st.fixed_dictionaries({"name": st.sampled_from(VARIABLE_NAMES), "dims": st.sampled_from(
            (("time", "lon", "lat"), ("lat",), ("time",)))})),
        case(netcdf, "variable-dtype", st.fixed_dictionaries({"name": st.sampled_from(VARIABLE_NAMES),
                                                              "dtype": st.sampled_from(("str", "i1"))})),
        case(netcdf, "units", st.fixed_dictionaries({"name": st.sampled_from(VARIABLE_NAMES), "units": st.one_of(
            st.sampled_from(("furlong", "hPa", "degC", "mm/day", "K K", "", "1e400 Pa", "m s-1 s-1")),
            st.text(max_size=12), bad_bytes)}), None),
        case(netcdf, "time-units", st.fixed_dictionaries({"time_units": st.one_of(
            st.sampled_from(("days since 0000-13-45", "fortnights since 2000-01-01", "hours", "")),
            st.text(max_size=16))}), None),
        case(netcdf, "time-records", st.fixed_dictionaries({"records": st.just(0)})),
        case(layout, "labels-missing", st.just({})),
    ]
    return st.one_of(*strategies)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
        return True
    except UnicodeDecodeError:
        return False


# ------------------------------------------------------------------------------------------- configs
CONFIG_KEYS = ("train.batch_size", "train.epochs", "optimizer.learning_rate", "optimizer.schedule.milestones",
               "model.tiramisu.down_layers", "model.name", "data.channels", "data.synth.grid", "pipeline.crop",
               "model.weight_decay", "train.loss_scale", "pipeline.shuffle", "data.labeller.tc_radius_km")


@dataclass
class ConfigCase:
    """A config file's bytes (None: no file) and `--set` items; `valid` as in Case."""

    kind: str
    text: bytes | None
    overrides: tuple[str, ...] = ()
    valid: bool | None = False

    def describe(self) -> str:
        shown = (self.text or b"")[:60]
        return f"config/{self.kind} {shown!r} {[o[:60] for o in self.overrides]}"


def _yaml_tree(dotted: str, value_yaml: str) -> str:
    parts = dotted.split(".")
    lines = [f"{'  ' * i}{p}:" for i, p in enumerate(parts[:-1])]
    return "\n".join(lines + [f"{'  ' * (len(parts) - 1)}{parts[-1]}: {value_yaml}"]) + "\n"


def config_cases():
    """Hypothesis strategy of ConfigCase: malformed YAML files and --set values."""
    from hypothesis import strategies as st

    key = st.sampled_from(CONFIG_KEYS)
    bad_value = st.one_of(
        st.sampled_from((".nan", ".inf", "-.inf", "1e400", "1" + "0" * 100, "-5", "'text'", "[1, 2]", "{a: 1}",
                         "null", "true", "0x7fffffffffffffffffff", "[.nan]", "[1e400, 2]", "~", "[[1]]",
                         "'x' " * 3, "!!binary aGVsbG8=", "!!python/object:os.system {}", "2001-12-14")),
        st.integers(-10**30, 10**30).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.text(max_size=20).map(lambda t: repr(t)))
    depth = st.integers(17, 3000)
    nested = st.one_of(depth.map(lambda n: "[" * n + "]" * n), depth.map(lambda n: "{a: " * n + "1" + "}" * n))
    bad_bytes = st.binary(min_size=1, max_size=8).filter(lambda b: not _is_utf8(b))

    def file_case(kind, text, valid=False):
        return st.builds(lambda t: ConfigCase(kind, t, (), valid), text)

    def bomb(levels, dotted):  # "billion laughs": 10**levels items in a few hundred bytes of YAML
        items = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
        items += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
        return _yaml_tree(dotted, "[" + ", ".join(items) + "]")

    good = st.sampled_from(("", "train:\n  batch_size: 4\n", "optimizer:\n  learning_rate: 1e-4\n",
                            "# a comment\ntrain: {epochs: 2}\n"))
    strategies = [
        file_case("value", st.builds(lambda k, v: _yaml_tree(k, v).encode(), key, bad_value), None),
        file_case("unknown-key", st.builds(lambda k, n: _yaml_tree(k.rsplit(".", 1)[0] + "." + n, "1").encode(),
                                           key, st.from_regex(r"\A[a-z_]{1,12}\Z").filter(lambda s: s not in (
                                               "batch_size", "epochs")))),
        file_case("nesting", st.builds(lambda n: f"train: {n}\n".encode(), nested)),
        file_case("top-level", st.sampled_from((b"- 1\n- 2\n", b"42\n", b"'text'\n", b"!!set {a}\n",
                                                b"train\n", b"[train]\n"))),
        file_case("not-utf8", st.one_of(
            st.builds(lambda t: t.encode("utf-16"), good.filter(bool)),
            st.builds(lambda t, b: t.encode() + b"# " + b + b"\n", good, bad_bytes),
            st.builds(lambda b: b"train:\n  loss_scale: '" + b + b"'\n", bad_bytes))),
        file_case("syntax", st.text(max_size=60).map(lambda t: t.encode()), None),
        file_case("binary", st.binary(max_size=200), None),
        file_case("tabs", st.just(b"train:\n\tbatch_size: 4\n")),
        file_case("alias-bomb", st.builds(lambda n, k: bomb(n, k).encode(), st.integers(5, 9), key)),
        file_case("huge", st.integers((1 << 20) + 1, (1 << 20) + 4096).map(lambda n: b"#" * n)),
        file_case("valid", good.map(str.encode), True),
        st.builds(lambda k, v: ConfigCase("set-value", None, (f"{k}={v}",), None), key, bad_value),
        st.builds(lambda k, v: ConfigCase("set-nesting", None, (f"{k}={v}",)), key, nested),
        st.builds(lambda t: ConfigCase("set-text", None, (t,), None), st.text(max_size=40)),
        st.builds(lambda k, b: ConfigCase("set-not-utf8", None, (f"{k}=" + os.fsdecode(b),), None), key,
                  bad_bytes),
        st.builds(lambda n: ConfigCase("set-deep-key", None, (".".join(["train"] * n) + "=1",)),
                  st.integers(2, 500)),
    ]
    return st.one_of(*strategies)


# ------------------------------------------------------------------------------------------- running
@dataclass
class Run:
    """What one command did: exit code (None: killed after the timeout; < 0: ended by a signal), output, and
    the exception an in-process run did not turn into an exit code."""

    args: list
    exit_code: int | None
    stdout: str
    stderr: str
    exception: BaseException | None = None
    subprocess: bool = False


def run_in_process(args: list) -> Run:
    from click.testing import CliRunner

    from exascale_climate.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)
    exc = result.exception if result.exception is not None and not isinstance(result.exception, SystemExit) else None
    run = Run(args, result.exit_code, result.stdout, result.stderr, exc)
    if not _h5py_lock_free():
        run.exit_code = None  # a hang in waiting: the next command's threads would block on it
        run.stderr += "\nh5py's global lock was left held by this command (freed by a garbage collection)"
    return run


def _h5py_lock_free(wait_s: float = 10.0) -> bool:
    """Whether another thread can take h5py's global lock after a command. A command that leaves it held (an
    h5py generator suspended inside `with phil` and kept in a reference cycle, e.g. by an exception's
    traceback) makes every later h5py call of another thread wait, until a garbage collection happens to free
    it: that hung the fuzzer's stage runs (data/layouts.climate_attrs). Counted as a hang; the lock is then
    freed by a collection so the run goes on."""
    import gc
    import threading

    if "h5py" not in sys.modules:
        return True
    from h5py._objects import phil

    taken = threading.Event()

    def take():
        with phil:
            taken.set()

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    if taken.wait(wait_s):
        thread.join()
        return True
    gc.collect()
    taken.wait(60)
    return False


MEMORY_LIMIT = 4 << 30  # address space of a subprocess run: a runaway allocation fails there, not the machine


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_subprocess(args: list, timeout: float = SUBPROCESS_TIMEOUT_S) -> Run:
    """A real process (address space capped at MEMORY_LIMIT): a crash on a signal and a hang are only visible
    here."""
    cmd = [sys.executable, "-m", "exascale_climate.cli", *(os.fsencode(str(a)) for a in args)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).parents[2]),
                                                                   os.environ.get("PYTHONPATH", "")) if p)}
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env, preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired as e:
        return Run(args, None, (e.stdout or b"").decode(errors="replace"), (e.stderr or b"").decode(errors="replace"),
                   subprocess=True)
    return Run(args, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"),
               subprocess=True)


CONFIG_KEY_ERROR = re.compile(r"^error: (--set \S|[A-Za-z_][\w.\[\]]*: )")


def _names_it(text: str, names: list[str]) -> bool:
    """Whether `text` names one of `names` (a path may be printed with its undecodable bytes escaped), or for
    config errors a dotted key (`model.name: ...`, `--set ...`)."""
    if "config-key" in names and CONFIG_KEY_ERROR.match(text):
        return True
    variants = set()
    for n in names:
        variants |= {n, n.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                     n.encode("utf-8", "backslashreplace").decode(), repr(n)[1:-1],
                     "".join(c if c.isprintable() else repr(c)[1:-1] for c in n)}
    return any(v and v in text for v in variants)


def classify(run: Run, valid: bool | None, names: list[str], leftovers: list[str]) -> tuple[str, str]:
    """(outcome, detail) of one run against the property (module docstring); `names`: what the error must
    name (the file's path or name, or the config key); `leftovers`: temporaries or partial outputs found."""
    out = run.stdout + run.stderr
    if run.exit_code is None:
        if "h5py's global lock was left held" in run.stderr:
            return "hang", "h5py's global lock left held (other threads' h5py calls would wait)"
        return "hang", f"no exit within {SUBPROCESS_TIMEOUT_S} s"
    if run.exit_code < 0:
        return "crash", f"killed by signal {-run.exit_code}"
    if run.exception is not None or "Traceback (most recent call last)" in out:
        exc = run.exception
        return "traceback", (f"{type(exc).__name__}: {exc}"[:300] if exc else _last_lines(out))
    if leftovers:
        return "half-written", ", ".join(leftovers)[:300]
    if run.exit_code == 0:
        if valid is False:
            return "silent", _last_lines(run.stdout)
        return "accepted", ""
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    problems = [line for line in run.stdout.splitlines() if line.startswith("PROBLEM ")]
    if run.exit_code == 1 and problems and not errors:  # data inspect: the report lists each problem
        if all(_names_it(p, names) for p in problems):
            return "error", problems[0][:300]
        return "bad-message", problems[0][:300]
    if len(errors) == 1 and _names_it(errors[0], names):
        if valid is True:
            return "silent", f"rejected a valid input: {errors[0][:300]}"  # counted with the failures
        return "error", errors[0][:300]
    return "bad-message", _last_lines(run.stderr or run.stdout)


def _last_lines(text: str, n: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-n:])[:300]


def _temporaries(*dirs: Path) -> list[str]:
    from exascale_climate.utils.io import is_temp_name

    found = []
    for d in dirs:
        if d.exists():
            found += [str(p) for p in d.rglob("*") if is_temp_name(p)]
    return found


FILE_COMMANDS = ("inspect", "convert", "stats", "label", "predict")
# the commands that read a dataset directory or labelled files (issue 16's second round); evaluate loads a model
# like predict and runs as often
DATASET_COMMANDS = ("stage", "track", "split", "evaluate")
MODEL_COMMANDS = ("predict", "evaluate")
CONFIG_COMMANDS = ("config show", "train")
HDF5_ONLY = ("stats", "stage", "split", "evaluate")  # they read data-*.h5 samples only


def file_valid(case: Case, command: str) -> bool | None:
    """Must `command` accept (True), reject (False) the case's file, or may it do either (None)?"""
    m, p, hdf5 = case.mutation, case.params, case.layout in ("deepcam", "gordonbell")
    if command in ("stage", "split"):  # they open each file (stage) or only list names (split), not its values
        return case.valid if command == "stage" and m in BYTE_MUTATIONS else None
    if command == "track" and not (m in BYTE_MUTATIONS or m.startswith("labels")):
        return None  # it reads the labels, the time and the coordinates, not the fields
    if m in ("labels", "labels-missing"):
        if command in ("label", "predict"):  # they do not read the labels (label writes new ones)
            return True if m == "labels-missing" else None
        if m == "labels-missing" and command == "inspect":
            return None  # a report: "no labels in the file"
        return False
    if m == "fields-value" and command in ("label", "predict"):
        return None  # they read a subset of the variables
    if m == "fields-value" and hdf5 and np.isfinite(p["value"]) and command != "inspect":
        return None  # HDF5 samples' value ranges are checked by inspect, not on every read (data/samples.py)
    if m == "attribute-bytes":
        return False if hdf5 and p["attr"] == "time" and command != "inspect" else None
    if m == "object-name":
        return False if p["rename"] else True
    if m in ("variable-missing", "variable-dims", "variable-dtype") and command in ("label", "predict"):
        return None  # they read a subset of the variables
    if m == "variable-missing" and command == "inspect":
        return None
    if m == "variable-dtype" and p["dtype"] == "i1":
        return None  # small integers may be in range
    return case.valid


def run_file_case(case: Case, workdir: Path, checkpoint: Path | None, commands=FILE_COMMANDS,
                  use_subprocess: bool = False) -> list[tuple[str, str, str]]:
    """Run each command on the case's file in a fresh directory under `workdir`; [(command, outcome, detail)]."""
    results = []
    for command in commands:
        if command in MODEL_COMMANDS and checkpoint is None:
            continue
        if command in HDF5_ONLY and case.layout not in ("deepcam", "gordonbell"):
            continue
        cdir = Path(workdir) / command.replace(" ", "-")
        shutil.rmtree(cdir, ignore_errors=True)
        (cdir / "in").mkdir(parents=True)
        path = materialize(case, cdir / "in")
        before = path.read_bytes() if path.exists() else b""
        out = cdir / "out"
        names = [str(path), path.name]
        if command == "inspect":
            args = ["data", "inspect", path]
        elif command == "convert":
            args = ["data", "convert", path, "--out", out]
        elif command in HDF5_ONLY:  # a dataset directory: the file as a data-*.h5 sample
            target = path.with_name("data-x" + path.name if not path.name.startswith("data-") else path.name)
            path.rename(target)
            path = target
            names = [str(path), path.name]
            if command == "stats":
                args = ["data", "stats", path.parent, "--out", out / "stats.h5"]
            elif command == "split":  # beside two valid samples
                for k in (1, 2):
                    write_base(path.parent / f"data-2000-01-0{k + 1}-00-00-00.h5", case.layout)
                names.append(str(path.parent))
                args = ["data", "split", path.parent, "--out", out]
            elif command == "stage":  # a prepared dataset: train/ holds the file, stats.h5 beside it
                src = cdir / "src"
                (src / "train").mkdir(parents=True)
                path = Path(shutil.move(str(path), str(src / "train")))
                names = [str(path), path.name, f"train/{path.name}"]
                shutil.copyfile(_stats_file(workdir), src / "stats.h5")
                args = ["stage", "--src", src, "--dst", out]
            else:
                args = ["evaluate", "--checkpoint", checkpoint, "--data", path.parent, "--json", out / "metrics.json"]
        elif command == "label":
            args = ["data", "label", path]  # in place: a failure must leave the file as it was
        elif command == "track":
            args = ["track", path, "--out", out, "--no-plot"]
        else:
            args = ["predict", "--checkpoint", checkpoint, path, "--out", out, "--strict"]
        run = run_subprocess(args) if use_subprocess else run_in_process(args)
        leftovers = _temporaries(cdir)
        valid = file_valid(case, command)
        if run.exit_code not in (0, None) and (run.exit_code or 0) >= 0:
            leftovers += _partial_outputs(command, out, path, before)
        if run.exit_code == 0 and valid is True and command == "convert":
            leftovers += _wrong_conversion(case, out)
        outcome, detail = classify(run, valid, names, leftovers)
        results.append((command, outcome, detail))
    return results


def _stats_file(workdir: Path) -> Path:
    """A valid stats.h5 of the base fields, made once per work directory (stage's prepared dataset needs one)."""
    from exascale_climate.data.stats import compute_stats, write_stats

    path = Path(workdir) / "base-stats.h5"
    if not path.exists():
        (Path(workdir) / "base-stats").mkdir(parents=True, exist_ok=True)
        sample = write_base(Path(workdir) / "base-stats" / "data-2000-01-01-00-00-00.h5", "deepcam")
        write_stats(path, compute_stats([sample], progress=False))
    return path


def _partial_outputs(command: str, out: Path, path: Path, before: bytes) -> list[str]:
    """Outputs a failed command must not leave: any sample of convert, stats.h5, a mask, a track table, a metrics
    file; a changed input. Not for stage and split: the files done before the bad one stay (a rerun resumes)."""
    found = []
    if command in ("stage", "split"):
        return found
    if out.exists():
        found += [str(p) for p in out.rglob("*") if p.is_file() and p.name != "events.csv"]
    if command == "label" and path.exists() and path.read_bytes() != before:
        found.append(f"{path} changed")
    return found


def _wrong_conversion(case: Case, out: Path) -> list[str]:
    """A valid file's conversion must hold its fields exactly (checked with h5py, not the toolkit's reader)."""
    import h5py

    if case.mutation != "valid":
        return []
    files = sorted(out.glob("data-*.h5"))
    if len(files) != 1:
        return [f"{len(files)} outputs in {out}"]
    with h5py.File(files[0], "r") as f:
        data = f["climate/data"][()]
    if not np.array_equal(data, base_fields()[0]):
        return [f"{files[0]}: fields differ from the input's"]
    return []


# Inputs that may make a reader allocate without bound: always run as a capped process, so a regression is a
# "hang" or "crash" outcome instead of an exhausted machine.
ISOLATED_KINDS = ("alias-bomb",)
ISOLATED_TIMEOUT_S = 120


def config_valid(case: ConfigCase, command: str) -> bool | None:
    return None if command == "train" and case.valid is not False else case.valid


def run_config_case(case: ConfigCase, workdir: Path, commands=CONFIG_COMMANDS,
                    use_subprocess: bool = False) -> list[tuple[str, str, str]]:
    results = []
    cdir = Path(workdir) / "config"
    shutil.rmtree(cdir, ignore_errors=True)
    cdir.mkdir(parents=True)
    args: list = []
    names = []
    if case.text is not None:
        path = cdir / "fuzz.yaml"
        path.write_bytes(case.text)
        args += ["--config", path]
        names += [str(path)]
    for item in case.overrides:
        args += ["--set", item]
        key = item.split("=", 1)[0].strip()
        names += [key, key[:40], item[:40]]
    names += ["config-key"]
    for command in commands:
        if command == "train":
            run_dir = cdir / "run"
            full = ["train", *args, "--set", f"data.train_dir={cdir / 'no-data'}", "--run-dir", run_dir]
        else:
            full = ["config", "show", *args]
        if case.kind in ISOLATED_KINDS and command == "train":
            continue  # the same parse as config show, which runs as a process
        isolated = use_subprocess or case.kind in ISOLATED_KINDS
        run = run_subprocess(full, ISOLATED_TIMEOUT_S) if isolated else run_in_process(full)
        leftovers = _temporaries(cdir)
        valid = config_valid(case, command)
        if command == "train" and run.exit_code not in (0, None) and valid is False and \
                (cdir / "run" / "config.yaml").exists():
            leftovers.append(f"{cdir / 'run' / 'config.yaml'} written for an invalid config")
        outcome, detail = classify(run, valid, names + [str(cdir / "no-data")] * (command == "train"), leftovers)
        if command == "train" and outcome == "silent" and valid is None:
            outcome = "accepted"
        results.append((command, outcome, detail))
    return results


# ------------------------------------------------------------------------------------------- data import
ERA5_LAT = np.linspace(90.0, -90.0, 13)  # descending, as ERA5
ERA5_LON = np.arange(-180.0, 180.0, 30.0)  # -180..150, as many netCDF exports
ERA5_SURFACE = {"msl": (100500.0, "Pa"), "sp": (100000.0, "Pa"), "t2m": (288.0, "K"), "d2m": (283.0, "K"),
                "skt": (290.0, "K"), "u10": (5.0, "m s**-1"), "v10": (-3.0, "m s**-1"),
                "tcwv": (30.0, "kg m**-2"), "tp": (0.001, "m")}
ERA5_LEVELS = {"z": ({1000.0: 980.0, 850.0: 14700.0, 500.0: 56000.0, 200.0: 117000.0}, "m**2 s**-2"),
               "t": ({1000.0: 290.0, 850.0: 283.0, 500.0: 260.0, 200.0: 220.0}, "K"),
               "u": ({1000.0: 1.0, 850.0: 12.0, 500.0: 20.0, 200.0: 30.0}, "m s**-1"),
               "v": ({1000.0: 0.0, 850.0: -4.0, 500.0: 0.0, 200.0: 0.0}, "m s**-1")}
IMPORT_VARIABLES = tuple(ERA5_SURFACE) + tuple(ERA5_LEVELS)


def write_era5_base(path: Path, case: "Case | None" = None) -> Path:
    """One ERA5-style netCDF (surface and pressure-level variables, 1 time) with the case's semantic mutation."""
    import netCDF4

    p, m = (case.params, case.mutation) if case is not None else ({}, "valid")
    lat, lon = ERA5_LAT.copy(), ERA5_LON.copy()
    if m == "coord":
        (lat if p["coord"] == "latitude" else lon)[:] = p["values"][:len(lat if p["coord"] == "latitude" else lon)]
    plev = np.array([1000.0, 850.0, 500.0, 200.0])
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("valid_time", 1)
        nc.createDimension("pressure_level", len(plev))
        nc.createDimension("latitude", len(lat))
        nc.createDimension("longitude", len(lon))
        if not (m == "time" and p["how"] == "missing"):
            t = nc.createVariable("valid_time", "i8", ("valid_time",))
            t.units = p["units"] if m == "time" and p["how"] == "units" else "seconds since 1970-01-01"
            t.calendar = "proleptic_gregorian"
            t[:] = [1125187200]  # 2005-08-28T00
        nc.createVariable("latitude", "f8", ("latitude",))[:] = lat
        nc.createVariable("longitude", "f8", ("longitude",))[:] = lon
        pl = nc.createVariable("pressure_level", "f8", ("pressure_level",))
        pl.units = "hPa"
        pl[:] = plev
        for name in IMPORT_VARIABLES:
            if m == "drop" and name == p["name"]:
                continue
            level = name in ERA5_LEVELS
            dims = ("valid_time", "pressure_level", "latitude", "longitude") if level else \
                ("valid_time", "latitude", "longitude")
            if m == "dims" and name == p["name"]:
                dims = dims[:-1]  # no longitude
            value, units = ERA5_LEVELS[name] if level else ERA5_SURFACE[name]
            v = nc.createVariable(name, "f4", dims)
            if m == "units" and name == p["name"]:
                v.setncattr("units", np.bytes_(p["units"]) if isinstance(p["units"], bytes) else p["units"])
            else:
                v.units = units
            shape = tuple(len(nc.dimensions[d]) for d in dims)
            if level and len(shape) == 4:
                data = np.broadcast_to(np.array([value[q] for q in plev], np.float32)[None, :, None, None],
                                       shape).copy()
            else:
                data = np.full(shape, np.mean(list(value.values())) if level else value, np.float32)
            if m == "value" and name == p["name"]:
                data.reshape(-1)[p["index"] % data.size] = p["value"]
            v[:] = data
    return path


def import_cases():
    """Hypothesis strategy of Case for `data import`: an ERA5-style netCDF, valid, bytes broken, or one variable
    dropped, of unknown/undecodable units, with a bad value, transposed; coordinates or time broken."""
    from hypothesis import strategies as st

    var = st.sampled_from(IMPORT_VARIABLES)

    def case(mutation, params, valid=None):
        return st.builds(lambda prm: Case("era5", mutation, prm, "era5-2005-08-28", valid), params)

    return st.one_of(
        case("valid", st.just({}), True),
        case("truncate", st.fixed_dictionaries({"fraction": st.floats(0.0, 0.999)}), False),
        case("bitflip", st.fixed_dictionaries({"region": st.sampled_from((512, 4096, 1 << 30)),
                                               "flips": st.lists(st.tuples(st.integers(0, 1 << 30),
                                                                           st.integers(0, 7)),
                                                                 min_size=1, max_size=8)})),
        case("zero-range", st.fixed_dictionaries({"start": st.integers(0, 1 << 16),
                                                  "length": st.integers(1, 4096)})),
        case("empty", st.just({}), False),
        case("garbage", st.fixed_dictionaries({"bytes": st.binary(max_size=600)}), False),
        case("prefix", st.fixed_dictionaries({"signature": st.sampled_from((b"\x89HDF\r\n\x1a\n", b"CDF\x01")),
                                              "bytes": st.binary(max_size=600)}), False),
        case("drop", st.fixed_dictionaries({"name": var})),
        case("units", st.fixed_dictionaries({"name": var, "units": st.one_of(
            st.sampled_from(("furlong", "", "K K", "m s**-1 s**-1", "Pa**0.5", "1e400", "kg")),
            st.text(max_size=12), st.binary(min_size=1, max_size=8).filter(lambda b: not _is_utf8(b)))})),
        case("value", st.fixed_dictionaries({"name": var, "index": st.integers(0, 10**6),
                                             "value": st.sampled_from((float("nan"), float("inf"), -1e30, 3e38))})),
        case("dims", st.fixed_dictionaries({"name": var})),
        case("coord", st.one_of(
            st.fixed_dictionaries({"coord": st.just("latitude"), "values": st.sampled_from(
                (np.full(13, np.nan), np.linspace(0, 950, 13), np.zeros(13), np.linspace(-90, 90, 13)[::-1] * 2))}),
            st.fixed_dictionaries({"coord": st.just("longitude"), "values": st.sampled_from(
                (np.full(12, np.inf), np.zeros(12), np.linspace(0, 1000, 12)))}))),
        case("time", st.one_of(st.fixed_dictionaries({"how": st.just("missing")}),
                               st.fixed_dictionaries({"how": st.just("units"), "units": st.sampled_from(
                                   ("days since", "fortnights since 2000-01-01", "seconds since the beginning",
                                    "hours since 2000-13-45", "seconds since 1970-01-01 00:00:00 UTC+99"))}))),
    )


def run_import_case(case: Case, workdir: Path, use_subprocess: bool = False) -> list[tuple[str, str, str]]:
    """`data import` of the case's ERA5-style file; a failure may leave only complete outputs (each readable and
    holding all 16 variables: checked with netCDF4 here)."""
    cdir = Path(workdir) / "import"
    shutil.rmtree(cdir, ignore_errors=True)
    (cdir / "in").mkdir(parents=True)
    path = cdir / "in" / f"{case.name}.nc"
    if case.mutation in BYTE_MUTATIONS:
        write_era5_base(path)
        apply_byte_mutation(path, case)
    else:
        write_era5_base(path, case)
    out = cdir / "out"
    args = ["data", "import", path, "--out", out]
    run = run_subprocess(args) if use_subprocess else run_in_process(args)
    leftovers = _temporaries(cdir)
    if out.exists():
        leftovers += _incomplete_netcdf(out)
    if run.exit_code == 0 and case.valid is True and len(list(out.glob("*.nc"))) != 1:
        leftovers.append(f"{out}: {len(list(out.glob('*.nc')))} outputs for one time step")
    outcome, detail = classify(run, case.valid, [str(path), path.name], leftovers)
    return [("import", outcome, detail)]


def _incomplete_netcdf(out: Path) -> list[str]:
    import netCDF4

    bad = []
    for f in out.rglob("*"):
        if not f.is_file():
            continue
        try:
            with netCDF4.Dataset(f) as nc:
                missing = [n for n in VARIABLE_NAMES if n not in nc.variables]
        except Exception as e:  # noqa: BLE001 - any failure to read it back is the finding
            bad.append(f"{f}: unreadable ({type(e).__name__})")
            continue
        if missing:
            bad.append(f"{f}: lacks {missing}")
    return bad


# ------------------------------------------------------------------------------------------- driver
CHECKPOINT_GRID = (48, 72)  # the training data of the checkpoint predict uses (the fuzzed files are smaller)


def make_checkpoint(root: Path) -> Path:
    """A real run directory for `predict`: the demo config's slim Tiramisu trained for 2 steps on a few base
    samples (~10 s); kept when already there."""
    from exascale_climate.data.layouts import list_samples
    from exascale_climate.data.stats import compute_stats, write_stats
    from exascale_climate.train.demo import DemoAssets, ensure_run

    assets = DemoAssets(Path(root))
    if not assets.has_run():
        for split, seeds in (("train", range(6)), ("valid", range(6, 8)), ("test", range(8, 10))):
            (assets.data_dir / split).mkdir(parents=True, exist_ok=True)
            for s in seeds:
                data, labels = base_fields(CHECKPOINT_GRID, s)
                write_hdf5_base(assets.data_dir / split / f"data-2000-01-{s + 1:02d}-00-00-00.h5", "deepcam", data,
                                labels)
        write_stats(assets.stats_file, compute_stats(list_samples(assets.train_dir), progress=False))
        ensure_run(assets, steps=2)
    return assets.run_dir


@dataclass
class Tally:
    """Outcome counts per command, the failures with their case, and how many inputs were drawn."""

    counts: dict = field(default_factory=dict)  # command -> Counter(outcome)
    failures: list = field(default_factory=list)  # (command, outcome, detail, case description)
    inputs: Counter = field(default_factory=Counter)  # "files" / "configs" drawn
    subprocess_runs: int = 0

    def add(self, results, case, subprocess_run: bool = False) -> None:
        for command, outcome, detail in results:
            self.counts.setdefault(command, Counter())[outcome] += 1
            if outcome not in OK_OUTCOMES:
                self.failures.append((command, outcome, detail, case.describe(),
                                      "subprocess" if subprocess_run else "in-process"))
        self.subprocess_runs += len(results) if subprocess_run else 0

    def runs(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())


def fuzz(examples: int, workdir: Path, checkpoint: Path | None = None, seed: int = 0, subprocess_every: int = 0,
         config_share: float = 0.25, predict_every: int = 4, tally: Tally | None = None, import_share: float = 0.1,
         train_every: int = 4) -> Tally:
    """Draw `examples` inputs (data files; `config_share` of them configs, `import_share` ERA5-style files for
    `data import`) with hypothesis and run every command on each (`predict` and `evaluate`, ~3 s a run for
    loading the model, on every `predict_every`-th file; `train` on every `train_every`-th config); every
    `subprocess_every`-th input is also run as a real process (crash and hang detection).
    Never raises on a failing run: the tally counts it (the tests assert on the tally)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as with_seed

    tally = tally or Tally()
    workdir = Path(workdir)
    n_configs = int(round(examples * config_share))
    n_imports = int(round(examples * import_share))
    n_files = examples - n_configs - n_imports
    options = dict(database=None, deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))

    def check_file(case: Case) -> None:
        tally.inputs["files"] += 1
        k = tally.inputs["files"]
        commands = FILE_COMMANDS[:-1] + DATASET_COMMANDS[:-1]
        if predict_every and k % predict_every == 0:
            commands += MODEL_COMMANDS
        tally.add(run_file_case(case, workdir, checkpoint, commands), case)
        if subprocess_every and k % subprocess_every == 0:
            tally.add(run_file_case(case, workdir / "sub", None, ("inspect", "convert", "label")), case, True)

    def check_config(case: ConfigCase) -> None:
        tally.inputs["configs"] += 1
        k = tally.inputs["configs"]
        commands = CONFIG_COMMANDS if k % train_every == 0 else ("config show",)  # train imports TensorFlow
        tally.add(run_config_case(case, workdir, commands), case)
        if subprocess_every and k % subprocess_every == 0:
            tally.add(run_config_case(case, workdir / "sub", ("config show",), True), case, True)

    def check_import(case: Case) -> None:
        tally.inputs["imports"] += 1
        k = tally.inputs["imports"]
        tally.add(run_import_case(case, workdir), case)
        if subprocess_every and k % subprocess_every == 0:
            tally.add(run_import_case(case, workdir / "sub", True), case, True)

    if n_imports:
        with_seed(seed + 2)(settings(max_examples=n_imports, **options)(given(import_cases())(check_import)))()
    if n_files:
        with_seed(seed)(settings(max_examples=n_files, **options)(given(file_cases())(check_file)))()
    if n_configs:
        with_seed(seed + 1)(settings(max_examples=n_configs, **options)(given(config_cases())(check_config)))()
    return tally


def records(tally: Tally, seconds: float) -> list[dict]:
    """JSON-lines records: runs per command and outcome (baseline: the command's runs, ratio: the share)."""
    from exascale_climate.bench.common import record

    out = []
    for command, counter in sorted(tally.counts.items()):
        total = sum(counter.values())
        for outcome in OUTCOMES:
            out.append(record("fuzz", f"{command}: {outcome}", counter.get(outcome, 0), "runs", total,
                              f"{command} runs", command=command, outcome=outcome))
    out.append(record("fuzz", "inputs", sum(tally.inputs.values()), "inputs", None, None,
                      files=tally.inputs["files"], configs=tally.inputs["configs"],
                      imports=tally.inputs["imports"], runs=tally.runs(),
                      subprocess_runs=tally.subprocess_runs, seconds=round(seconds, 1)))
    out += [record("fuzz", "failure", 1, "run", None, None, command=c, outcome=o, detail=d, case=k, mode=m)
            for c, o, d, k, m in tally.failures]
    return out


CHUNK = 100  # inputs per hypothesis run (seed, seed+1, ...): progress and partial counts on a slow machine


def fuzz_in_chunks(examples: int, workdir: Path, checkpoint: Path | None, seed: int = 0, subprocess_every: int = 50,
                   predict_every: int = 4, on_chunk=None, train_every: int = 4) -> Tally:
    """`examples` inputs as runs of CHUNK, hypothesis seeded seed, seed+1, ...; `on_chunk(tally)` after each."""
    tally = Tally()
    done = 0
    while done < examples:
        n = min(CHUNK, examples - done)
        fuzz(n, workdir, checkpoint, seed=seed + done // CHUNK, subprocess_every=subprocess_every,
             predict_every=predict_every, tally=tally, train_every=train_every)
        done += n
        if on_chunk is not None:
            on_chunk(tally)
    return tally


def bench_fuzz(examples: int, seed: int = 0, subprocess_every: int = 50, predict_every: int = 4,
               workdir: Path | None = None, on_chunk=None, train_every: int = 4) -> list[dict]:
    """`exaclimate bench fuzz`: the full run, in a temporary directory unless `workdir` is given."""
    import tempfile

    try:
        import hypothesis  # noqa: F401 - a development dependency (setup.py DEV_REQUIRES)
    except ImportError:
        from exascale_climate.errors import ExaclimateError

        raise ExaclimateError("bench fuzz needs hypothesis: pip install 'exascale_climate[dev]'") from None
    with tempfile.TemporaryDirectory(prefix="exaclimate-fuzz-", dir=workdir) as tmp:
        tmp = Path(tmp)
        checkpoint = make_checkpoint(tmp / "checkpoint") if predict_every else None
        t0 = time.perf_counter()
        tally = fuzz_in_chunks(examples, tmp / "work", checkpoint, seed, subprocess_every, predict_every,
                               on_chunk=None if on_chunk is None else
                               (lambda t: on_chunk(t, time.perf_counter() - t0)), train_every=train_every)
        return records(tally, time.perf_counter() - t0)
