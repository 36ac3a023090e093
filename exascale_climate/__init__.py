"""exascale_climate: extreme-weather segmentation of CAM5 climate fields at scale (Kurth et al., SC18)."""

__version__ = "0.1.0"
