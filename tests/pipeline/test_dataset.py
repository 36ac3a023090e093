"""The tf.data pipeline on small real HDF5 files: sharding, determinism, normalisation, augmentation, weights,
bad files, resume position, and thread vs process readers giving the same batches."""
from pathlib import Path

import numpy as np
import pytest

from exascale_climate.config import load_config
from exascale_climate.data.samples import read_sample
from exascale_climate.data.writers import write_deepcam_sample
from exascale_climate.data.synthetic import weather_like
from exascale_climate.data.stats import class_weights
from exascale_climate.errors import ConfigError
from exascale_climate.pipeline.dataset import build_dataset, load_stats, split_files, steps_per_epoch
from exascale_climate.pipeline.readers import failed_files, reset_failed_files
from exascale_climate.utils.runtime import World


def make_cfg(root: Path, *overrides):
    return load_config(None, [f"data.train_dir={root}/train", f"data.valid_dir={root}/valid",
                              f"data.test_dir={root}/test", "train.batch_size=1", "train.seed=5",
                              "pipeline.normalization=none", *overrides])


def collect(cfg, split="train", training=True, **kwargs):
    files = split_files(cfg, split)
    ds = build_dataset(cfg, files, load_stats(cfg), training=training, **kwargs)
    return [tuple(t.numpy() for t in batch) for batch in ds]


def file_ids(batches):
    return [int(x[b, 0, 0, 0]) for x, _, _ in batches for b in range(x.shape[0])]


def test_rank_shards_are_disjoint_and_cover_the_training_files(dataset):
    cfg = make_cfg(dataset)
    seen = [file_ids(collect(cfg, world=World(rank=r, size=2))) for r in range(2)]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(6))
    assert steps_per_epoch(cfg, 6, World(rank=0, size=2)) == 3


def test_same_seed_and_epoch_give_identical_batches_and_epochs_differ(dataset):
    cfg = make_cfg(dataset, "pipeline.random_flip=true", "pipeline.random_roll=true")
    a, b = collect(cfg, epoch=0), collect(cfg, epoch=0)
    for (xa, ya, wa), (xb, yb, wb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert file_ids(collect(cfg, epoch=1)) != file_ids(a)
    assert sorted(file_ids(collect(cfg, epoch=1))) == sorted(file_ids(a))


def test_skip_batches_resumes_at_the_same_position(dataset):
    cfg = make_cfg(dataset, "pipeline.random_flip=true", "train.batch_size=2")
    full = collect(cfg, epoch=1)
    resumed = collect(cfg, epoch=1, skip_batches=1)
    assert len(full) == 3 and len(resumed) == 2
    for (xf, yf, _), (xr, yr, _) in zip(full[1:], resumed):
        np.testing.assert_array_equal(xf, xr)
        np.testing.assert_array_equal(yf, yr)


@pytest.mark.parametrize("kind", ["zscore", "minmax"])
def test_normalisation_equals_numpy(dataset, kind):
    cfg = make_cfg(dataset, f"pipeline.normalization={kind}")
    files = sorted((dataset / "train").glob("data-*.h5"))
    stacked = np.stack([read_sample(f).data.astype(np.float64) for f in files])
    if kind == "zscore":
        offset, spread = stacked.mean(axis=(0, 1, 2)), stacked.std(axis=(0, 1, 2))
    else:
        offset, spread = stacked.min(axis=(0, 1, 2)), stacked.max(axis=(0, 1, 2)) - stacked.min(axis=(0, 1, 2))
    for x, _, _ in collect(cfg, training=False):
        index = int(round(x[0, 0, 0, 0] * spread[0] + offset[0]))
        expected = (stacked[index] - offset) / spread
        np.testing.assert_allclose(x[0], expected, rtol=1e-4, atol=1e-4)


def test_augmentation_moves_data_and_labels_together(dataset):
    # Channel 2 becomes a copy of the labels: after crop, flip and roll it must still equal them.
    for path in sorted((dataset / "train").glob("data-*.h5")):
        s = read_sample(path)
        s.data[..., 2] = s.labels
        write_deepcam_sample(path, s.data, s.labels, s.variables)
    cfg = make_cfg(dataset, "pipeline.crop=[8, 12]", "pipeline.random_flip=true", "pipeline.random_roll=true")
    width = 24
    starts = set()
    for x, y, _ in collect(cfg):
        assert x.shape == (1, 8, 12, 16) and y.shape == (1, 8, 12)
        np.testing.assert_array_equal(x[0, ..., 2], y[0])
        # longitude index (in U850, which a flip negates): contiguous modulo the width, either direction
        columns = np.abs(x[0, 0, :, 1]).astype(int)
        steps = {int(d) for d in np.diff(columns) % width}
        assert steps in ({1}, {width - 1})
        starts.add(int(columns[0]))
    assert len(starts) > 1  # the augmentation did move the windows


@pytest.mark.parametrize("scheme, power, exponent", [("inverse", 0.125, 1.0), ("inverse_power", 0.125, 0.125)])
def test_weights_labels_and_mixed_precision_types(dataset, scheme, power, exponent):
    cfg = make_cfg(dataset, "train.precision=mixed_float16", f"pipeline.class_weighting={scheme}",
                   f"pipeline.class_weight_power={power}")
    counts = load_stats(cfg).class_counts
    freq = counts / counts.sum()
    expected_weights = freq ** -exponent / (freq * freq ** -exponent).sum()  # by hand, not class_weights
    np.testing.assert_allclose(expected_weights, class_weights(counts, scheme, power))
    for x, y, w in collect(cfg):
        assert x.dtype == np.float16 and y.dtype == np.int32 and w.dtype == np.float32
        np.testing.assert_allclose(w, expected_weights[y], rtol=1e-6)


def test_a_bad_file_is_skipped_and_counted_unless_strict(dataset):
    bad = dataset / "train" / "data-0002.h5"
    bad.write_bytes(b"not an hdf5 file at all" * 10)
    reset_failed_files()
    cfg = make_cfg(dataset)
    batches = collect(cfg)
    assert len(batches) == steps_per_epoch(cfg, 6, None)
    assert 2 not in file_ids(batches)
    assert list(failed_files()) == [str(bad)]
    with pytest.raises(Exception, match="data-0002.h5"):
        collect(make_cfg(dataset, "pipeline.strict=true"))


def test_process_readers_give_the_same_batches_as_thread_readers(dataset):
    threads = collect(make_cfg(dataset, "pipeline.reader_mode=thread", "pipeline.readers=2"))
    processes = collect(make_cfg(dataset, "pipeline.reader_mode=process", "pipeline.readers=2"))
    assert len(threads) == len(processes)
    for (xt, yt, _), (xp, yp, _) in zip(threads, processes):
        np.testing.assert_array_equal(xt, xp)
        np.testing.assert_array_equal(yt, yp)


def test_split_files_prefers_the_staged_copy(dataset, tmp_path):
    staged = tmp_path / "stage"
    (staged / "valid").mkdir(parents=True)
    copy = staged / "valid" / "data-0006.h5"
    copy.write_bytes((dataset / "valid" / "data-0006.h5").read_bytes())
    cfg = make_cfg(dataset, f"pipeline.stage_dir={staged}")
    assert split_files(cfg, "valid") == [copy]
    assert len(split_files(cfg, "train")) == 6  # not staged: read from the source


def test_too_few_files_for_the_batch_is_a_config_error(dataset):
    with pytest.raises(ConfigError, match="train.batch_size"):
        steps_per_epoch(make_cfg(dataset, "train.batch_size=4"), 6, World(rank=0, size=2))


def test_evaluation_is_sharded_without_dropping_files_and_spare_ranks_get_nothing(dataset):
    cfg = make_cfg(dataset, "train.batch_size=2")
    per_rank = [file_ids(collect(cfg, "valid", training=False, world=World(rank=r, size=3))) for r in range(3)]
    assert per_rank == [[6], [7], []]


def test_batches_held_across_an_epoch_keep_their_own_samples(dataset):
    """Reader buffers are pooled and adopted by TensorFlow without a copy: a batch still held (not converted to
    numpy) must never be overwritten by a later read."""
    cfg = make_cfg(dataset, "pipeline.readers=2", "pipeline.prefetch=1")
    files = split_files(cfg, "train")
    held = list(build_dataset(cfg, files, load_stats(cfg), training=False))
    assert len(held) == len(files)
    for (x, y, _), path in zip(held, sorted(files)):
        sample = read_sample(path)
        np.testing.assert_array_equal(x.numpy()[0], sample.data)
        np.testing.assert_array_equal(y.numpy()[0], sample.labels)


def test_pixel_weights_equal_a_lookup_of_the_class_weights():
    import tensorflow as tf

    from exascale_climate.pipeline.dataset import pixel_weights

    table = np.array([0.2, 1.5, 3.0, 7.0], np.float32)
    labels = np.random.default_rng(0).integers(0, 4, size=(9, 13)).astype(np.int32)
    np.testing.assert_array_equal(pixel_weights(tf.constant(labels), tf.constant(table)).numpy(), table[labels])


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_a_file_failing_mid_epoch_is_counted_and_the_epoch_says_how_many_samples_it_really_had(dataset, mode):
    """The repeat that keeps the step count equal across ranks is counted: the summary's distinct-sample count
    equals the distinct file ids found in the batches themselves (channel 0 holds each file's index)."""
    from exascale_climate.pipeline.dataset import epoch_summary
    from exascale_climate.pipeline.readers import new_tally

    cfg = make_cfg(dataset, f"pipeline.reader_mode={mode}", "pipeline.readers=2", "pipeline.shuffle=false")
    files = split_files(cfg, "train")
    tally = new_tally()
    ds = build_dataset(cfg, files, load_stats(cfg), training=True, tally=tally)
    (dataset / "train" / "data-0003.h5").write_bytes(b"\x89HDF\r\n\x1a\n truncated")  # fails once reading starts
    ids = file_ids([tuple(t.numpy() for t in batch) for batch in ds])
    assert len(ids) == 6 and 3 not in ids and len(set(ids)) == 5  # one slot holds a repeat
    assert tally == {"slots": 6, "repeats": 1, "empty": 0}
    assert epoch_summary(tally, 0, 0) == ("epoch 0 on rank 0: 6 samples read, 5 distinct: 1 unreadable file(s) "
                                          "replaced by a repeat of another sample of the shard")
    assert epoch_summary(new_tally(), 0, 0) is None


@pytest.mark.parametrize("kind", ["zscore", "minmax", "none"])
def test_longitude_flip_negates_the_zonal_winds_only_on_reordered_normalised_channels(tmp_path, kind):
    """A mirrored cyclone's winds must be the mirror image: u -> -u at the mirrored point, v and scalars keep
    their sign. Checked against a hand computation from the raw files (h5py) and hand-computed statistics,
    with channels a reordered subset and winds of non-zero mean (negating the normalised value would be wrong)."""
    import h5py

    from exascale_climate.data.stats import compute_stats, write_stats
    from exascale_climate.variables import VARIABLE_NAMES

    h, w = 8, 12
    rng = np.random.default_rng(3)
    root = tmp_path / "src"
    for index in range(8):
        data = weather_like(rng.normal(0.0, 1.0, (h, w, len(VARIABLE_NAMES))))  # plausible: checked on read
        data[..., VARIABLE_NAMES.index("TMQ")] = 20.0 * index + np.arange(w)[None, :]  # file id + longitude
        for name, mean in (("U850", 6.0), ("UBOT", -3.0), ("V850", 2.0), ("VBOT", -1.5)):
            data[..., VARIABLE_NAMES.index(name)] += mean + 2.0 * np.arange(w)[None, :] / w
        write_deepcam_sample(root / "train" / f"data-{index:04d}.h5", data, rng.integers(0, 3, (h, w)),
                             list(VARIABLE_NAMES))
    write_stats(root / "stats.h5", compute_stats(sorted((root / "train").glob("data-*.h5")), progress=False))

    channels = ["UBOT", "TMQ", "VBOT", "U850", "V850"]
    cfg = make_cfg(root, f"data.channels={channels}", f"pipeline.normalization={kind}",
                   "pipeline.random_flip=true")
    cols = [VARIABLE_NAMES.index(c) for c in channels]
    raw = {}
    for path in sorted((root / "train").glob("data-*.h5")):
        with h5py.File(path, "r") as f:
            raw[path.name] = f["climate/data"][()][..., cols].astype(np.float64)
    stacked = np.stack(list(raw.values()))
    if kind == "zscore":
        offset, spread = stacked.mean(axis=(0, 1, 2)), stacked.std(axis=(0, 1, 2))
    elif kind == "minmax":
        offset, spread = stacked.min(axis=(0, 1, 2)), np.ptp(stacked, axis=(0, 1, 2))
    else:
        offset, spread = np.zeros(len(channels)), np.ones(len(channels))
    sign = np.array([-1.0, 1.0, 1.0, -1.0, 1.0])  # UBOT and U850 only

    orientations = []
    for x, _, _ in collect(cfg):
        tmq = x[0, 0, :, 1] / (1.0 / spread[1]) + offset[1]
        index = int(round(tmq.min() / 20.0))
        field = raw[f"data-{index:04d}.h5"]
        mirrored = bool(tmq[0] > tmq[-1])
        orientations.append(mirrored)
        expected = (sign * field[:, ::-1] - offset) / spread if mirrored else (field - offset) / spread
        np.testing.assert_allclose(x[0], expected, rtol=1e-4, atol=1e-4)
        if mirrored and kind != "none":  # the naive flip (negate the normalised value) differs
            naive = -(field[:, ::-1, 0] - offset[0]) / spread[0]
            assert np.abs(naive - x[0, ..., 0]).max() > 0.1
    assert set(orientations) == {True, False}
