"""Former home of the sample formats, kept only so that code written before the split still imports.

The code now lives in one module per part: `layouts` (which layout a file has, where each layout keeps its
arrays, `Sample`, listing), `validate` (checks), `rawread` (the raw-offset read and its known files), `samples`
(`read_sample`, `read_labels`), `writers` (the three writers, relabelling). Import from those; this module
holds no code and goes once nothing imports it.
"""
from exascale_climate.data.layouts import (  # noqa: F401
    SAMPLE_GLOB,
    STATS_FILE,
    Layout,
    Sample,
    detect_layout,
    list_samples,
    netcdf_time_steps,
    open_hdf5,
    open_netcdf,
    stored_variables,
)
from exascale_climate.data.samples import read_labels, read_sample  # noqa: F401
from exascale_climate.data.validate import check_labels  # noqa: F401
from exascale_climate.data.writers import (  # noqa: F401
    write_deepcam_sample,
    write_gordonbell_sample,
    write_netcdf_sample,
)
