"""System files: every bundled one loads with sources; bad numbers are one-line errors naming file and key."""
import pytest
import yaml

from exascale_climate.errors import ConfigError
from exascale_climate.scale.systems import bundled_systems, load_system


def test_bundled_systems_load_and_every_number_has_a_source():
    assert {"summit", "piz-daint", "perlmutter"} <= set(bundled_systems())
    for name in bundled_systems():
        system = load_system(name)
        given = [k for k, v in system.values.items() if v is not None]
        assert given and all(system.sources.get(k) for k in given if k in system.sources)
        raw = yaml.safe_load(open(system.path))
        assert raw["node"]["devices"]["source"]


def test_summit_node_composition():
    summit = load_system("summit")
    assert summit.devices_per_node == 6
    assert summit["network.inter.bandwidth_Bps"] == 23.0e9


@pytest.mark.parametrize("key", ["network.inter.bandwidth_Bps", "node.devices", "horovod.cycle_time_ms"])
def test_missing_number_names_file_and_key(write_system, key):
    path = write_system(**{key: None})
    with pytest.raises(ConfigError) as err:
        load_system(path)
    message = str(err.value)
    assert str(path) in message and key in message and "missing" in message and "\n" not in message


def test_negative_number_is_rejected(write_system):
    path = write_system(**{"network.intra.latency_s": {"value": -1e-6, "source": "typo"}})
    with pytest.raises(ConfigError, match=r"network\.intra\.latency_s: value -1e-06 must be >= 0"):
        load_system(path)


def test_zero_bandwidth_and_text_values_are_rejected(write_system):
    with pytest.raises(ConfigError, match="bandwidth_Bps: value 0 must be > 0"):
        load_system(write_system(**{"network.inter.bandwidth_Bps": {"value": 0, "source": "x"}}))
    with pytest.raises(ConfigError, match="is not a finite number"):
        load_system(write_system(**{"node.devices": {"value": "six", "source": "x"}}))


def test_number_without_source_is_rejected(write_system):
    with pytest.raises(ConfigError, match="node.devices: the number needs a source"):
        load_system(write_system(**{"node.devices": {"value": 4}}))


def test_unknown_system_lists_the_bundled_ones():
    with pytest.raises(ConfigError, match="summit"):
        load_system("no-such-machine")


@pytest.mark.parametrize("key", ["variability.jitter_cv", "variability.step_time_cv"])
def test_spread_keys_without_a_value_or_negative_are_errors(write_system, key):
    """A key written with nothing after it is a number left out, not a default of 0: a one-line error."""
    path = write_system("nulled.yaml")
    tree = yaml.safe_load(path.read_text())
    section, name = key.split(".")
    tree[section][name] = None
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError) as err:
        load_system(path)
    assert str(path) in str(err.value) and key in str(err.value) and "missing value" in str(err.value)
    tree[section][name] = {"value": -0.01, "source": "typo"}
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + r": value -0.01 must be >= 0"):
        load_system(path)
    tree[section][name] = {"source": "no number"}
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + r": expected \{value: NUMBER, source: TEXT\}"):
        load_system(path)


def test_jitter_left_out_is_zero_and_summit_sources_it(write_system):
    assert load_system(write_system())["variability.jitter_cv"] == 0.0
    summit = load_system("summit")
    assert summit["variability.jitter_cv"] > 0 and "1909.11150" in summit.sources["variability.jitter_cv"]
    assert "plot_aggregated.py" in summit.sources["variability.step_time_cv"]
