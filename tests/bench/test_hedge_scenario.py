"""The hedging scenario's parts: a seeded trace, proxy configs that differ only in hedging, the plot."""
from fastpath.bench import hedge_scenario as hs


def test_trace_is_seeded_and_poisson_over_the_duration():
    a = hs.make_hedge_trace(7, 5.0, rate=20.0)
    assert a == hs.make_hedge_trace(7, 5.0, rate=20.0) and a != hs.make_hedge_trace(8, 5.0, rate=20.0)
    assert 60 <= len(a) <= 140 and all(0 < x.t < 5.0 for x in a)
    assert {(x.region, x.model) for x in a} == {(hs.REGION, hs.MODEL)}


def test_the_two_proxies_differ_only_in_hedging_and_their_ports(tmp_path):
    cfg, files = hs._configs(40000, tmp_path)
    assert sorted(b.name for b in cfg.backends) == sorted(hs.SITES) and hs.SLOW_SITE in hs.SITES
    (p_off, off), (p_on, on) = files.values()
    assert p_off.exists() and p_on.exists()
    assert not off.hedge.enabled and on.hedge.enabled and on.hedge.after == "auto"
    assert off.proxy.listen != on.proxy.listen and off.proxy.metrics_listen != on.proxy.metrics_listen
    assert [b.address for b in off.backends] == [b.address for b in on.backends] == [b.address for b in cfg.backends]
    for pname, _ in hs.ROUTINGS.values():
        assert pname in off.policies and pname in on.policies
    assert off.policies["cost-only"].weights["ttft"] == 0.0


def test_plot_shows_the_hedge_rows_only(tmp_path):
    rows = [{"layout": "hedge", "policy": f"r, {v}", "ttft_p50_ms": 50.0, "ttft_p99_ms": p99, "hedged_share": share,
             "requests": 100, "slow_site": hs.SLOW_SITE, "fault": hs.STALL}
            for v, p99, share in (("no hedging", 1500.0, 0.0), ("hedging", 300.0, 0.08))]
    path = hs.hedge_plot({"fleet": {"rows": rows + [{"layout": "chat", "policy": "x", "ttft_p50_ms": 1.0}]}}, tmp_path)
    assert path is not None and path.stat().st_size > 10_000
    assert hs.hedge_plot({"fleet": {"rows": rows[:0]}}, tmp_path) is None
