"""The semi-supervised detector: the paper configuration's shapes and size at 768x768x16 (built, not trained)."""
from __future__ import annotations

import numpy as np
import pytest

from exascale_climate.config import load_config


@pytest.fixture(scope="module")
def paper_model():
    """Built once for the module: 78.6 M parameters at 768x768x16 (no forward pass, no training)."""
    import keras

    from exascale_climate.models import build_model

    keras.backend.clear_session()
    cfg = load_config(None, ["model.name=semisup"])
    return build_model(cfg.model, (768, 768, 16))


def hand_count() -> int:
    """Weights + biases of the layers as listed in the SC17/ExtremeWeather description (docs/MODELS.md)."""
    convs = [(5, 16, 128), (5, 128, 256), (5, 256, 512), (5, 512, 768), (5, 768, 1024),  # encoder, stride 2
             (3, 1024, 1088),  # features
             (3, 1088, 1), (3, 1088, 2), (3, 1088, 4)]  # confidence, class, box heads
    deconvs = [(5, 1088, 768), (5, 768, 512), (5, 512, 256), (5, 256, 128), (5, 128, 16)]
    return sum(k * k * cin * cout + cout for k, cin, cout in convs + deconvs)


def test_paper_config_layers_shapes_and_size(paper_model):
    kinds = [type(layer).__name__ for layer in paper_model.layers]
    assert kinds.count("Conv2D") == 9 and kinds.count("Conv2DTranspose") == 5  # the seeds' 9 + 5
    recon, detection = paper_model.outputs
    assert tuple(recon.shape) == (None, 768, 768, 16)
    assert tuple(detection.shape) == (None, 24, 24, 1 + 2 + 4)
    params = paper_model.count_params()
    assert params == hand_count()
    mib = params * 4 / 2**20
    assert abs(mib - 302) / 302 < 0.10 and abs(params - 79e6) / 79e6 < 0.10


def test_slim_config_forward_shapes():
    import keras

    from exascale_climate.models import build_model, required_divisor

    cfg = load_config("semisup_demo")
    assert required_divisor(cfg.model) == 8
    keras.backend.clear_session()
    model = build_model(cfg.model, (96, 144, 16))
    recon, det = model(np.zeros((2, 96, 144, 16), np.float32))
    assert recon.shape == (2, 96, 144, 16) and det.shape == (2, 12, 18, 7)


def test_grid_not_divisible_is_a_config_error():
    from exascale_climate.errors import ConfigError
    from exascale_climate.models import build_model

    cfg = load_config(None, ["model.name=semisup"])
    with pytest.raises(ConfigError, match="divisible by 32"):
        build_model(cfg.model, (96, 144, 16))


def test_summary_flops_of_the_two_output_model_agree_with_the_graph():
    """`model summary` on the slim config: the analytic count and the TF profiler's graph count (which sees both
    outputs) agree, and the forward count equals the sum over conv/deconv layers computed here by hand."""
    from exascale_climate.models.summary import model_summary

    cfg = load_config("semisup_demo")
    s = model_summary(cfg, (96, 144), graph=True)
    assert s["parameters"] == 91_831
    assert abs(s["graph_forward_flops"] - s["forward_flops"]) / s["forward_flops"] < 0.002
    # by hand: 2*k*k*Cin*Cout per output pixel (conv) / input pixel (deconv), + bias per output element
    convs = [(3, 16, 16, 48 * 72), (3, 16, 32, 24 * 36), (3, 32, 64, 12 * 18), (3, 64, 64, 12 * 18),
             (3, 64, 1, 12 * 18), (3, 64, 2, 12 * 18), (3, 64, 4, 12 * 18)]
    deconvs = [(3, 64, 32, 12 * 18, 24 * 36), (3, 32, 16, 24 * 36, 48 * 72), (3, 16, 16, 48 * 72, 96 * 144)]
    hand = sum(2 * k * k * ci * co * n + co * n for k, ci, co, n in convs)
    hand += sum(2 * k * k * ci * co * n_in + co * n_out for k, ci, co, n_in, n_out in deconvs)
    assert s["forward_flops"] == hand
    assert s["paper_parameter_mib"] == 302.0
