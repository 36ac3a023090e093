"""The config tree: YAML round trip, --set overrides, and every kind of validation error."""
import pytest
import yaml

from exascale_climate.config import CONFIG_DIR, Config, config_from_dict, load_config, parse_override, save_config
from exascale_climate.errors import ConfigError


def test_defaults_are_the_papers_tiramisu():
    cfg = load_config()
    assert cfg.model.name == "tiramisu"
    assert cfg.model.tiramisu.down_layers == [2, 2, 2, 4]
    assert cfg.model.tiramisu.bottleneck_layers == 5
    assert cfg.model.tiramisu.growth_rate == 32


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_bundled_configs_load_and_round_trip(path, tmp_path):
    cfg = load_config(path)
    out = tmp_path / "resolved.yaml"
    save_config(cfg, out)
    again = load_config(out)
    assert again == cfg
    assert again.to_dict() == yaml.safe_load(out.read_text())


def test_each_model_has_a_bundled_config():
    names = {load_config(p).model.name for p in CONFIG_DIR.glob("*.yaml")}
    assert {"tiramisu", "deeplabv3plus"} <= names


def test_bundled_config_by_name_and_overrides():
    cfg = load_config("deeplabv3plus", ["train.batch_size=4", "optimizer.larc.eta=0.01",
                                        "data.synth.grid=48x72", "model.deeplabv3plus.aspp_rates=[6, 12, 18]",
                                        "optimizer.learning_rate=1e-4"])
    assert cfg.model.name == "deeplabv3plus"
    assert cfg.train.batch_size == 4
    assert cfg.optimizer.larc.eta == 0.01
    assert cfg.data.synth.grid == (48, 72)
    assert cfg.model.deeplabv3plus.aspp_rates == [6, 12, 18]
    assert cfg.optimizer.learning_rate == pytest.approx(1e-4)


def test_override_wins_over_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: {batch_size: 8, epochs: 3}\n")
    cfg = load_config(p, ["train.batch_size=1"])
    assert (cfg.train.batch_size, cfg.train.epochs) == (1, 3)


@pytest.mark.parametrize("override, message", [
    ("train.bogus=1", "train.bogus: unknown key"),
    ("nosection.x=1", "nosection: unknown key"),
    ("train.batch_size=0", "train.batch_size: 0 is too small; must be >= 1"),
    ("train.batch_size=two", "train.batch_size: 'two' is not an integer"),
    ("train.precision=fp8", "train.precision: 'fp8' is not allowed; choose one of 'float32', 'mixed_float16'"),
    ("model.tiramisu.dropout=1.5", "model.tiramisu.dropout: 1.5 is too large; must be <= 1.0"),
    ("train.deterministic=maybe", "train.deterministic: 'maybe' is not a boolean"),
    ("data.synth.grid=12", "data.synth.grid: 12 is not a grid"),
    ("model.tiramisu.down_layers=3", "model.tiramisu.down_layers: 3 is not a list"),
    ("train.batch_size.inner=3", "train.batch_size: {'inner': 3} is not an integer"),
    ("data.channels=[TMQ, FOO]", "data.channels: unknown variable(s) ['FOO']"),
    ("train", "expected KEY=VALUE"),
])
def test_validation_errors_name_key_value_and_allowed(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="train.loss_scale: 'big' is not allowed"):
        load_config(None, ["train.precision=mixed_float16", "train.loss_scale=big"])
    with pytest.raises(ConfigError, match="model.tiramisu.up_layers"):
        load_config(None, ["model.tiramisu.up_layers=[2, 2]"])
    assert load_config(None, ["train.precision=mixed_float16", "train.loss_scale=1024"]).train.loss_scale == "1024"


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(scalar)


def test_parse_override_reads_yaml_values():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("a.b=x=y") == ("a.b", "x=y")
    assert parse_override("a.b=") == ("a.b", "")


def test_from_dict_equals_dataclass_defaults():
    assert config_from_dict({}) == Config()
