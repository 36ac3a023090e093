"""Streaming statistics equal numpy on the concatenated data; stats.h5 round trip; class weights."""
import h5py
import numpy as np
import pytest

from exascale_climate.data.synthetic import weather_like
from exascale_climate.data.writers import write_deepcam_sample
from exascale_climate.data.stats import class_weights, compute_stats, read_stats, write_stats
from exascale_climate.errors import DataError
from exascale_climate.variables import VARIABLE_NAMES


def test_compute_stats_equals_numpy(tmp_path):
    rng = np.random.default_rng(0)
    datas, labels = [], []
    for i in range(3):
        d = weather_like(rng.normal(size=(10, 14, 16)) * np.linspace(0.5, 3, 16))  # plausible: checked on read
        lab = rng.choice(3, size=(10, 14), p=[0.9, 0.03, 0.07]).astype(np.uint8)
        write_deepcam_sample(tmp_path / f"data-{i}.h5", d, lab, list(VARIABLE_NAMES))
        datas.append(d)
        labels.append(lab)
    stats = compute_stats(sorted(tmp_path.glob("data-*.h5")), progress=False)
    flat = np.concatenate([d.reshape(-1, 16) for d in datas]).astype(np.float64)
    np.testing.assert_allclose(stats.mean, flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.sqmean, (flat**2).mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.std, flat.std(0), rtol=1e-6)
    np.testing.assert_array_equal(stats.minval, flat.min(0))
    np.testing.assert_array_equal(stats.maxval, flat.max(0))
    np.testing.assert_array_equal(stats.count, np.full(16, flat.shape[0]))
    np.testing.assert_array_equal(stats.class_counts, np.bincount(np.concatenate(labels).ravel(), minlength=3))

    path = write_stats(tmp_path / "stats.h5", stats)
    back = read_stats(path)
    for name in ("count", "mean", "sqmean", "minval", "maxval", "class_counts"):
        np.testing.assert_array_equal(getattr(back, name), getattr(stats, name))
    assert back.variables == list(VARIABLE_NAMES)
    with h5py.File(path) as f:
        np.testing.assert_allclose(f["climate/class_weights_inverse"][()], class_weights(stats.class_counts, "inverse"))

    sub = back.select(["PSL", "TMQ"])
    np.testing.assert_array_equal(sub.mean, stats.mean[[7, 0]])
    assert sub.variables == ["PSL", "TMQ"]
    with pytest.raises(DataError, match="FOO"):
        back.select(["FOO"])


def test_read_published_deepcam_stats_without_names(tmp_path):
    path = tmp_path / "stats.h5"
    with h5py.File(path, "w") as f:
        for name in ("count", "mean", "sqmean", "minval", "maxval"):
            f[f"climate/{name}"] = np.arange(16, dtype=np.float32) + 1
    s = read_stats(path)
    assert s.variables == list(VARIABLE_NAMES) and s.class_counts.tolist() == [0, 0, 0]
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["climate/mean"] = np.zeros(16)
    with pytest.raises(DataError, match=r"bad.h5 \[climate/count\]"):
        read_stats(tmp_path / "bad.h5")


def test_class_weights_schemes():
    counts = np.array([980, 5, 15])
    freq = counts / counts.sum()
    for scheme, raw in (("inverse", 1 / freq), ("inverse_sqrt", 1 / np.sqrt(freq))):
        w = class_weights(counts, scheme)
        np.testing.assert_allclose((freq * w).sum(), 1.0)
        np.testing.assert_allclose(w / w[0], raw / raw[0])
    np.testing.assert_array_equal(class_weights(counts, "none"), np.ones(3))
    w = class_weights([90, 10, 0], "inverse")
    assert w[2] == w[1] and np.isclose(0.9 * w[0] + 0.1 * w[1], 1.0)
    with pytest.raises(DataError, match="unknown class weighting"):
        class_weights(counts, "bogus")


def test_inverse_power_weights_are_the_mlperf_reference_weights_up_to_a_factor():
    """MLPerf DeepCAM's reference (mlcommons/hpc deepcam train.py) weights the classes by its CAM5 frequencies to
    the power -0.125: the same ratios must come out of `inverse_power` with power 0.125 on those frequencies."""
    freq = np.array([0.986267818390377, 0.0004578708870701058, 0.01327431072255291])
    reference = freq ** -0.125  # [1.0017, 2.6146, 1.7164]
    w = class_weights(freq * 1e9, "inverse_power", power=0.125)
    np.testing.assert_allclose(w / w[0], reference / reference[0], rtol=1e-12)
    np.testing.assert_allclose((freq / freq.sum() * w).sum(), 1.0)
    np.testing.assert_allclose(class_weights(freq * 1e9, "inverse_power", power=0.5),
                               class_weights(freq * 1e9, "inverse_sqrt"))

