"""models/layers.py: DilatedConv2D equals Keras' own dilated Conv2D and FusedBatchNorm Keras' BatchNormalization
(outputs, gradients, moving statistics), on their own and in a DeepLabv3+ whose ASPP rates exceed the encoder map;
under mixed_bfloat16 the convolutions' bias gradients are float32 sums."""
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from exascale_climate.models import build_model
from exascale_climate.models.layers import DilatedConv2D, FusedBatchNorm, live_taps
from tiny_models import tiny_deeplab, toy_batch


def test_live_taps_by_hand():
    # The paper's ASPP at 96x144: a 12x18 encoder map.
    assert list(live_taps(12, 3, 12)) == [1] and list(live_taps(18, 3, 12)) == [0, 1, 2]
    assert list(live_taps(12, 3, 24)) == [1] and list(live_taps(18, 3, 24)) == [1]
    assert list(live_taps(18, 3, 17)) == [0, 1, 2] and list(live_taps(18, 3, 18)) == [1]
    # At 384x576 (48x72 map) every tap of rate 36 is live; a 5-tap kernel keeps its inner 3 at rate 5 on 8 px.
    assert list(live_taps(48, 3, 36)) == [0, 1, 2] and list(live_taps(8, 5, 5)) == [1, 2, 3]


def _pair(filters, kernel, rate, use_bias, dtype="float32"):
    fast = DilatedConv2D(filters, kernel, dilation_rate=rate, padding="same", use_bias=use_bias, dtype=dtype)
    ref = layers.Conv2D(filters, kernel, dilation_rate=rate, padding="same", use_bias=use_bias, dtype=dtype)
    return fast, ref


def _value_and_grads(layer, x, dy):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * dy)
    return [y, *tape.gradient(loss, [x, *[v.value for v in layer.trainable_variables]])]


@pytest.mark.parametrize("grid,kernel,rate", [((12, 18), 3, 36), ((12, 18), 3, 24), ((12, 18), 3, 12),
                                              ((12, 18), 3, 4), ((6, 9), 3, (2, 7)), ((7, 11), 5, 3)])
@pytest.mark.parametrize("use_bias", [False, True])
def test_dilated_conv_equals_keras_conv(grid, kernel, rate, use_bias):
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(2, *grid, 5)), tf.float32)
    fast, ref = _pair(4, kernel, rate, use_bias)
    ref.build(x.shape)
    fast.build(x.shape)
    fast.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in ref.get_weights()])
    ref.set_weights(fast.get_weights())
    dy = tf.constant(rng.normal(size=(2, *grid, 4)), tf.float32)
    got, want = _value_and_grads(fast, x, dy), _value_and_grads(ref, x, dy)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5)
    # The skipped taps: zero data gradient in Keras' convolution too (they only ever read padding).
    assert fast.kernel.shape == ref.kernel.shape


@pytest.mark.parametrize("dtype", ["float32", "mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("shape", [(2, 6, 9, 16), (1, 12, 18, 8), (1, 1, 1, 4)])
def test_fused_batch_norm_equals_keras_batch_norm(shape, dtype):
    """Training mode: output, input/gamma/beta gradients and moving statistics after 2 calls; inference
    afterwards. (1, 1, 1, C): one value per channel, variance 0 (biased) where the unbiased one is undefined."""
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(3.0, 2.0, size=shape), tf.float32)
    dy = tf.constant(rng.normal(size=shape), tf.float32)
    fast = FusedBatchNorm(momentum=0.9, dtype=dtype)
    ref = layers.BatchNormalization(momentum=0.9, dtype=dtype)
    fast.build(x.shape)
    ref.build(x.shape)
    weights = [rng.normal(1.0, 0.3, size=w.shape).astype(np.float32) for w in ref.get_weights()]
    weights[3] = np.abs(weights[3])  # a variance
    fast.set_weights(weights)
    ref.set_weights(weights)
    # float16 / bfloat16 outputs: a few units in the last place (2^-10 / 2^-7 relative) apart at most
    tol = {"float32": 1e-5, "mixed_float16": 5e-3, "mixed_bfloat16": 1.6e-2}[dtype]

    def train(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * dy)
        return [y, *tape.gradient(loss, [x, *[v.value for v in layer.trainable_variables]])]

    for _ in range(2):
        for g, w in zip(train(fast), train(ref)):
            np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32), rtol=tol, atol=tol)
    for v, r in zip(fast.non_trainable_variables, ref.non_trainable_variables):
        np.testing.assert_allclose(np.asarray(v), np.asarray(r), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(fast(x, training=False), np.float32),
                               np.asarray(ref(x, training=False), np.float32), rtol=tol, atol=tol)


def _ops(model, x, kind):
    graph = tf.function(lambda t: model(t, training=True)).get_concrete_function(x).graph
    return sum(op.type == kind for op in graph.get_operations())


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
def test_deeplab_with_rates_beyond_the_map_equals_the_unoptimised_network(monkeypatch, precision):
    """32x48 grid, output stride 8: a 4x6 ASPP map. Rate 6 is a 1x1 convolution there, rate 4 a 1x3, rate 3
    keeps all taps; outputs, loss and every gradient match Keras' Conv2D with the same weights."""
    cfg = tiny_deeplab(aspp_rates=[3, 4, 6])
    cfg.weight_decay = 1e-3
    x, y = toy_batch(batch=1)
    x = tf.constant(x)

    def run(model):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
            loss += tf.add_n([tf.cast(l, tf.float32) for l in model.losses])
        grads = tape.gradient(loss, [v.value for v in model.trainable_variables])
        return logits, loss, grads

    tf.keras.utils.set_random_seed(0)
    fast = build_model(cfg, (32, 48, 4), precision=precision)
    with monkeypatch.context() as m:  # the unoptimised network: Keras' own dilated convolution and batch norm
        m.setattr(DilatedConv2D, "convolution_op", layers.Conv2D.convolution_op)
        m.setattr(FusedBatchNorm, "call", layers.BatchNormalization.call)
        ref = build_model(cfg, (32, 48, 4), precision=precision)
        ref.set_weights(fast.get_weights())
        ref_logits, ref_loss, ref_grads = run(ref)
        ref_s2b = _ops(ref, x, "SpaceToBatchND")
        assert _ops(ref, x, "FusedBatchNormV3") == 0
    logits, loss, grads = run(fast)
    # the training call updated the moving statistics alike (non-trainable weights: moving mean and variance)
    for v, r in zip(fast.non_trainable_variables, ref.non_trainable_variables):
        np.testing.assert_allclose(np.asarray(v), np.asarray(r), rtol=1e-5, atol=1e-6, err_msg=v.path)
    tol = 1e-5 if precision == "float32" else 2e-2
    np.testing.assert_allclose(logits.numpy(), ref_logits.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=tol)
    assert len(grads) == len(ref_grads)
    # Biases in front of a batch norm have a zero gradient up to round-off: absolute tolerance on the scale
    # of the largest gradient.
    scale = max(float(np.max(np.abs(np.asarray(r, np.float32)))) for r in ref_grads)
    for v, g, r in zip(fast.trainable_variables, grads, ref_grads):
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(r, np.float32), rtol=tol,
                                   atol=tol * scale, err_msg=v.path)
    # The graph shows the skipped work: the rate-6 and rate-4 branches run no SpaceToBatch.
    assert _ops(fast, x, "SpaceToBatchND") < ref_s2b
    assert _ops(fast, x, "FusedBatchNormV3") == sum(isinstance(l, FusedBatchNorm) for l in fast.layers) > 0


def test_deeplab_with_skipped_taps_under_op_determinism(tmp_path):
    """train.deterministic turns on TF's op determinism (process-wide, so in a child process): the network with
    skipped taps runs under it (TF raises for ops without a deterministic kernel) and two gradient passes
    agree bit for bit."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "det.py"
    script.write_text(f"""
import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
import numpy as np, tensorflow as tf
tf.config.experimental.enable_op_determinism()
from exascale_climate.models import build_model
from tiny_models import tiny_deeplab, toy_batch
tf.keras.utils.set_random_seed(0)
model = build_model(tiny_deeplab(aspp_rates=[3, 4, 6]), (32, 48, 4))
x, y = toy_batch(batch=1)
def grads():
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
    return [np.asarray(g) for g in tape.gradient(loss, [v.value for v in model.trainable_variables])]
a, b = grads(), grads()
assert all(np.array_equal(p, q) for p, q in zip(a, b)), "gradients differ between two passes"
print("DETERMINISTIC", len(a))
""")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "DETERMINISTIC" in out.stdout


def test_checkpoint_of_keras_layers_loads_into_the_optimised_network(tmp_path, monkeypatch):
    """model.weights.h5 written by a DeepLabv3+ built from Keras' own Conv2D/BatchNormalization (the network
    before this change) restores every weight of the network with DilatedConv2D/FusedBatchNorm, and back."""
    import exascale_climate.models.layers as model_layers

    cfg = tiny_deeplab(aspp_rates=[3, 4, 6])
    with monkeypatch.context() as m:
        m.setattr(model_layers, "DilatedConv2D", layers.Conv2D)
        m.setattr(model_layers, "FusedBatchNorm", layers.BatchNormalization)
        tf.keras.utils.set_random_seed(0)
        old = build_model(cfg, (32, 48, 4))
    assert not any(isinstance(l, (DilatedConv2D, FusedBatchNorm)) for l in old.layers)
    old.save_weights(str(tmp_path / "old.weights.h5"))
    tf.keras.utils.set_random_seed(1)
    new = build_model(cfg, (32, 48, 4))
    assert any(isinstance(l, DilatedConv2D) for l in new.layers)
    new.load_weights(str(tmp_path / "old.weights.h5"))
    for a, b in zip(old.weights, new.weights):
        assert a.path == b.path and np.array_equal(np.asarray(a), np.asarray(b)), a.path


@pytest.mark.parametrize("kind", ["conv", "conv_transpose", "dilated"])
def test_bfloat16_bias_gradient_is_the_float32_sum_of_the_output_gradient(kind):
    """Under mixed_bfloat16 a convolution's bias gradient is the sum of its (bfloat16) output gradient over
    batch and pixels; the oracle sums the same bfloat16 values in float64 here. Bias gradients are sums with
    heavy cancellation (random signs here: |sum| ~ 1/300 of sum |dy|), so a sum accumulated in float32 and
    rounded once to bfloat16 is within 2^-8 of the oracle while one accumulated in bfloat16 is not (TF's
    bfloat16 BiasAddGrad on CPUs, which Keras' bias add differentiates to, was 5-118% off). The kernel gradient
    and the output match the float32 layer with the same weights to bfloat16 accuracy."""
    from exascale_climate.models.layers import LayerFactory

    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(size=(2, 24, 36, 8)), tf.float32)
    layer = {}
    for precision in ("float32", "mixed_bfloat16"):
        f = LayerFactory(precision)
        layer[precision] = {"conv": lambda: f.conv(16, 3, name="c"), "dilated": lambda: f.conv(16, 3, "d", dilation=2),
                            "conv_transpose": lambda: f.conv_transpose(16, 3, name="t")}[kind]()
        layer[precision].build(x.shape)
    layer["mixed_bfloat16"].set_weights([w + 0.1 for w in layer["float32"].get_weights()])
    layer["float32"].set_weights(layer["mixed_bfloat16"].get_weights())
    out_shape = layer["float32"](x).shape
    dy = tf.cast(tf.constant(rng.normal(size=out_shape), tf.float32), tf.bfloat16)

    def run(lyr):
        with tf.GradientTape() as tape:
            y = lyr(x)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.cast(dy, tf.float32))
        return y, *tape.gradient(loss, [lyr.kernel, lyr.bias])

    y16, k16, b16 = run(layer["mixed_bfloat16"])
    y32, k32, b32 = run(layer["float32"])
    assert y16.dtype == tf.bfloat16 and b16.dtype == tf.float32  # bfloat16 compute, float32 variables
    oracle = np.asarray(tf.cast(dy, tf.float32), np.float64).sum(axis=(0, 1, 2))
    assert np.median(np.abs(np.asarray(tf.cast(dy, tf.float32))).sum(axis=(0, 1, 2)) / np.abs(oracle)) > 30
    np.testing.assert_allclose(b16.numpy(), oracle, rtol=2.0**-8, atol=0)
    np.testing.assert_allclose(b32.numpy(), oracle, rtol=1e-4)
    scale = float(np.max(np.abs(k32.numpy())))
    np.testing.assert_allclose(k16.numpy(), k32.numpy(), atol=2e-2 * scale)
    np.testing.assert_allclose(np.asarray(tf.cast(y16, tf.float32)), y32.numpy(), atol=2e-2 * float(np.max(np.abs(y32))))
