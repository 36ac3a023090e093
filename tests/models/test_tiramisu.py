"""Tiramisu: shapes, a hand-counted parameter total, the paper's defaults, precision policy, gradients."""
import numpy as np
import pytest

from tiny_models import tiny_tiramisu
from exascale_climate.config import ModelConfig
from exascale_climate.errors import ConfigError
from exascale_climate.models import build_model, required_divisor


@pytest.mark.parametrize("grid", [(16, 16), (32, 48), (48, 80)])
def test_output_shape_and_dtype_at_several_grids(grid):
    model = build_model(tiny_tiramisu(), (*grid, 4))
    out = model(np.zeros((2, *grid, 4), np.float32))
    assert tuple(out.shape) == (2, *grid, 3)
    assert out.dtype == "float32"


def conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def test_parameter_count_matches_hand_computation():
    # down [1, 2], bottleneck 1, up [2, 1], growth 4, 3x3, first conv 8, 4 input channels, 3 classes
    cfg = tiny_tiramisu()
    k, g = 3, 4
    expected = conv(k, 4, 8)                                    # stem: 8 channels
    expected += conv(k, 8, g)                                   # down0: 1 layer -> 12 channels
    expected += conv(1, 12, 12)                                 # td0
    expected += conv(k, 12, g) + conv(k, 16, g)                 # down1: 2 layers -> 20 channels
    expected += conv(1, 20, 20)                                 # td1
    expected += conv(k, 20, g)                                  # bottleneck: 1 new layer (4 channels upsampled)
    expected += conv(3, 4, 4)                                   # tu0 (transposed conv: 3x3x4x4 + bias)
    expected += conv(k, 4 + 20, g) + conv(k, 28, g)             # up0 on cat(4, skip 20): 8 new channels
    expected += conv(3, 8, 8)                                   # tu1
    expected += conv(k, 8 + 12, g)                              # up1 on cat(8, skip 12): 20 + 4 = 24 out
    expected += conv(1, 24, 3)                                  # logits
    assert build_model(cfg, (16, 16, 4)).count_params() == expected


def test_batch_norm_adds_four_parameters_per_channel():
    without = build_model(tiny_tiramisu(), (16, 16, 4)).count_params()
    with_bn = build_model(tiny_tiramisu(batch_norm=True), (16, 16, 4)).count_params()
    # BN before every dense-layer conv (inputs 8, 12, 16, 20, 24, 28, 20) and transition down (12, 20)
    assert with_bn - without == 4 * (8 + 12 + 16 + 20 + 24 + 28 + 20 + 12 + 20)


def test_paper_defaults():
    cfg = ModelConfig()
    t = cfg.tiramisu
    assert (t.down_layers, t.bottleneck_layers, t.up_layers) == ([2, 2, 2, 4], 5, [4, 2, 2, 2])
    assert (t.growth_rate, t.kernel_size, t.initial_filters, t.dropout, t.batch_norm) == (32, 5, 64, 0.2, False)
    assert required_divisor(cfg) == 16
    model = build_model(cfg, (32, 48, 16))
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"Conv2DTranspose", "Dropout"} <= kinds and "MaxPooling2D" not in kinds
    td = model.get_layer("td0_conv")
    assert td.kernel_size == (1, 1) and td.strides == (2, 2)
    tu = model.get_layer("tu0_deconv")
    assert tu.kernel_size == (3, 3) and tu.strides == (2, 2)
    assert model.get_layer("down0_l0_conv").kernel_size == (5, 5)
    assert model.get_layer("stem_conv").filters == 64
    # L2 weight decay 1e-4 on every kernel
    assert len(model.losses) == sum(1 for layer in model.layers if hasattr(layer, "kernel"))
    assert model.get_layer("stem_conv").kernel_regularizer.l2 == pytest.approx(1e-4)


def test_grid_not_divisible_is_a_config_error():
    with pytest.raises(ConfigError, match="divisible by 4"):
        build_model(tiny_tiramisu(), (30, 48, 4))


# float16 keeps 11 significant bits, bfloat16 8 (8x the round-off): logits up to ~4 differed from float32 by
# 0.002 and 0.02 (measured); a bfloat16 tolerance of 2^-8 x 4 x ~4 roundings
@pytest.mark.parametrize("precision, compute, atol", [("mixed_float16", "float16", 2e-2),
                                                      ("mixed_bfloat16", "bfloat16", 6e-2)])
def test_mixed_precision_is_per_layer_and_logits_are_float32(precision, compute, atol):
    import keras

    before = keras.config.dtype_policy().name
    model = build_model(tiny_tiramisu(), (16, 16, 4), precision=precision)
    assert keras.config.dtype_policy().name == before  # no global policy state touched
    assert model.get_layer("down0_l0_conv").compute_dtype == compute
    assert model.get_layer("down0_l0_conv").variable_dtype == "float32"
    assert model.get_layer("logits").compute_dtype == "float32"
    out = model(np.ones((1, 16, 16, 4), np.float32))
    assert out.dtype == "float32"
    ref = build_model(tiny_tiramisu(), (16, 16, 4))
    ref.set_weights(model.get_weights())
    np.testing.assert_allclose(out, ref(np.ones((1, 16, 16, 4), np.float32)), atol=atol)
