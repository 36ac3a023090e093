"""The tf.data input pipeline: sharded, shuffled per epoch, read in parallel, normalised, augmented, weighted.

Element: (x (B,H,W,C) float32|float16, y (B,H,W) int32, w (B,H,W) float32 pixel weights); for the box detector
(model.name semisup) (x, (x, box targets (B,h,w,6), y), labelled (B,) float32) instead (`detector_element`).
Order is always deterministic (file order from a seeded permutation, order-preserving parallel maps, stateless
random augmentation keyed by (seed, epoch, position)), so `skip_batches` resumes a run at the same sample.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from exascale_climate.config import Config
from exascale_climate.data.layouts import STATS_FILE
from exascale_climate.data.split import SPLIT_DIRS, SPLITS, split_dir
from exascale_climate.errors import ConfigError, DataError
from exascale_climate.pipeline.normalize import InPlaceNormalizer, normalization_constants
from exascale_climate.pipeline.readers import READERS, sample_grid
from exascale_climate.pipeline.sharding import epoch_order, samples_per_rank, shard
from exascale_climate.pipeline.staging import MANIFEST_NAME, node_dir
from exascale_climate.utils.log import get_logger
from exascale_climate.utils.runtime import World, init_world
from exascale_climate.variables import VARIABLE_NAMES, longitude_flip_signs

log = get_logger("pipeline")


# -------------------------------------------------------------------------------------------- files
def staged_root(cfg: Config, world: World | None = None) -> Path | None:
    """This node's staged copy: `pipeline.stage_dir` with `{node}` expanded like `exaclimate stage` does, the
    node being the World's (Horovod's grouping, or distributed.ranks_per_node when set)."""
    if not cfg.pipeline.stage_dir:
        return None
    override = cfg.distributed.ranks_per_node
    world = world.with_ranks_per_node(override) if world else init_world(ranks_per_node=override)
    return node_dir(cfg.pipeline.stage_dir, world.data_node)


def _staged_split(root: Path, split: str) -> list[Path] | None:
    """The split's full file list from the staging manifest, this node's copies first.

    With `--replicate needed` a node holds only its ranks' shards, but sharding must see the global list to give
    every rank the same shard that staging put on its node; files of other nodes are listed, never read.
    """
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
        rels = sorted(rel for rel in manifest["source_reads"] if rel.split("/", 1)[0] in SPLIT_DIRS[split])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    paths = [root / rel for rel in rels]
    return [p for p in paths if p.is_file()] + [p for p in paths if not p.is_file()]


def split_files(cfg: Config, split: str, world: World | None = None) -> list[Path]:
    """Samples of a split: from this node's staged copy `<pipeline.stage_dir>/<split>` (valid/ or the MLPerf
    tree's validation/) when present (the manifest's global list, local copies first), else the source
    directory."""
    from exascale_climate.data.layouts import list_samples

    if split not in SPLITS:
        raise ConfigError(f"split {split!r}: choose one of {SPLITS}")
    root = staged_root(cfg, world)
    staged = split_dir(root, split) if root is not None else None
    if staged is not None:
        listed = _staged_split(root, split)
        if listed:
            return listed
        directory = staged
    else:
        directory = getattr(cfg.data, f"{split}_dir")
        if not directory:
            raise ConfigError(f"data.{split}_dir: not set, and no staged copy at pipeline.stage_dir/{split}")
    files = list_samples(directory)
    if not files:
        raise DataError(directory, f"no data-*.h5 samples in the {split} directory")
    if split == "train" and cfg.data.unlabelled_dir:
        extra = list_samples(cfg.data.unlabelled_dir)
        if not extra:
            raise DataError(cfg.data.unlabelled_dir, "no data-*.h5 samples in data.unlabelled_dir")
        files = files + extra
    return files


# --------------------------------------------------------------------------------- semi-supervised
def labelled_files(cfg: Config, files: list[Path]) -> set[str]:
    """The training files whose labels the detector's loss may use: a seeded choice of
    round(data.labelled_fraction * N) of the files outside data.unlabelled_dir (at least one when > 0).
    Computed from the global sorted list, so every rank agrees. A flag belongs to a slot: when a bad file is
    replaced by the next readable one of the shard, the replacement inherits the slot's flag."""
    import numpy as np

    unlabelled_root = Path(cfg.data.unlabelled_dir).resolve() if cfg.data.unlabelled_dir else None
    candidates = sorted(str(p) for p in files
                        if unlabelled_root is None or unlabelled_root not in Path(p).resolve().parents)
    fraction = cfg.data.labelled_fraction
    count = 0 if fraction <= 0 else max(1, int(round(fraction * len(candidates))))
    order = np.random.default_rng(cfg.train.seed + 7919).permutation(len(candidates))
    return {candidates[i] for i in order[:count]}


def detector_cell(cfg: Config) -> int:
    """Pixels per side of one cell of the detector's box grid (its encoder's total stride)."""
    return 2 ** len(cfg.model.semisup.encoder_filters)


def detector_element(x, y, labelled, cell: int, periodic: bool):
    """(x, (x, box targets, y), labelled): box targets from the (augmented) labels, so crops and rolls move the
    boxes with the fields (data/boxes.py; longitude wraps when the sample still spans the globe)."""
    import tensorflow as tf

    from exascale_climate.data.boxes import boxes_from_mask, encode_targets

    height, width = int(y.shape[0]), int(y.shape[1])

    def targets(mask):
        return encode_targets(boxes_from_mask(mask, periodic), (height, width), cell)

    t = tf.numpy_function(targets, [y], tf.float32, stateful=False)
    t = tf.ensure_shape(t, (height // cell, width // cell, 6))
    return x, (x, t, y), labelled


def stats_path(cfg: Config, world: World | None = None) -> Path:
    """stats.h5: the staged copy, else data.stats_file, else beside the train directory."""
    root = staged_root(cfg, world)
    if root is not None and (root / STATS_FILE).is_file():
        return root / STATS_FILE
    if cfg.data.stats_file:
        return Path(cfg.data.stats_file)
    return Path(cfg.data.train_dir).parent / STATS_FILE


def load_stats(cfg: Config, world: World | None = None):
    """Statistics of the configured channels (data.channels, or all 16)."""
    from exascale_climate.data.stats import read_stats

    return read_stats(stats_path(cfg, world)).select(list(cfg.data.channels) or None)


def channels_of(cfg: Config) -> list[str]:
    return list(cfg.data.channels) or list(VARIABLE_NAMES)


# ------------------------------------------------------------------------------------- augmentation
def longitude_flip_affine(channels, offset, scale) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) per channel so that a normalised value of the mirrored field is a * x + b.

    A longitude mirror negates the eastward wind (`variables.longitude_flip_signs`). The pipeline flips after
    normalising (the reader normalises in place), so the physical value is negated, not the normalised one:
    x = (u - offset) * scale  ->  (-u - offset) * scale = -x - 2 * offset * scale.
    """
    sign = np.asarray(longitude_flip_signs(channels), np.float32)
    return sign, ((sign - 1.0) * np.asarray(offset, np.float32) * np.asarray(scale, np.float32)).astype(np.float32)


def augment(x, y, seed, crop: tuple[int, int] | None, flip: bool, roll: bool, flip_affine=None):
    """Longitude roll, longitude flip and random crop, applied to data and labels together.

    Data and labels are stacked into one tensor before every transform, so they cannot drift apart. A flip
    also maps each channel through `flip_affine` (see `longitude_flip_affine`): the zonal winds change sign.
    """
    import tensorflow as tf

    channels = x.shape[-1]
    both = tf.concat([x, tf.cast(y, x.dtype)[..., None]], axis=-1)
    seeds = tf.random.experimental.stateless_split(seed, 3)
    if roll:  # first, while the grid still spans the full (periodic) longitude circle
        width = tf.shape(both)[1]
        shift = tf.random.stateless_uniform((), seeds[2], minval=0, maxval=width, dtype=tf.int32)
        both = tf.roll(both, shift=shift, axis=1)
    if flip:  # the same coin as tf.image.stateless_random_flip_left_right, kept to map the winds too
        mirrored = tf.random.stateless_uniform((), seeds[1]) < 0.5
        both = tf.cond(mirrored, lambda: tf.reverse(both, axis=[1]), lambda: both)
    if crop:
        both = tf.image.stateless_random_crop(both, (crop[0], crop[1], channels + 1), seed=seeds[0])
    x_out = both[..., :channels]
    if flip and flip_affine is not None:
        a, b = (tf.constant(v, x_out.dtype) for v in flip_affine)
        x_out = tf.where(mirrored, x_out * a + b, x_out)
    return x_out, tf.cast(tf.round(both[..., channels]), y.dtype)


def pixel_weights(y, class_weights):
    """Each pixel's class weight: one `tf.where` per class instead of `tf.gather(class_weights, y)`, which
    looks pixels up one by one (3.0 ms against 0.7 ms per 768x1152 label map here)."""
    import tensorflow as tf

    weights = tf.fill(tf.shape(y), class_weights[0])
    for k in range(1, int(class_weights.shape[0])):
        weights = tf.where(tf.equal(y, k), class_weights[k], weights)
    return weights


# ------------------------------------------------------------------------------------------ dataset
def steps_per_epoch(cfg: Config, n_files: int, world: World | None = None) -> int:
    """Training steps per epoch, the same on every rank (the smallest shard decides)."""
    size = world.data_size if world else 1
    steps = samples_per_rank(n_files, size) // cfg.train.batch_size
    if steps < 1:
        raise ConfigError(f"train.batch_size: {cfg.train.batch_size} per rank x {size} ranks needs at least "
                          f"{cfg.train.batch_size * size} training files, found {n_files}")
    return steps


def _epoch_seed(cfg: Config, epoch: int, rank: int):
    import tensorflow as tf

    return tf.constant([cfg.train.seed * 1_000_003 + epoch, rank], tf.int64)


def build_dataset(cfg: Config, files: list[Path], stats, *, training: bool, world: World | None = None,
                  epoch: int = 0, skip_batches: int = 0, tally: dict | None = None):
    """One epoch of (x, y, w) batches for this rank (see the module docstring). `tally` (readers.new_tally())
    counts the slots read and the repeats standing in for unreadable files (see `epoch_summary`)."""
    import tensorflow as tf

    from exascale_climate.data.stats import class_weights

    pcfg = cfg.pipeline
    # training data is sharded over every compute rank (all hybrid groups); validation over this rank's group
    rank, size = ((world.data_rank, world.data_size) if training else (world.rank, world.size)) if world else (0, 1)
    batch = cfg.train.batch_size
    channels = list(stats.variables)
    if not files:
        raise DataError("<pipeline>", "no sample files to read")
    mine = shard(sorted(files), rank, size)
    if training:
        steps = steps_per_epoch(cfg, len(files), world)
        mine = epoch_order(mine, cfg.train.seed, epoch, rank, shuffle=pcfg.shuffle)
        remaining = steps - skip_batches
        if remaining < 0:
            raise ConfigError(f"skip_batches {skip_batches} is beyond the epoch's {steps} steps")
        # The shard is the reserve: a bad file is replaced by the next readable one of the shard, so every
        # rank still runs `steps` steps (Horovod needs the same count everywhere); the tally counts the repeats.
        ordered, reserve = mine[skip_batches * batch:steps * batch], mine
    else:
        ordered, remaining, reserve = mine, None, []
    if not ordered:
        return _empty_dataset(cfg, files, stats)
    grid = _grid_of([*ordered, *reserve])
    offset, scale = normalization_constants(pcfg.normalization, stats)
    normalizer = None if pcfg.normalization == "none" else InPlaceNormalizer(offset, scale)
    flip_map = longitude_flip_affine(channels, offset, scale)
    ds = READERS[pcfg.reader_mode](ordered, channels, grid, pcfg.readers, pcfg.strict, reserve, normalizer, tally)

    weights = tf.constant(class_weights(stats.class_counts, pcfg.class_weighting, pcfg.class_weight_power),
                          tf.float32)
    out_dtype = tf.float16 if cfg.train.precision == "mixed_float16" else tf.float32
    crop = tuple(pcfg.crop) if (training and pcfg.crop) else None
    augmenting = training and (crop or pcfg.random_flip or pcfg.random_roll)
    seed = _epoch_seed(cfg, epoch, rank)

    detector = cfg.model.name == "semisup"
    if detector:  # index i of the enumeration below is the slot of mine[i]
        chosen = labelled_files(cfg, files) if training else {str(p) for p in mine}
        flags = tf.constant([1.0 if str(p) in chosen else 0.0 for p in mine], tf.float32)

    def prepare(index, x, y):
        if augmenting:
            x, y = augment(x, y, tf.stack([seed[0], seed[1] * 1_000_003 + index]), crop, pcfg.random_flip,
                           pcfg.random_roll, flip_map)
        y = tf.cast(y, tf.int32)
        if detector:
            return detector_element(tf.cast(x, out_dtype), y, flags[index], detector_cell(cfg), periodic=not crop)
        return tf.cast(x, out_dtype), y, pixel_weights(y, weights)

    ds = ds.enumerate(start=skip_batches * batch if training else 0)
    ds = ds.map(lambda i, xy: prepare(i, *xy), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if batch == 1:  # a view instead of batch's copy of every sample
        ds = ds.map(lambda x, y, w: tf.nest.map_structure(lambda t: tf.expand_dims(t, 0), (x, y, w)))
    else:
        ds = ds.batch(batch, drop_remainder=training, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if training:
        ds = ds.take(remaining)
    ds = ds.prefetch(tf.data.AUTOTUNE if pcfg.prefetch < 0 else pcfg.prefetch)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)


def epoch_summary(tally: dict, epoch: int, rank: int) -> str | None:
    """The log line of an epoch whose reads failed: how many samples it really had (distinct ones), or None."""
    if not tally["repeats"] and not tally["empty"]:
        return None
    distinct = tally["slots"] - tally["repeats"]
    return (f"epoch {epoch} on rank {rank}: {tally['slots']} samples read, {distinct} distinct: "
            f"{tally['repeats']} unreadable file(s) replaced by a repeat of another sample of the shard"
            + (f", {tally['empty']} slot(s) left empty" if tally["empty"] else ""))


def _grid_of(files) -> tuple[int, int]:
    """The grid of the first readable file (a bad first file must not stop the epoch)."""
    for path in files:
        try:
            return sample_grid(path)
        except DataError as e:
            log.warning("cannot read the grid of %s: %s", path, e)
    raise DataError(files[0] if files else "<pipeline>", "none of the files is readable")


def _empty_dataset(cfg: Config, files, stats):
    """A rank without evaluation files (more ranks than files) still gets a dataset with the right element."""
    import tensorflow as tf

    h, w = _grid_of(sorted(files))
    c = len(stats.variables)
    dtype = tf.float16 if cfg.train.precision == "mixed_float16" else tf.float32
    if cfg.model.name == "semisup":
        cell = detector_cell(cfg)
        x = tf.zeros((0, h, w, c), dtype)
        return tf.data.Dataset.from_tensor_slices(
            (x, (x, tf.zeros((0, h // cell, w // cell, 6)), tf.zeros((0, h, w), tf.int32)), tf.zeros((0,)))
        ).batch(cfg.train.batch_size)
    return tf.data.Dataset.from_tensor_slices((tf.zeros((0, h, w, c), dtype), tf.zeros((0, h, w), tf.int32),
                                               tf.zeros((0, h, w), tf.float32))).batch(cfg.train.batch_size)
