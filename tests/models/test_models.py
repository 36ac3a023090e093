"""Both networks through `build_model`: gradients reach every layer, a model overfits one batch, save/load."""
import numpy as np
import pytest
import tensorflow as tf

from tiny_models import tiny_deeplab, tiny_tiramisu, toy_batch
from exascale_climate.config import ModelConfig
from exascale_climate.errors import ConfigError
from exascale_climate.models import MODELS, build_model
from exascale_climate.train.losses import segmentation_loss
from exascale_climate.train.metrics import confusion_matrix, iou_from_confusion

TINY = {"tiramisu": tiny_tiramisu, "deeplabv3plus": tiny_deeplab}


def test_registry_names_match_the_config_choices():
    import dataclasses

    field = {f.name: f for f in dataclasses.fields(ModelConfig)}["name"]
    assert set(MODELS) == set(field.metadata["choices"])


def test_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="train.precision"):
        build_model(tiny_tiramisu(), (16, 16, 4), precision="bfloat16")


@pytest.mark.parametrize("name", sorted(TINY))
def test_gradients_are_finite_and_reach_every_layer(name):
    model = build_model(TINY[name](), (32, 48, 4))
    x, y = toy_batch()
    with tf.GradientTape() as tape:
        loss = segmentation_loss(y, model(x, training=True), np.ones(y.shape, np.float32)) + tf.add_n(model.losses)
    grads = tape.gradient(loss, [v.value for v in model.trainable_variables])
    for var, grad in zip(model.trainable_variables, grads):
        assert grad is not None, f"no gradient reaches {var.path}"
        assert np.all(np.isfinite(grad)), var.path
        assert np.any(grad.numpy() != 0), f"zero gradient at {var.path}"
    # every layer that owns weights owns a trainable variable that got a gradient
    weighted = [layer for layer in model.layers if layer.trainable_weights]
    assert {layer.name for layer in weighted} == {
        v.path.split("/")[0] for v in model.trainable_variables}


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
def test_small_tiramisu_overfits_one_batch(precision):
    x, y = toy_batch(seed=1)
    model = build_model(tiny_tiramisu(growth_rate=8, initial_filters=16), (32, 48, 4), precision=precision)
    import keras

    optimizer = keras.optimizers.Adam(1e-2)
    weights = np.ones(y.shape, np.float32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = segmentation_loss(y, model(x, training=True), weights)
        grads = tape.gradient(loss, [v.value for v in model.trainable_variables])
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    mean_iou = 0.0
    for _ in range(30):  # at most 30 x 10 = 300 steps
        for _ in range(10):
            step()
        predictions = tf.argmax(model(x, training=False), axis=-1)
        _, mean_iou = iou_from_confusion(confusion_matrix(y, predictions, 3).numpy())
        if mean_iou > 0.9:
            break
    assert mean_iou > 0.9


@pytest.mark.parametrize("name", sorted(TINY))
def test_save_load_round_trip_gives_identical_outputs(name, tmp_path):
    import keras

    model = build_model(TINY[name](), (32, 48, 4))
    x, _ = toy_batch()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(model(x, training=False), loaded(x, training=False))
    # the weights-only format the trainer's checkpoints use
    rebuilt = build_model(TINY[name](), (32, 48, 4))
    model.save_weights(tmp_path / "model.weights.h5")
    rebuilt.load_weights(tmp_path / "model.weights.h5")
    np.testing.assert_array_equal(model(x, training=False), rebuilt(x, training=False))


@pytest.mark.parametrize("override,message", [("model.deeplabv3plus.aspp_rates=[0, 2]", "aspp_rates"),
                                              ("model.tiramisu.down_layers=[]", "down_layers"),
                                              ("model.deeplabv3plus.resnet_blocks=[3, 0]", "resnet_blocks")])
def test_bad_architecture_lists_are_config_errors_naming_the_key(override, message):
    from exascale_climate.config import load_config

    with pytest.raises(ConfigError, match=f"model.*{message}"):
        load_config(None, [override])
