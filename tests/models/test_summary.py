"""`exaclimate model summary`: the CLI prints the counts the library computes; bad grids are one-line errors."""
import json

from click.testing import CliRunner

from exascale_climate.cli import main

SLIM = ["--set", "model.tiramisu.down_layers=[1,1]", "--set", "model.tiramisu.up_layers=[1,1]",
        "--set", "model.tiramisu.bottleneck_layers=1", "--set", "model.tiramisu.growth_rate=4",
        "--set", "model.tiramisu.initial_filters=8"]


def test_summary_json_matches_the_built_model():
    from exascale_climate.config import load_config
    from exascale_climate.models import build_model
    from exascale_climate.models.flops import analytic_flops

    args = ["model", "summary", "--model", "tiramisu", "--grid", "32x48", "--json", *SLIM]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    cfg = load_config(None, [a for a in SLIM if a != "--set"])
    model = build_model(cfg.model, (32, 48, 16))
    assert summary["parameters"] == model.count_params()
    assert summary["forward_flops"] == analytic_flops(model)["forward"]
    assert 0 < summary["graph_forward_flops"] < summary["graph_train_step_flops"]
    assert [row["name"] for row in summary["layers"]] == [layer.name for layer in model.layers]


def test_summary_text_has_table_and_totals():
    result = CliRunner().invoke(main, ["model", "summary", "--model", "tiramisu", "--grid", "32x48", "--no-graph",
                                       *SLIM])
    assert result.exit_code == 0, result.output
    assert "stem_conv" in result.output and "logits" in result.output
    assert "train-step FLOPs/sample" in result.output and "TF profiler" not in result.output


def test_bad_grid_is_a_one_line_error():
    result = CliRunner().invoke(main, ["model", "summary", "--model", "tiramisu", "--grid", "30x48", *SLIM])
    assert result.exit_code == 2
    assert "divisible by 4" in result.output
