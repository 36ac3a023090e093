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
    ("train.precision=bogus",
     "train.precision: 'bogus' is not allowed; choose one of 'float32', 'mixed_float16', 'mixed_bfloat16'"),
    ("model.tiramisu.dropout=1.5", "model.tiramisu.dropout: 1.5 is too large; must be <= 1.0"),
    ("train.deterministic=maybe", "train.deterministic: 'maybe' is not a boolean"),
    ("train.jit_compile=maybe", "train.jit_compile: 'maybe' is not allowed; choose one of 'auto', True, False"),
    ("data.synth.grid=12", "data.synth.grid: 12 is not a grid"),
    ("model.tiramisu.down_layers=3", "model.tiramisu.down_layers: 3 is not a list"),
    ("train.batch_size.inner=3", "train.batch_size: {'inner': 3} is not an integer"),
    ("data.channels=[TMQ, FOO]", "data.channels: unknown variable(s) ['FOO']"),
    ("train", "expected KEY=VALUE"),
])
def test_validation_errors_name_key_value_and_allowed(override, message):
    assert message in rejected(override)


def rejected(override: str) -> str:
    """The ConfigError message that one --set override gets."""
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    return str(err.value)


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="train.loss_scale: 'big' is not allowed"):
        load_config(None, ["train.precision=mixed_float16", "train.loss_scale=big"])
    with pytest.raises(ConfigError, match="model.tiramisu.up_layers"):
        load_config(None, ["model.tiramisu.up_layers=[2, 2]"])
    assert load_config(None, ["train.precision=mixed_float16", "train.loss_scale=1024"]).train.loss_scale == "1024"
    # a heartbeat must have time to change at least twice before it counts as stale
    assert "distributed.heartbeat_stale_s: 0.9 is not allowed" in rejected("distributed.heartbeat_stale_s=0.9")
    assert "distributed.liveness: 'ssh' is not allowed" in rejected("distributed.liveness=ssh")
    assert load_config(None, ["distributed.heartbeat_stale_s=1"]).distributed.heartbeat_stale_s == 1


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


# ------------------------------------------------------------------------ issue 23: absurd, non-finite, non-UTF-8
@pytest.mark.parametrize("override, message", [
    ("optimizer.learning_rate=.nan", "optimizer.learning_rate: nan is not allowed; must be a finite number"),
    ("optimizer.learning_rate=nan", "optimizer.learning_rate: 'nan' is not allowed; must be a finite number"),
    ("optimizer.learning_rate=-.inf", "optimizer.learning_rate: -inf is not allowed; must be a finite number"),
    ("model.tiramisu.dropout=.inf", "model.tiramisu.dropout: inf is not allowed"),
    ("optimizer.learning_rate=1e400", "optimizer.learning_rate: '1e400' is not allowed; must be a finite number"),
    ("optimizer.learning_rate=" + "9" * 400, "must be a finite number"),
    ("train.batch_size=" + str(10**100), "is too large; must be <= 65536 (allowed: 1..65536)"),
    ("data.synth.samples=" + str(10**100), "data.synth.samples: "),
    ("train.seed=-1", "train.seed: -1 is too small; must be >= 0 (allowed: 0..2147483647)"),
    ("data.synth.grid=100000x10", "data.synth.grid: '100000x10' is not a grid; use HxW with integers in 1..16384"),
    ("model.deeplabv3plus.aspp_rates=[12, 24, 100000]",
     "model.deeplabv3plus.aspp_rates: [12, 24, 100000] is not allowed; every item must be in 1..1000"),
    ("optimizer.schedule.milestones=[-5]", "optimizer.schedule.milestones: [-5] is not allowed"),
    ("pipeline.crop=[0, 5]", "pipeline.crop: [0, 5] is not allowed"),
    ("distributed.fusion_threshold_mb=.nan", "distributed.fusion_threshold_mb: nan is not allowed"),
    ("distributed.cycle_time_ms=1e12", "distributed.cycle_time_ms: 1000000000000.0 is too large"),
])
def test_non_finite_and_absurd_values_are_rejected_with_the_range(override, message):
    text = rejected(override)
    assert message in text
    assert len(text) < 200  # a one-line message, not the 400-digit value


def test_loss_scale_must_be_a_finite_positive_number():
    for value in ("nan", "inf", "-3", "1e39"):
        with pytest.raises(ConfigError, match="train.loss_scale: .* use 'dynamic' or a number in"):
            load_config(None, ["train.precision=mixed_float16", f"train.loss_scale={value}"])


def test_every_numeric_field_has_both_bounds():
    import dataclasses
    import typing

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                yield from walk(tp, f"{prefix}{f.name}.")
            elif tp in (int, float, float | None) and "choices" not in f.metadata and "grid" not in f.metadata:
                yield f"{prefix}{f.name}", f.metadata

    unbounded = [k for k, m in walk(Config, "") if m.get("min") is None or m.get("max") is None]
    assert unbounded == []


def test_config_file_not_utf8_is_one_line_naming_the_file(tmp_path):
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_bytes("train: {batch_size: 4}\n".encode("utf-16"))
    with pytest.raises(ConfigError) as err:
        load_config(utf16)
    assert str(err.value).startswith(f"{utf16}: not UTF-8 text (it looks like UTF-16)")
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("# réglage du taux\ntrain: {batch_size: 4}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: not UTF-8 text: byte 0xe9 at offset 3"):
        load_config(latin)
    bom = tmp_path / "bom.yaml"  # UTF-8 with a byte-order mark (Windows editors) is UTF-8: accepted
    bom.write_bytes("\ufefftrain: {batch_size: 4}\n".encode("utf-8"))
    assert load_config(bom).train.batch_size == 4


def test_deep_nesting_in_files_and_set_values_is_bounded(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("train: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="deep.yaml: nested deeper than 16 levels"):
        load_config(deep)
    deep_map = tmp_path / "deep_map.yaml"
    deep_map.write_text("".join(" " * i + f"k{i}:\n" for i in range(1000)) + " " * 1000 + "x: 1\n")
    with pytest.raises(ConfigError, match="nested deeper than 16 levels"):
        load_config(deep_map)
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * (2 << 20) + "\n")
    with pytest.raises(ConfigError, match="huge.yaml: 2097155 bytes is too large for a config file"):
        load_config(huge)
    with pytest.raises(ConfigError, match="--set 'train.batch_size': the value is nested deeper than 16"):
        load_config(None, ["train.batch_size=" + "[" * 50_000])
    with pytest.raises(ConfigError, match="nested deeper than 16 levels"):
        load_config(None, ["a." * 10_000 + "b=1"])


def test_config_cli_reports_bad_files_without_traceback(tmp_path):
    from click.testing import CliRunner

    from exascale_climate.cli import main

    bad = tmp_path / "u.yaml"
    bad.write_bytes("train: {batch_size: 4}\n".encode("utf-16"))
    for args in (["--config", str(bad)], ["--set", "optimizer.learning_rate=.nan"],
                 ["--set", "train.batch_size=" + "{a: " * 3000]):
        res = CliRunner().invoke(main, ["config", "show", *args])
        assert res.exit_code == 2 and res.output.startswith("error: ") and len(res.output.splitlines()) == 1
