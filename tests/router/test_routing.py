"""Routing decisions a user relies on, on small fleets built through the real config parser."""
from __future__ import annotations

import dataclasses

import pytest

from fastpath.config import AXES, Policy
from fastpath.router import LiveStats, RequestFeatures, Router, build_snapshot
from fastpath.router import router as router_module

from .fleets import fleet, site, telemetry


@pytest.fixture(autouse=True, params=["python", "numpy"])
def scoring_path(request, monkeypatch):
    """Every decision is checked on both scoring paths: small fleets in Python, large in numpy."""
    monkeypatch.setattr(router_module, "SCALAR_MAX", 10**6 if request.param == "python" else 0)
    return request.param


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def setup(config, tele=None, **live_kw):
    return Router(config), build_snapshot(config, tele), LiveStats(len(config.backends), **live_kw)


def names(snap, decision):
    return [snap.names[i] for i in decision.ranked]


def parse_header(value: bytes) -> dict[str, str]:
    return dict(part.split("=", 1) for part in value.decode("ascii").split(";"))


def test_near_site_wins_at_low_load():
    cfg = fleet(site("near-a", "near"), site("far-a", "far"))
    router, snap, live = setup(cfg, telemetry(cfg))
    assert names(snap, router.route(RequestFeatures(model="m", region="near"), snap, live)) == ["near-a", "far-a"]
    assert names(snap, router.route(RequestFeatures(model="m", region="far"), snap, live)) == ["far-a", "near-a"]


def test_spills_to_next_best_as_near_site_nears_saturation():
    cfg = fleet(site("near-a", "near"), site("far-a", "far"))
    router = Router(cfg)
    live = LiveStats(2)
    f = RequestFeatures(model="m", region="near")
    winners = []
    for running in range(9):  # 8 slots: idle to full, then a queue
        snap = build_snapshot(cfg, telemetry(cfg, near_a={"num_requests_running": running}))
        winners.append(names(snap, router.route(f, snap, live))[0])
    snap = build_snapshot(cfg, telemetry(cfg, near_a={"num_requests_running": 8, "num_requests_waiting": 6}))
    winners.append(names(snap, router.route(f, snap, live))[0])
    assert winners[0] == "near-a" and winners[1] == "near-a"
    assert winners[-1] == "far-a"
    first_far = winners.index("far-a")
    assert all(w == "far-a" for w in winners[first_far:]), winners  # no flapping back as load grows


def test_burst_between_snapshots_spreads_by_the_proxys_own_inflight():
    cfg = fleet(site("near-a", "near", slots=4), site("near-b", "near", slots=4), site("far-a", "far", slots=4))
    # The last scrape saw an idle fleet; the proxy then sends a burst before the next one.
    router, snap, live = setup(cfg, telemetry(cfg))
    f = RequestFeatures(model="m", region="near")
    counts = {n: 0 for n in snap.names}
    for _ in range(12):
        i = router.route(f, snap, live).ranked[0]
        live.started(i)
        counts[snap.names[i]] += 1
    assert counts["near-a"] > 0 and counts["near-b"] > 0
    assert abs(counts["near-a"] - counts["near-b"]) <= 1
    assert counts["far-a"] > 0  # both near sites saturate before the burst ends
    assert counts["near-a"] + counts["near-b"] > counts["far-a"]


def test_inflight_already_counted_by_the_scrape_is_not_counted_twice():
    cfg = fleet(site("a", "near"), site("b", "near"))
    router = Router(cfg)
    live = LiveStats(2)
    for _ in range(4):
        live.started(0)  # the proxy has 4 streams on a ...
    snap = build_snapshot(cfg, telemetry(cfg, a={"num_requests_running": 4}))  # ... which the scrape counts
    d = router.route(RequestFeatures(model="m", region="near"), snap, live)
    assert d.axes(d.ranked.index(0))["capacity"] == pytest.approx(0.5 + 0.5 * (1 - 4 / 8), abs=1e-9)


def test_site_without_the_model_is_never_chosen():
    cfg = fleet(site("near-big", "near", models=("other",), cost=0.1), site("far-m", "far", models=("m", "other")))
    router, snap, live = setup(cfg, telemetry(cfg))
    for region in ("near", "far", "mid", "nowhere", ""):
        for policy in ("balanced", "latency-first", "cost-first"):
            d = router.route(RequestFeatures(model="m", region=region, policy=policy), snap, live)
            assert names(snap, d) == ["far-m"]
    d = router.route(RequestFeatures(model="missing"), snap, live)
    assert d.ranked == []
    assert "no backend serves model 'missing'" in d.reason and "'m'" in d.reason
    assert d.reason.startswith("filter model: ")  # the refusal names the filter that emptied the set


def test_unknown_model_name_routes_over_the_whole_fleet():
    cfg = fleet(site("a", "near", models=("x",)), site("b", "far", models=("y",)))
    router, snap, live = setup(cfg)
    assert sorted(router.route(RequestFeatures(model="", region="far"), snap, live).ranked) == [0, 1]


def test_tight_max_cost_picks_the_cheap_site():
    cfg = fleet(site("near-dear", "near", cost=1.0), site("far-cheap", "far", cost=0.2), site("mid", "mid", cost=0.6))
    router, snap, live = setup(cfg, telemetry(cfg))
    f = RequestFeatures(model="m", region="near", policy="latency-first")
    assert names(snap, router.route(f, snap, live))[0] == "near-dear"
    f.max_cost = 0.5
    assert names(snap, router.route(f, snap, live)) == ["far-cheap"]
    f.max_cost = 0.2  # the limit is inclusive
    assert names(snap, router.route(f, snap, live)) == ["far-cheap"]
    f.max_cost = 0.1
    d = router.route(f, snap, live)
    assert d.ranked == []
    assert "max cost 0.1" in d.reason and "far-cheap at 0.2" in d.reason
    assert d.reason.startswith("filter max-cost: ")


def test_allow_list_is_respected():
    cfg = fleet(site("near-a", "near"), site("far-a", "far"), site("mid-a", "mid"))
    router, snap, live = setup(cfg, telemetry(cfg))
    f = RequestFeatures(model="m", region="near", allow_regions=("far", "mid"))
    assert sorted(names(snap, router.route(f, snap, live))) == ["far-a", "mid-a"]
    f.allow_regions = ("far",)
    assert names(snap, router.route(f, snap, live)) == ["far-a"]
    f.allow_regions = ("moon",)
    d = router.route(f, snap, live)
    assert d.ranked == [] and "regions [moon]" in d.reason
    assert d.reason.startswith("filter allow-regions: ")


def test_unhealthy_site_is_excluded_and_back_when_telemetry_recovers():
    cfg = fleet(site("near-a", "near"), site("far-a", "far"))
    router = Router(cfg)
    live = LiveStats(2)
    f = RequestFeatures(model="m", region="near")
    down = build_snapshot(cfg, telemetry(cfg, near_a={"healthy": False, "health_detail": "connect refused"}))
    assert names(down, router.route(f, down, live)) == ["far-a"]
    all_down = build_snapshot(cfg, telemetry(cfg, near_a={"healthy": False, "health_detail": "connect refused"},
                                             far_a={"healthy": False, "health_detail": "probe timeout"}))
    d = router.route(f, all_down, live)
    # Panic: with no healthy backend left, every backend is tried rather than none, and the trailer says so.
    assert sorted(d.ranked) == [0, 1] and d.panic == "0/2" and b";panic=0/2" in d.header()
    strict = Router(dataclasses.replace(cfg, panic_threshold=0.0))
    d = strict.route(f, all_down, live)
    assert d.ranked == []
    assert d.reason.startswith("filter health: ")
    assert "no healthy backend" in d.reason and "connect refused" in d.reason and "probe timeout" in d.reason
    odd = build_snapshot(cfg, telemetry(cfg, near_a={"healthy": False, "health_detail": "line1\r\nline2 é"},
                                        far_a={"healthy": False}))
    value = strict.route(f, odd, live).header()
    assert all(0x20 <= b < 0x7F for b in value) and b"line1??line2 ?" in value  # stays a legal header value
    up = build_snapshot(cfg, telemetry(cfg, version=3))
    assert names(up, router.route(f, up, live))[0] == "near-a"


def test_failing_site_cools_down_then_is_retried():
    cfg = fleet(site("near-a", "near"), site("far-a", "far"))
    clock = Clock()
    router, snap, live = setup(cfg, telemetry(cfg), fail_threshold=3, cooldown_s=2.0, clock=clock)
    f = RequestFeatures(model="m", region="near")
    for _ in range(2):
        live.started(0)
        live.finished(0, ok=False)
    assert names(snap, router.route(f, snap, live))[0] == "near-a"  # two failures: still tried
    live.started(0)
    live.finished(0, ok=False)
    assert names(snap, router.route(f, snap, live)) == ["far-a"]
    clock.t += 1.9
    assert names(snap, router.route(f, snap, live)) == ["far-a"]
    clock.t += 0.2  # cool-down over: retried
    assert names(snap, router.route(f, snap, live))[0] == "near-a"
    live.started(0)
    live.finished(0, ok=False)  # still failing: straight back into cool-down
    assert names(snap, router.route(f, snap, live)) == ["far-a"]
    clock.t += 2.1
    live.started(0)
    live.finished(0, ok=True)  # recovered
    live.started(0)
    live.finished(0, ok=False)  # one failure after a success does not cool it
    assert names(snap, router.route(f, snap, live))[0] == "near-a"


def test_every_site_cooling_down_gives_a_reason():
    cfg = fleet(site("a", "near"))
    router, snap, live = setup(cfg, fail_threshold=1, clock=Clock())
    live.started(0)
    live.finished(0, ok=False)
    d = router.route(RequestFeatures(model="m"), snap, live)
    assert d.ranked == [] and "a is cooling down after 1 failures" in d.reason
    assert d.reason.startswith("filter cooldown: ")


def test_session_sticks_to_its_backend_but_not_onto_a_hot_site():
    cfg = fleet(site("a", "near"), site("b", "near"))
    router, snap, live = setup(cfg, telemetry(cfg))
    f = RequestFeatures(model="m", region="near", session="s1")
    assert router.route(f, snap, live).ranked[0] == 0  # exact tie: first in config order
    live.remember_session("s1", 1)
    d = router.route(f, snap, live)
    assert d.ranked[0] == 1
    assert parse_header(d.header())["affinity"] == "1.000"
    other = router.route(RequestFeatures(model="m", region="near", session="s2"), snap, live)
    assert other.ranked[0] == 0
    # b runs hot (7 of 8 slots = 0.875 > 0.85): affinity no longer holds the session there.
    hot = build_snapshot(cfg, telemetry(cfg, version=2, b={"num_requests_running": 7}))
    d = router.route(f, hot, live)
    assert d.ranked[0] == 0
    assert d.axes(d.ranked.index(1))["affinity"] == 0.0


def test_session_learned_by_the_controller_is_followed():
    cfg = fleet(site("a", "near"), site("b", "near"), site("c", "near"))
    router, snap, live = setup(cfg, telemetry(cfg, sessions={"s9": "c", "s8": "gone"}))
    assert dict(snap.session_backend) == {"s9": 2} and "s8" not in snap.session_backend
    assert router.route(RequestFeatures(model="m", session="s9"), snap, live).ranked[0] == 2
    assert router.route(RequestFeatures(model="m", session="s8"), snap, live).ranked[0] == 0
    live.remember_session("s9", 1)  # the proxy's own memory is newer
    assert router.route(RequestFeatures(model="m", session="s9"), snap, live).ranked[0] == 1


def test_per_request_policy_changes_the_winner():
    cfg = fleet(site("fast-dear", "near", cost=1.2, prefill_ms=15), site("slow-cheap", "near", cost=0.2, prefill_ms=60))
    router, snap, live = setup(cfg, telemetry(cfg))
    f = RequestFeatures(model="m", region="near", policy="latency-first")
    assert names(snap, router.route(f, snap, live))[0] == "fast-dear"
    f.policy = "cost-first"
    d = router.route(f, snap, live)
    assert names(snap, d)[0] == "slow-cheap" and d.policy == "cost-first"
    f.policy = "no-such"
    d = router.route(f, snap, live)
    assert d.ranked == [] and "unknown policy 'no-such'" in d.reason and "latency-first" in d.reason
    assert d.invalid  # the client's mistake, not the fleet's
    assert not router.route(RequestFeatures(model="gone"), snap, live).invalid
    assert d.header().startswith(b"policy=no-such;reason=")


def test_policies_can_be_replaced_while_running():
    cfg = fleet(site("fast-dear", "near", cost=1.2, prefill_ms=15), site("slow-cheap", "near", cost=0.2, prefill_ms=60))
    router, snap, live = setup(cfg, telemetry(cfg))
    f = RequestFeatures(model="m", region="near")
    assert names(snap, router.route(f, snap, live))[0] == "slow-cheap"  # balanced leans on cost here
    policies = dict(cfg.policies)
    policies["balanced"] = Policy("balanced", {"ttft": 1.0})
    router.set_policies(policies, "balanced")
    assert names(snap, router.route(f, snap, live))[0] == "fast-dear"
    with pytest.raises(ValueError, match="default policy 'nope'"):
        router.set_policies(policies, "nope")
    with pytest.raises(ValueError, match="at least one weight must be positive"):
        router.set_policies({"zero": Policy("zero", {"ttft": 0.0})}, "zero")


def test_default_policy_applies_when_the_request_names_none():
    cfg = fleet(site("a", "near"), default_policy="cost-first")
    router, snap, live = setup(cfg)
    assert router.route(RequestFeatures(model="m"), snap, live).policy == "cost-first"


def test_ties_are_broken_by_config_order_every_time():
    cfg = fleet(*(site(f"s{i}", "near") for i in range(5)))
    router, snap, live = setup(cfg, telemetry(cfg))
    for _ in range(3):
        assert router.route(RequestFeatures(model="m", region="near"), snap, live).ranked == [0, 1, 2, 3, 4]


def test_slo_prefers_sites_predicted_to_meet_it_and_is_soft_when_none_can():
    cfg = fleet(site("near-dear", "near", cost=1.2), site("far-cheap", "far", cost=0.2))
    router, snap, live = setup(cfg, telemetry(cfg))
    f = RequestFeatures(model="m", region="near", policy="cost-first")
    assert names(snap, router.route(f, snap, live))[0] == "far-cheap"
    f.slo_ttft_ms = 45.0  # near: 25 ms prefill + 2 ms RTT; far: 25 + 60
    d = router.route(f, snap, live)
    assert names(snap, d) == ["near-dear", "far-cheap"] and d.slo_met == 1
    assert b"slo=missed" not in d.header(0) and d.header(1).endswith(b";slo=missed")
    f.slo_ttft_ms = 5.0  # nobody can: still served, best predicted first
    d = router.route(f, snap, live)
    assert d.reason == "" and names(snap, d) == ["near-dear", "far-cheap"] and d.slo_met == 0
    assert d.header(0).endswith(b";slo=missed")


def test_observed_ttft_moves_the_prediction():
    cfg = fleet(site("a", "near"), site("b", "near"))
    router, snap, live = setup(cfg, telemetry(cfg))
    f = RequestFeatures(model="m", region="near", policy="latency-first")
    assert router.route(f, snap, live).ranked[0] == 0
    live.first_byte(0, 900.0)  # a is slow in practice, whatever its queue says
    d = router.route(f, snap, live)
    assert d.ranked[0] == 1
    assert d.axes(d.ranked.index(0))["predicted_ttft_ms"] == pytest.approx((25 * 1 + 2 + 900) / 2)


def test_ttft_observed_from_the_clients_region_is_used_for_that_region():
    cfg = fleet(site("a", "mid"), site("b", "mid"))
    # Clients in "near" see a slow (say, a congested path); clients in "far" see it fast.
    tele = telemetry(cfg, a={"ttft_ms_by_region": {"near": 800.0, "far": 20.0}})
    router, snap, live = setup(cfg, tele)
    near = router.route(RequestFeatures(model="m", region="near", policy="latency-first"), snap, live)
    far = router.route(RequestFeatures(model="m", region="far", policy="latency-first"), snap, live)
    assert near.ranked[0] == 1 and far.ranked[0] == 0
    assert near.axes(near.ranked.index(0))["predicted_ttft_ms"] == pytest.approx((25 + 30) / 2 + 800 / 2)
    live.first_byte(0, 5.0)  # the proxy's own mixed-region figure does not override the regional one
    assert router.route(RequestFeatures(model="m", region="near", policy="latency-first"), snap, live).ranked[0] == 1


def test_header_parses_back_to_the_scores_that_ranked():
    cfg = fleet(site("a", "near", cost=0.3), site("b", "far", cost=0.9), site("c", "mid", cost=0.5))
    tele = telemetry(cfg, a={"num_requests_running": 5, "gpu_cache_usage_perc": 0.4, "power_draw_watts": 2500},
                     b={"error_rate": 0.2})
    router, snap, live = setup(cfg, tele)
    d = router.route(RequestFeatures(model="m", region="near", policy="balanced"), snap, live)
    scores = []
    for pos in range(len(d.ranked)):
        h = parse_header(d.header(pos))
        assert list(h) == ["policy", "score", *AXES]
        assert h["policy"] == "balanced"
        values = {k: float(v) for k, v in h.items() if k != "policy"}
        assert all(0.0 <= v <= 1.0 for v in values.values())
        weights = cfg.policies["balanced"].weights
        assert values["score"] == pytest.approx(sum(weights[a] * values[a] for a in AXES), abs=3e-3)
        scores.append(values["score"])
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(IndexError):
        d.header(len(d.ranked))


def test_snapshot_from_config_alone_and_from_partial_telemetry():
    cfg = fleet(site("a", "near"), site("b", "far"))
    snap = build_snapshot(cfg)
    assert snap.names == ("a", "b") and snap.version == 0 and snap.healthy.all()
    assert snap.addresses == ("127.0.0.1:1", "127.0.0.1:1")
    with pytest.raises(ValueError):
        snap.healthy[0] = False  # read-only: the fast path shares it
    t = telemetry(cfg, version=7, b={"healthy": False})
    t.backends.add(name="stranger", healthy=False)
    del t.backends[0]  # a is missing from this scrape: healthy, scored from LiveStats
    snap = build_snapshot(cfg, t)
    assert snap.version == 7 and snap.healthy.tolist() == [True, False] and not snap.has_metrics[0]


def test_live_stats_of_the_wrong_size_is_a_clear_error():
    cfg = fleet(site("a", "near"), site("b", "far"))
    router, snap, _ = setup(cfg)
    with pytest.raises(ValueError, match="LiveStats has 3 backends but the snapshot has 2"):
        router.route(RequestFeatures(), snap, LiveStats(3))


def test_large_fleet_returns_the_top_candidates_in_order():
    sites = [site(f"s{i}", ("near", "far", "mid")[i % 3], cost=0.1 + (i % 17) / 10) for i in range(600)]
    cfg = fleet(*sites)
    router, snap, live = setup(cfg, telemetry(cfg))
    d = router.route(RequestFeatures(model="m", region="far"), snap, live)
    assert len(d.ranked) == router.max_ranked
    scores = [d.axes(p)["score"] for p in range(len(d.ranked))]
    assert scores == sorted(scores, reverse=True)
    small = Router(cfg, max_ranked=600).route(RequestFeatures(model="m", region="far"), snap, live)
    assert small.ranked[: router.max_ranked] == d.ranked  # argpartition path agrees with a full sort
