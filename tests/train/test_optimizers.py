"""LARC/LARS against a numpy reference, and the learning-rate schedules against their closed forms."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from exascale_climate.config import LarcConfig, OptimizerConfig, ScheduleConfig
from exascale_climate.train.optimizers import Larc, WarmupSchedule, build_optimizer, scaled_learning_rate


def numpy_larc_factor(w, g, lr, eta, mode, eps):
    wn, gn = np.linalg.norm(w), np.linalg.norm(g)
    if wn == 0 or gn == 0:
        return 1.0
    ratio = eta * wn / (gn + eps)
    return min(ratio, lr) / lr if mode == "clip" else ratio


def make_vars(rng):
    """A kernel with a small gradient (LARC inactive in clip mode), one with a large one, a bias, a zero kernel."""
    shapes = [(3, 3, 2, 4), (5, 6), (4,), (2, 3)]
    weights = [rng.normal(size=s).astype(np.float32) for s in shapes]
    weights[3][:] = 0.0
    grads = [rng.normal(size=s).astype(np.float32) * scale for s, scale in zip(shapes, [1e-4, 10.0, 1.0, 1.0])]
    return weights, grads


@pytest.mark.parametrize("mode", ["clip", "scale"])
@pytest.mark.parametrize("exclude", [True, False])
def test_larc_sgd_step_matches_numpy(mode, exclude):
    rng = np.random.default_rng(0)
    weights, grads = make_vars(rng)
    lr, eta, eps = 0.1, 0.002, 1e-8
    variables = [keras.Variable(w) for w in weights]
    larc = Larc(keras.optimizers.SGD(lr), LarcConfig(enabled=True, eta=eta, mode=mode, epsilon=eps,
                                                     exclude_bias_and_norm=exclude))
    larc.build(variables)
    larc.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in grads], variables))
    factors = []
    for v, w, g in zip(variables, weights, grads):
        skip = exclude and w.ndim <= 1
        factor = 1.0 if skip else numpy_larc_factor(w, g, lr, eta, mode, eps)
        factors.append(factor)
        np.testing.assert_allclose(v.numpy(), w - lr * factor * g, rtol=1e-5, atol=1e-7)
    # The cases really differ: clip leaves the small-gradient kernel alone and shrinks the large one.
    if mode == "clip":
        assert factors[0] == 1.0 and factors[1] < 0.01
    assert factors[3] == 1.0  # zero weights: no trust ratio


def test_larc_wraps_momentum_two_steps_like_numpy():
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=(4, 5)).astype(np.float32)
    g_steps = [rng.normal(size=(4, 5)).astype(np.float32) * 5 for _ in range(2)]
    lr, mom, eta = 0.05, 0.9, 0.01
    var = keras.Variable(w0)
    larc = Larc(keras.optimizers.SGD(lr, momentum=mom), LarcConfig(enabled=True, eta=eta, mode="clip"))
    larc.build([var])
    w, velocity = w0.astype(np.float64), np.zeros_like(w0, np.float64)
    for g in g_steps:
        scaled = g * numpy_larc_factor(w, g, lr, eta, "clip", 1e-8)
        larc.apply_gradients([(keras.ops.convert_to_tensor(g), var)])
        velocity = mom * velocity - lr * scaled  # Keras SGD momentum convention
        w = w + velocity
    np.testing.assert_allclose(var.numpy(), w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["adam", "rmsprop", "sgd"])
def test_build_optimizer_types_and_larc(name):
    cfg = OptimizerConfig(name=name, larc=LarcConfig(enabled=True))
    opt = build_optimizer(cfg, world_size=4)
    assert isinstance(opt, Larc)
    expected = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop, "sgd": keras.optimizers.SGD}
    assert isinstance(opt.base, expected[name])
    assert not isinstance(build_optimizer(OptimizerConfig(name=name)), Larc)


def test_learning_rate_scales_with_world_and_accumulation():
    cfg = OptimizerConfig(learning_rate=0.01)
    assert scaled_learning_rate(cfg, 8, 2) == pytest.approx(0.16)
    cfg.scale_lr_by_world_size = False
    assert scaled_learning_rate(cfg, 8, 2) == 0.01


@pytest.mark.parametrize("name", ["constant", "polynomial", "cosine", "multistep"])
def test_schedules_match_closed_forms(name):
    cfg = ScheduleConfig(name=name, warmup_steps=10, decay_steps=100, power=2.0, end_factor=0.1,
                         milestones=[50, 80], gamma=0.5)
    sched = WarmupSchedule(1.0, cfg)

    def expected(step):
        if step < 10:
            return (step + 1) / 10
        t = min(max(step - 10, 0), 100) / 100
        if name == "polynomial":
            return 0.1 + 0.9 * (1 - t) ** 2
        if name == "cosine":
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))
        if name == "multistep":
            return 0.5 ** sum(step >= m for m in (50, 80))
        return 1.0

    for step in (0, 5, 9, 10, 30, 49, 50, 79, 80, 110, 500):
        assert float(sched(step)) == pytest.approx(expected(step), rel=1e-5), step
