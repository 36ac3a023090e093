"""The demo dataset: synthesise -> convert -> split -> stats, the one builder behind `exaclimate data demo`
(and so scripts/demo.sh), the benchmarks, the notebooks and the tests.

Everything lands under a directory the caller names (nothing is kept in a shared temporary directory):
`ROOT/raw/*.nc` (labelled netCDF, as synthesised), `ROOT/data/all/` (every HDF5 sample),
`ROOT/data/{train,valid,test}/` and `ROOT/data/stats.h5` (of the training split).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from exascale_climate.utils.log import get_logger

log = get_logger("data.demo")
DEMO_GRID = (96, 144)  # the test grid of the project; divisible by both networks' down-sampling
DEMO_SAMPLES = 48
DEMO_SEED = 1
SPLITS = ("train", "valid", "test")


@dataclass
class DemoDataset:
    """Where the demo dataset's parts lie under `root`."""

    root: Path
    raw_dir: Path = field(init=False)  # labelled netCDF, as synthesised
    data_dir: Path = field(init=False)  # HDF5: all/, train/, valid/, test/, stats.h5
    train_dir: Path = field(init=False)
    valid_dir: Path = field(init=False)
    test_dir: Path = field(init=False)
    stats_file: Path = field(init=False)

    def __post_init__(self):
        self.root = Path(self.root)
        self.raw_dir, self.data_dir = self.root / "raw", self.root / "data"
        self.train_dir, self.valid_dir, self.test_dir = (self.data_dir / split for split in SPLITS)
        self.stats_file = self.data_dir / "stats.h5"

    def complete(self) -> bool:
        """stats.h5 and samples in train/ and test/ (a finished build, or the demo job's output)."""
        from exascale_climate.data.layouts import list_samples

        return self.stats_file.exists() and all(d.is_dir() and list_samples(d) for d in (self.train_dir, self.test_dir))

    def config_overrides(self) -> list[str]:
        """`--set` items that point a training or evaluation config at this dataset."""
        return [f"data.train_dir={self.train_dir}", f"data.valid_dir={self.valid_dir}",
                f"data.test_dir={self.test_dir}", f"data.stats_file={self.stats_file}"]


def build_demo_dataset(root: str | Path, samples: int = DEMO_SAMPLES, grid: tuple[int, int] = DEMO_GRID,
                       seed: int = DEMO_SEED, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                       workers: int = 1, config_path=None, overrides=(), progress: bool = True) -> DemoDataset:
    """Build the demo dataset under `root` with the library steps of `data synth`, `data convert`, `data split`
    and `data stats`; a complete dataset already there is kept (each step also resumes on its own).
    `config_path`/`overrides` set the synthesiser and labeller (data.synth.*, data.labeller.*)."""
    from exascale_climate.config import load_config
    from exascale_climate.data.convert import convert
    from exascale_climate.data.layouts import list_samples
    from exascale_climate.data.split import split_dataset
    from exascale_climate.data.stats import compute_stats, write_stats
    from exascale_climate.data.synthetic import synthesize

    demo = DemoDataset(Path(root))
    if demo.complete():
        return demo
    cfg = load_config(config_path, [*overrides, f"data.synth.samples={samples}", f"data.synth.grid={grid[0]}x{grid[1]}",
                                    f"data.synth.seed={seed}", f"data.synth.workers={workers}"])
    log.info("building the demo dataset in %s (%d samples, %dx%d, seed %d)", demo.root, samples, *grid, seed)
    synthesize(demo.raw_dir, cfg.data.synth, cfg.data.labeller, progress=progress)
    convert(sorted(demo.raw_dir.glob("*.nc")), demo.data_dir / "all", workers=workers)
    split_dataset(demo.data_dir / "all", demo.data_dir, fractions=fractions)
    write_stats(demo.stats_file, compute_stats(list_samples(demo.train_dir), progress=progress))
    return demo
