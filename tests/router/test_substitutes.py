"""Model groups: a request that allows it may be served by a substitute model, penalised by its rank."""
from __future__ import annotations

import pytest

from fastpath.config import ConfigError, parse_config
from fastpath.router import LiveStats, RequestFeatures, Router, build_snapshot

from .fleets import POLICIES, RTT, site, telemetry


def group_fleet(penalty: float = 0.1):
    return parse_config({
        "policies": POLICIES,
        "regions": {"rtt_ms": RTT},
        "model_groups": {"big": {"substitutes": ["small", "medium"], "penalty": penalty}},
        "backends": [site("far-big", "far", models=("big",)), site("near-small", "near", models=("small",)),
                     site("mid-medium", "mid", models=("medium",))],
    }, "<groups>")


def test_a_nearer_substitute_serves_a_request_that_allows_it():
    cfg = group_fleet()
    router, live = Router(cfg, explore_every=0), LiveStats(3)
    snap = build_snapshot(cfg, telemetry(cfg))
    strict = router.route(RequestFeatures(model="big", region="near"), snap, live)
    assert strict.ranked == [0] and strict.served_model() == ""  # without the opt-in: the model asked for
    d = router.route(RequestFeatures(model="big", region="near", allow_substitute=True), snap, live)
    assert sorted(d.ranked) == [0, 1, 2]
    assert d.ranked[0] == 1 and d.served_model() == "small" and b";served=small" in d.header()
    assert d.served_model(d.ranked.index(0)) == ""  # the model's own backend needs no rewrite


def test_the_penalty_keeps_the_requested_model_when_the_gain_is_small():
    cfg = group_fleet(penalty=0.5)
    router, live = Router(cfg, explore_every=0), LiveStats(3)
    snap = build_snapshot(cfg, telemetry(cfg))
    d = router.route(RequestFeatures(model="big", region="mid", allow_substitute=True), snap, live)
    assert d.ranked[0] == 0 and d.served_model() == ""
    assert d.axes(d.ranked.index(1))["score"] < d.axes(0)["score"]


def test_refusal_names_the_substitutes_and_bad_groups_are_config_errors():
    cfg = group_fleet()
    router, live = Router(cfg), LiveStats(3)
    snap = build_snapshot(cfg, telemetry(cfg))
    d = router.route(RequestFeatures(model="big", allow_substitute=True, allow_regions=("moon",)), snap, live)
    assert d.ranked == [] and "regions [moon]" in d.reason
    with pytest.raises(ConfigError, match="substitutes"):
        parse_config({"model_groups": {"big": {"substitutes": []}}, "backends": [site("a", "near")]}, "x")
    with pytest.raises(ConfigError, match="itself"):
        parse_config({"model_groups": {"big": {"substitutes": ["big"]}}, "backends": [site("a", "near")]}, "x")
