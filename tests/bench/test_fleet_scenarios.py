"""Fleet scenarios: the seeded trace and the baseline policies' choices."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.bench import fleet_scenarios as fs
from fastpath.config import load_config


def test_trace_is_seeded_and_bursts_in_the_middle_third():
    cfg = load_config()
    a = fs.make_trace(set(cfg.models), 7, 9.0, base_rate=20, burst_rate=200, max_tokens=8)
    b = fs.make_trace(set(cfg.models), 7, 9.0, base_rate=20, burst_rate=200, max_tokens=8)
    assert a == b and a
    assert fs.make_trace(set(cfg.models), 8, 9.0, 20, 200, 8) != a
    thirds = [sum(1 for x in a if i * 3 <= x.t < (i + 1) * 3) for i in range(3)]
    assert thirds[1] > 3 * max(thirds[0], thirds[2])
    assert all(x.model in cfg.models and x.region in cfg.rtt_ms for x in a)


@settings(max_examples=30)
@given(seed=st.integers(0, 10**6))
def test_baselines_only_pick_sites_that_serve_the_model(seed):
    cfg = load_config()
    trace = fs.make_trace(set(cfg.models), seed, 2.0, 20, 50, 4)
    for name in fs.BASELINES:
        ch = fs.make_chooser(name, cfg, 300)
        for a in trace:
            i = ch.choose(a)
            assert i is not None and a.model in cfg.backends[i].models


def test_proximity_picks_the_nearest_and_least_loaded_spreads():
    cfg = load_config()
    a = fs.Arrival(0.0, "eu-west", "mistral-7b", 8, ())
    near = fs.make_chooser("proximity-only", cfg, 300).choose(a)
    assert cfg.backends[near].region == "eu-west"
    ll = fs.make_chooser("least-loaded", cfg, 300)
    picks = []
    for _ in range(6):
        i = ll.choose(a)
        ll.started(i)
        picks.append(i)
    assert len(set(picks)) > 1  # in-flight work moves the next request elsewhere


def test_central_layout_moves_every_site_to_one_region():
    cfg = fs.central_layout(load_config())
    assert {b.region for b in cfg.backends} == {fs.CENTRAL_REGION}


def test_replay_on_a_real_fleet_accounts_tokens_cost_and_slo():
    import asyncio

    from fastpath.config import parse_config, with_ports
    from fastpath.sim.fleet import FleetProcess

    base = load_config()
    cfg = with_ports(base, fs._free_base(3 + 2 * len(base.backends)))
    sites = ("use1-a100", "use1-l4")
    two = parse_config({**cfg.raw, "backends": [b for b in cfg.raw["backends"] if b["name"] in sites]}, "two sites")
    trace = [a for a in fs.make_trace(set(cfg.models), 3, 0.4, 20, 20, max_tokens=3) if a.model in two.models]
    assert trace
    with FleetProcess(two):
        row = asyncio.run(fs.replay(two, trace, "round-robin", slo_ms=10_000, deadline_s=10, tag="t"))
    assert row["requests"] == len(trace) and row["shed"] == 0, row["first_errors"]
    assert row["tokens"] == 3 * len(trace)
    assert row["within_slo_share"] == 1.0
    prices = {b.name: b.cost_per_1k_tokens for b in two.backends}
    expected = sum(prices[n] * c * 3 for n, c in row["requests_by_site"].items()) / (3 * len(trace))
    assert abs(row["cost_per_1k_tokens"] - expected) < 1e-3
    assert row["ttft_p50_ms"] > 0


def test_chat_trace_grows_each_conversation_over_shared_system_prompts():
    cfg = load_config()
    trace = fs.make_chat_trace(set(cfg.models), 5, 4.0, rate=20, conversations=6, systems=2)
    assert trace == fs.make_chat_trace(set(cfg.models), 5, 4.0, rate=20, conversations=6, systems=2)
    by_conv: dict[int, list[str]] = {}
    for a in trace:
        by_conv.setdefault(a.conversation, []).append(a.prompt)
        assert len(a.prompt) <= fs.MAX_PROMPT_CHARS and a.model in cfg.models
    for prompts in by_conv.values():
        for earlier, later in zip(prompts, prompts[1:]):
            assert later.startswith(earlier[: len(earlier) - 200]) and len(later) >= len(earlier) - 200
    systems = {p[: p.index("]") + 1] for ps in by_conv.values() for p in ps}
    assert len(systems) == 2  # a few long system prompts shared by every conversation


def test_chat_choosers_serve_the_model_and_cache_aware_ones_stick_to_a_prefix():
    cfg = load_config()
    trace = fs.make_chat_trace(set(cfg.models), 3, 3.0, rate=20, conversations=4, systems=2)
    for name in fs.CHAT_POLICIES:
        ch = fs.make_chooser(name, cfg, 300)
        picks: dict[int, list[int]] = {}
        for a in trace:
            i = ch.choose(a)
            assert i is not None and a.model in cfg.backends[i].models
            picks.setdefault(a.conversation, []).append(i)
        if name in ("session-only", "sglang-cache-aware", "five-axis/prefix"):
            # Nothing in flight: a conversation keeps going where its prefix is (exploration aside).
            for conv, sites in picks.items():
                assert max(sites.count(s) for s in set(sites)) >= len(sites) - 2, (name, conv, sites)


def test_chat_plot_shows_every_chat_row(tmp_path):
    from fastpath.bench import plots

    rows = [{"layout": "chat", "policy": p, "ttft_p50_ms": 10.0 + k, "ttft_p99_ms": 50.0, "cost_per_1k_tokens": 0.5,
             "cache_hit_share": 0.1 * k} for k, p in enumerate(fs.CHAT_POLICIES)]
    path = plots.chat_prefix({"fleet": {"rows": rows}}, tmp_path)
    assert path is not None and path.stat().st_size > 10_000
    assert plots.chat_prefix({"fleet": {"rows": []}}, tmp_path) is None


def test_substitute_trace_asks_for_the_grouped_model_from_a_region_without_it():
    cfg = load_config()
    trace = fs.make_substitute_trace(cfg, 4, 3.0, rate=20)
    assert trace == fs.make_substitute_trace(cfg, 4, 3.0, rate=20) and trace
    assert {a.model for a in trace} == {fs.SUBSTITUTE_MODEL}
    regions = {a.region for a in trace}
    assert regions <= set(fs.SUBSTITUTE_REGIONS) and "eu-west" in regions
    # The embedded default declares the group, and eu-west has a site for a substitute but not for the model.
    groups = fs.substitute_groups(cfg)
    assert fs.SUBSTITUTE_MODEL in groups
    eu = [b for b in cfg.backends if b.region == "eu-west"]
    assert not any(fs.SUBSTITUTE_MODEL in b.models for b in eu)
    assert any(set(groups[fs.SUBSTITUTE_MODEL]) & set(b.models) for b in eu)


def test_substitute_groups_needs_a_region_the_substitute_covers_and_the_model_does_not():
    from fastpath.config import parse_config

    cfg = load_config()
    same = [{**b, "models": ["big", "small"]} for b in cfg.raw["backends"]]
    raw = {**cfg.raw, "backends": same, "model_groups": {"big": {"substitutes": ["small"]}}}
    assert fs.substitute_groups(parse_config(raw, "every site serves both")) == {}
    split = [{**b, "models": ["big"] if b["region"] == "us-east" else ["small"]} for b in cfg.raw["backends"]]
    raw = {**cfg.raw, "backends": split, "model_groups": {"big": {"substitutes": ["small"]}}}
    assert fs.substitute_groups(parse_config(raw, "split")) == {"big": ("small",)}


def test_substitute_plot_shows_both_rows(tmp_path):
    from fastpath.bench import plots

    rows = [{"layout": "substitute", "policy": p, "ttft_p50_ms": 20.0 + 60 * k, "ttft_p99_ms": 150.0,
             "cost_per_1k_tokens": 0.8 - 0.1 * k, "substitute_share": 0.6 * k,
             "served_models": {"llama-3-70b": 10} if not k else {"llama-3-70b": 4, "llama-3-8b": 6},
             "ttft_p50_by_region_ms": {"eu-west": 90.0 - 80 * k, "us-east": 10.0}, "requested_model": "llama-3-70b"}
            for k, p in enumerate(("fastpath/balanced", "fastpath/balanced+substitute"))]
    path = plots.substitute_region({"fleet": {"rows": rows}}, tmp_path)
    assert path is not None and path.stat().st_size > 10_000
    assert plots.substitute_region({"fleet": {"rows": [dict(rows[0], layout="chat")]}}, tmp_path) is None
    assert plots.fleet_policies({"fleet": {"rows": rows}}, tmp_path) is None  # not mixed into the policy plot


def test_substitute_scenario_through_the_proxy_switches_only_when_allowed():
    """Both rows through the real stack: without the header every call is served by the requested model;
    with it, eu-west's calls are served by the substitute at the eu-west site (the simulated sites
    refuse a model they do not serve, so a call that reached one un-rewritten would fail)."""
    rows = fs.measure_substitute(quick=True, seed=3, duration_s=0.8, rate=15)
    exact, sub = rows
    assert exact["policy"].endswith("balanced") and sub["policy"].endswith(fs.SUBSTITUTE_SUFFIX)
    for r in rows:
        assert r["shed"] == 0, r["first_errors"]
        assert r["layout"] == "substitute" and r["requests"] == exact["requests"] > 0
    assert exact["served_models"] == {fs.SUBSTITUTE_MODEL: exact["requests"]}
    assert exact["substitute_share"] == 0.0
    cfg = load_config()
    substitutes = fs.substitute_groups(cfg)[fs.SUBSTITUTE_MODEL]
    by_sub = sum(n for m, n in sub["served_models"].items() if m in substitutes)
    assert by_sub > 0 and sub["substitute_share"] == round(by_sub / sub["requests"], 4)
    eu_sites = {b.name for b in cfg.backends if b.region == "eu-west"}
    assert set(sub["requests_by_site"]) & eu_sites and not set(exact["requests_by_site"]) & eu_sites
