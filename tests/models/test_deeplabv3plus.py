"""DeepLabv3+: shapes, the paper's structure, and parameter counts checked against Keras' own ResNet50V2."""
import numpy as np
import pytest

from tiny_models import tiny_deeplab
from exascale_climate.config import ModelConfig
from exascale_climate.errors import ConfigError
from exascale_climate.models import build_model, required_divisor


@pytest.mark.parametrize("grid,output_stride", [((16, 24), 8), ((32, 48), 8), ((32, 64), 16)])
def test_output_shape_at_several_grids_and_strides(grid, output_stride):
    model = build_model(tiny_deeplab(output_stride=output_stride), (*grid, 4))
    out = model(np.zeros((1, *grid, 4), np.float32))
    assert tuple(out.shape) == (1, *grid, 3) and out.dtype == "float32"
    assert model.get_layer("aspp_fuse_conv").output.shape[1:3] == (grid[0] // output_stride,
                                                                   grid[1] // output_stride)


def test_unreachable_output_stride_is_a_config_error():
    with pytest.raises(ConfigError, match="output_stride"):
        build_model(tiny_deeplab(resnet_blocks=[1, 1], output_stride=16), (32, 32, 4))


def conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def conv_bn(k, cin, cout):
    return conv(k, cin, cout, bias=False) + 4 * cout  # BN: gamma, beta, moving mean, moving variance


def test_full_size_model_at_small_grid_matches_hand_count_and_keras_resnet50v2():
    import keras

    cfg = ModelConfig(name="deeplabv3plus")
    d = cfg.deeplabv3plus
    assert (d.resnet_blocks, d.output_stride, d.aspp_rates, d.aspp_filters) == ([3, 4, 6, 3], 8, [12, 24, 36], 256)
    assert required_divisor(cfg) == 8
    model = build_model(cfg, (32, 48, 16))
    assert tuple(model(np.zeros((1, 32, 48, 16), np.float32)).shape) == (1, 32, 48, 3)

    # Backbone vs Keras' reference ResNet50V2: ours has 16 input channels and bias-free projection shortcuts.
    reference = keras.applications.ResNet50V2(weights=None, include_top=False, input_shape=(64, 64, 3))
    backbone = sum(layer.count_params() for layer in model.layers
                   if layer.name.startswith(("stem_", "res", "encoder_post")))
    assert backbone == reference.count_params() + 7 * 7 * (16 - 3) * 64 - (256 + 512 + 1024 + 2048)

    # ASPP and the paper's full-resolution decoder, by hand.
    # 1x1 and atrous branches with BN; the image-pooling branch a biased conv without BN; the fusing conv.
    head = conv_bn(1, 2048, 256) + 3 * conv_bn(3, 2048, 256) + conv(1, 2048, 256) + conv_bn(1, 5 * 256, 256)
    head += conv(3, 256, 256)                                      # 3x3 stride-2 transposed conv (OS 8 -> 4)
    head += conv_bn(1, 256, 48)                                    # low-level features to 48 channels
    head += conv_bn(3, 256 + 48, 256) + conv_bn(3, 256, 256)       # two 3x3 convs of 256
    head += 2 * conv(3, 256, 256)                                  # two 3x3 stride-2 transposed convs
    head += conv_bn(3, 16, 64) + conv_bn(3, 64, 128)               # full-resolution skip from the input
    head += conv_bn(3, 256 + 128, 256) + conv_bn(3, 256, 256)      # two 3x3 convs of 256
    head += conv(1, 256, 3)                                        # logits
    assert model.count_params() == backbone + head

    # dilated last stages (output stride 8) and the ASPP rates
    assert model.get_layer("res3_b0_c2").dilation_rate == (2, 2)
    assert model.get_layer("res4_b0_c2").dilation_rate == (4, 4)
    assert [model.get_layer(f"aspp_r{r}_conv").dilation_rate[0] for r in (12, 24, 36)] == [12, 24, 36]
    assert model.get_layer("stem_conv").kernel_regularizer.l2 == pytest.approx(5e-4)


def test_weight_decay_override():
    cfg = tiny_deeplab()
    cfg.weight_decay = 0.0
    assert build_model(cfg, (16, 16, 4)).losses == []


@pytest.mark.parametrize("precision", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_every_trainable_variable_gets_a_gradient_at_batch_1(precision):
    """Batch 1 is the shipped deeplabv3plus.yaml batch. Batch norm over the image-pooling branch's 1x1 map
    (one value per channel) outputs beta whatever its input, so that branch's kernel got exactly zero
    gradient. Weight decay is off: it would give every kernel a non-zero gradient by itself."""
    import tensorflow as tf

    from tiny_models import toy_batch

    # The same initial weights whatever ran before in this process: in the full suite an unlucky draw gave the
    # float16 image-pooling branch exactly zero gradient.
    tf.keras.utils.set_random_seed(0)
    cfg = tiny_deeplab()
    cfg.weight_decay = 0.0
    model = build_model(cfg, (32, 48, 4), precision=precision)
    x, y = toy_batch(batch=1)
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
    variables = model.trainable_variables
    grads = tape.gradient(loss, [v.value for v in variables])
    dead = [v.path for v, g in zip(variables, grads) if g is None or not np.any(np.asarray(g, np.float32))]
    assert dead == []
