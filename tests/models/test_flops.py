"""The analytic FLOP count (over layers) and the TF-profiler count (over the graph) agree."""
import keras
import pytest

from tiny_models import tiny_deeplab, tiny_tiramisu
from exascale_climate.config import ModelConfig
from exascale_climate.models import build_model
from exascale_climate.models.flops import count_flops, layer_flops


def test_single_convolutions_by_hand():
    inputs = keras.Input((8, 12, 5))
    conv = keras.layers.Conv2D(7, 3, padding="same")
    deconv = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same")
    keras.Model(inputs, deconv(conv(inputs)))
    assert layer_flops(conv) == 2 * 3 * 3 * 5 * 7 * 8 * 12 + 7 * 8 * 12
    assert layer_flops(deconv) == 2 * 3 * 3 * 7 * 4 * 8 * 12 + 4 * 16 * 24


@pytest.mark.parametrize("cfg", [tiny_tiramisu(), tiny_tiramisu(batch_norm=True, kernel_size=5),
                                 # no dilation: TF runs dilated convolutions via SpaceToBatch (see docs)
                                 tiny_deeplab(output_stride=16, aspp_rates=[1])],
                         ids=["tiramisu", "tiramisu-bn", "deeplab-os16"])
def test_analytic_and_graph_counts_agree(cfg):
    shape = (32, 48, 4)
    flops = count_flops(build_model(cfg, shape), shape)
    assert flops["graph_forward"] == pytest.approx(flops["forward"], rel=2e-3)
    tolerance = 0.06 if cfg.name == "tiramisu" and cfg.tiramisu.batch_norm else 0.01
    assert flops["graph_train_step"] == pytest.approx(flops["train_step"], rel=tolerance)
    assert 2.9 < flops["train_step"] / flops["forward"] <= 3.0


def test_dilated_convolutions_cost_at_least_their_useful_flops_in_the_graph():
    shape = (32, 48, 4)
    flops = count_flops(build_model(tiny_deeplab(), shape), shape)
    assert flops["graph_forward"] >= flops["forward"]


def test_paper_tiramisu_at_full_grid_is_about_4_2_tflop_per_training_step():
    shape = (768, 1152, 16)
    flops = count_flops(build_model(ModelConfig(), shape), shape, graph=False)
    assert flops["train_step"] == pytest.approx(4.2e12, rel=0.01)
