"""The config loader: the embedded default works, bad files say what is wrong."""
import pytest

from fastpath.config import ConfigError, load_config, parse_config, with_ports


def test_embedded_default_describes_a_multi_region_fleet():
    cfg = load_config()
    assert len(cfg.backends) >= 4
    assert len(cfg.site_regions) >= 3
    assert cfg.default_policy in cfg.policies
    for p in cfg.policies.values():
        assert sum(p.weights.values()) == pytest.approx(1.0)
    assert {b.region for b in cfg.backends} <= set(next(iter(cfg.rtt_ms.values())))


def test_with_ports_moves_every_listener_apart():
    cfg = with_ports(load_config(), 41000)
    ports = [cfg.proxy.listen, cfg.proxy.metrics_listen, cfg.control.listen]
    ports += [b.address for b in cfg.backends] + [b.metrics_url for b in cfg.backends]
    assert len(set(ports)) == len(ports)
    assert all(":410" in p for p in ports)


@pytest.mark.parametrize(
    "data, words",
    [
        ({}, "no [[backends]]"),
        ({"backends": [{"name": "a", "address": "nohost", "region": "r", "cost_per_1k_tokens": 1, "models": ["m"]}]}, "host:port"),
        ({"backends": [{"name": "a", "address": "h:1", "region": "r", "cost_per_1k_tokens": 1, "models": []}]}, "models"),
        ({"backends": [{"name": "a", "address": "h:1", "region": "r", "cost_per_1k_tokens": "x", "models": ["m"]}]}, "expected a number"),
        ({"policies": {"p": {"speed": 1}}, "backends": [{"name": "a", "address": "h:1", "region": "r", "cost_per_1k_tokens": 1, "models": ["m"]}]}, "unknown axis"),
    ],
)
def test_bad_config_names_the_problem(data, words):
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse_config(data)


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[proxy\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_config_round_trips_through_toml(tmp_path):
    cfg = with_ports(load_config(), 42000)
    again = load_config(cfg.write(tmp_path / "c.toml"))
    assert again.backends == cfg.backends
    assert again.policies == cfg.policies
    assert again.proxy == cfg.proxy
