"""The 16 CAM5 variables of the paper's dataset, in the channel order of the published files."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variable:
    """One CAM5 field. `component` says which way the field points when it is a wind component:
    "eastward" (zonal, u) or "northward" (meridional, v); "" for scalars. A mirror of an axis negates the
    components along that axis, so a longitude flip negates exactly the eastward ones."""

    name: str
    units: str
    long_name: str
    valid_range: tuple[float, float]  # physically plausible values in `units`: outside is a broken file
    component: str = ""


# Ranges are wide (hurricane cores, the Tibetan plateau, polar nights fit): they catch wrong units and garbage
# (TMQ 3e38, negative PS, PSL in hPa), not weather.
# Channel order of the ClimateNet / MLPerf DeepCAM files (see README "Formats").
VARIABLES: tuple[Variable, ...] = (
    Variable("TMQ", "kg m-2", "Total (vertically integrated) precipitable water", (0.0, 200.0)),
    Variable("U850", "m s-1", "Zonal wind at 850 mbar pressure surface", (-150.0, 150.0), component="eastward"),
    Variable("V850", "m s-1", "Meridional wind at 850 mbar pressure surface", (-150.0, 150.0), component="northward"),
    Variable("UBOT", "m s-1", "Lowest level zonal wind", (-150.0, 150.0), component="eastward"),
    Variable("VBOT", "m s-1", "Lowest model level meridional wind", (-150.0, 150.0), component="northward"),
    Variable("QREFHT", "kg kg-1", "Reference height humidity", (0.0, 0.1)),
    Variable("PS", "Pa", "Surface pressure", (2.0e4, 1.2e5)),
    Variable("PSL", "Pa", "Sea level pressure", (8.0e4, 1.2e5)),
    Variable("T200", "K", "Temperature at 200 mbar pressure surface", (150.0, 300.0)),
    Variable("T500", "K", "Temperature at 500 mbar pressure surface", (170.0, 320.0)),
    Variable("PRECT", "m s-1", "Total (convective and large-scale) precipitation rate (liq + ice)", (-1e-6, 1e-2)),
    Variable("TS", "K", "Surface temperature (radiative)", (150.0, 360.0)),
    Variable("TREFHT", "K", "Reference height temperature", (150.0, 360.0)),
    Variable("Z1000", "m", "Geopotential Z at 1000 mbar pressure surface", (-1500.0, 2500.0)),
    Variable("Z200", "m", "Geopotential Z at 200 mbar pressure surface", (8000.0, 15000.0)),
    Variable("ZBOT", "m", "Lowest model level height", (0.0, 1000.0)),
)
VARIABLE_NAMES: tuple[str, ...] = tuple(v.name for v in VARIABLES)
BY_NAME: dict[str, Variable] = {v.name: v for v in VARIABLES}
NUM_CHANNELS = len(VARIABLES)

CLASS_NAMES: tuple[str, ...] = ("background", "tropical_cyclone", "atmospheric_river")
NUM_CLASSES = len(CLASS_NAMES)
LABEL_VARIABLE = "LABELS"

# The paper's full grid: 768 x 1152 (about 0.23 x 0.31 degrees, ~25 km).
PAPER_GRID = (768, 1152)


def longitude_flip_signs(names: list[str] | tuple[str, ...]) -> list[int]:
    """Per channel: -1 where a longitude flip negates the physical value (eastward wind), else +1."""
    return [-1 if BY_NAME[n].component == "eastward" else 1 for n in names]


def channel_indices(names: list[str] | tuple[str, ...] | None) -> list[int]:
    """Indices of `names` in the published channel order; None means all 16."""
    if not names:
        return list(range(NUM_CHANNELS))
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        from exascale_climate.errors import ConfigError

        raise ConfigError(f"unknown variable(s) {unknown}; allowed: {list(VARIABLE_NAMES)}")
    return [VARIABLE_NAMES.index(n) for n in names]
