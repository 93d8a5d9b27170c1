"""A misspelt key anywhere in the config is refused by name, with the nearest known key suggested."""
import copy
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.config import (AXES, BACKEND_KEYS, OFFLOAD_KEYS, REGIONS_KEYS, ROUTER_KEYS, TOP_LEVEL_KEYS, ConfigError,
                             ControlConfig, ProxyConfig, SimSpec, _keys_of, default_config_text, parse_config)


def default_data() -> dict:
    return tomllib.loads(default_config_text())


def _table(data: dict, where: str) -> dict:
    """The table at a dotted path, e.g. 'proxy', 'policies.balanced', 'backends.0.sim'."""
    t = data
    for part in where.split(".") if where else []:
        t = t[int(part)] if part.isdigit() else t[part]
    return t


@pytest.mark.parametrize(
    "where, typo, meant",
    [
        ("", "proxi", "proxy"),
        ("proxy", "listne", "listen"),
        ("proxy", "tls_crt", "tls_cert"),
        ("control", "scrape_interval", "scrape_interval_ms"),
        ("offload", "drivr", "driver"),
        ("router", "default_polcy", "default_policy"),
        ("policies.balanced", "ttfb", "ttft"),
        ("regions", "rtt", "rtt_ms"),
        ("backends.0", "adress", "address"),
        ("backends.0.sim", "slot", "slots"),
    ],
)
def test_misspelt_key_is_refused_with_the_nearest_known_key(where, typo, meant):
    data = default_data()
    table = _table(data, where)
    table[typo] = table.get(meant, 1) if isinstance(table.get(meant), (str, int, float)) else 1
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    msg = str(e.value)
    assert typo in msg and f"did you mean {meant!r}" in msg, msg
    assert "\n" not in msg


def test_a_key_like_nothing_known_is_still_refused_and_lists_the_known_keys():
    data = default_data()
    data["proxy"]["zzzz"] = 1
    with pytest.raises(ConfigError, match="proxy.zzzz: unknown key") as e:
        parse_config(data)
    assert "did you mean" not in str(e.value) and "listen" in str(e.value)


TABLES = {
    "": TOP_LEVEL_KEYS, "proxy": _keys_of(ProxyConfig), "control": _keys_of(ControlConfig), "offload": OFFLOAD_KEYS,
    "router": ROUTER_KEYS, "regions": REGIONS_KEYS, "policies.balanced": AXES, "backends.0": BACKEND_KEYS,
    "backends.0.sim": _keys_of(SimSpec),
}


@settings(max_examples=150, deadline=None)
@given(where=st.sampled_from(sorted(TABLES)), key=st.text(min_size=1, max_size=20))
def test_any_unknown_key_in_any_table_is_refused_by_name(where, key):
    if key in TABLES[where]:
        return
    data = copy.deepcopy(default_data())
    _table(data, where)[key] = 1
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert repr(key)[1:-1] in str(e.value) or key in str(e.value)


def test_every_key_of_the_embedded_default_is_known():
    cfg = parse_config(default_data())
    assert cfg.proxy.listen and cfg.backends
