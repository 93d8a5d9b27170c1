"""TTFT hedging's pure parts: when an attempt is hedged, the hedge budget, the [router.hedge] table."""
from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastpath.config import ConfigError, load_config, parse_config
from fastpath.dataplane.hedging import HedgeBudget, hedge_delay_ms, hedged_trailer

ms = st.floats(0, 1e5, allow_nan=False)


@given(st.sampled_from(["slo", "predicted", "auto"]), st.floats(0.1, 10), ms, ms, ms, ms)
def test_a_hedge_is_never_earlier_than_min_ms(after, factor, min_ms, slo, pred, since):
    d = hedge_delay_ms(after, factor, min_ms, slo, pred, since)
    assert d == 0.0 or d >= max(min_ms, 1.0)
    assert (d == 0.0) == ((after == "slo" or not pred) and (after == "predicted" or not slo))  # 0 = no deadline
    assert math.isfinite(d)


@given(st.floats(0.1, 10), ms, ms, ms)
def test_auto_is_the_earlier_of_slo_and_prediction(factor, slo, pred, since):
    a = hedge_delay_ms("slo", factor, 0.0, slo, pred, since)
    b = hedge_delay_ms("predicted", factor, 0.0, slo, pred, since)
    c = hedge_delay_ms("auto", factor, 0.0, slo, pred, since)
    assert c == (min(x for x in (a, b) if x) if (a or b) else 0.0)


@pytest.mark.parametrize("after, slo, pred, since, want", [
    ("slo", 300.0, 10.0, 0.0, 300.0),       # the SLO, from the call's start
    ("slo", 300.0, 10.0, 120.0, 180.0),     # what is left of it when the attempt starts later
    ("slo", 0.0, 10.0, 0.0, 0.0),           # no SLO: not hedged
    ("predicted", 0.0, 40.0, 0.0, 120.0),   # 3 x predicted TTFT
    ("predicted", 300.0, 0.0, 0.0, 0.0),    # no prediction: not hedged
    ("auto", 300.0, 40.0, 0.0, 120.0),
    ("auto", 100.0, 40.0, 0.0, 100.0),
    ("auto", 0.0, 0.0, 0.0, 0.0),
    ("slo", 300.0, 0.0, 290.0, 50.0),       # floored at min_ms
])
def test_hedge_delay(after, slo, pred, since, want):
    assert hedge_delay_ms(after, 3.0, 50.0, slo, pred, since) == pytest.approx(want)


@given(st.floats(0, 100), st.floats(1, 20), st.integers(0, 2000))
def test_budget_caps_hedges_at_a_share_of_calls_plus_the_burst(percent, burst, calls):
    b = HedgeBudget(percent, burst)
    hedges = 0
    for _ in range(calls):
        b.earn()
        if b.spend():  # every call would like a hedge: the worst case, an overloaded fleet
            hedges += 1
    assert hedges <= percent / 100.0 * calls + burst + 1e-9


def test_budget_refills_as_calls_go_by():
    b = HedgeBudget(50.0, 1.0)
    assert b.spend() and not b.spend()
    b.earn()
    assert not b.spend()
    b.earn()
    assert b.spend()


def test_trailer_names_both_backends_and_the_wait():
    assert hedged_trailer(b"a", b"b", 151.6) == (b"x-fastpath-hedged", b"a -> b after 152 ms")


def _raw(hedge):
    raw = dict(load_config().raw)
    raw["router"] = {**raw.get("router", {}), "hedge": hedge}
    return raw


def test_hedge_table_is_read_and_off_by_default():
    assert not load_config().hedge.enabled
    h = parse_config(_raw({"enabled": True, "after": "predicted", "factor": 2.5, "budget_percent": 5})).hedge
    assert (h.enabled, h.after, h.factor, h.budget_percent) == (True, "predicted", 2.5, 5.0)


@pytest.mark.parametrize("hedge, words", [
    ({"after": "soon"}, "expected one of slo, predicted, auto"),
    ({"factor": 0}, "factor must be positive"),
    ({"budget_percent": 150}, "budget_percent within 0..100"),
    ({"enabeld": True}, "enabeld"),
])
def test_bad_hedge_table_says_what_is_wrong(hedge, words):
    with pytest.raises(ConfigError, match=words):
        parse_config(_raw(hedge))


def test_a_pushed_config_turns_hedging_on_and_off_and_an_unchanged_one_keeps_the_timers():
    from fastpath.dataplane.proxy import Proxy

    off = load_config()
    on = parse_config(_raw({"enabled": True}))
    proxy = Proxy(off)
    assert proxy.call_services.hedger is None
    proxy.apply_config(on)
    hedger = proxy.call_services.hedger
    assert hedger is not None
    proxy.apply_config(parse_config(_raw({"enabled": True})))
    assert proxy.call_services.hedger is hedger
    proxy.apply_config(parse_config(_raw({"enabled": True, "factor": 2.0})))
    assert proxy.call_services.hedger is not hedger and proxy.call_services.hedger.factor == 2.0
    proxy.apply_config(off)
    assert proxy.call_services.hedger is None


def test_an_abandoned_backend_is_not_failed_and_only_a_stalled_one_is_predicted_slower():
    from fastpath.router.live import LiveStats

    live = LiveStats(2)
    live.started(0)
    live.first_byte(0, 40.0)
    live.finished(0, True)
    for _ in range(10):  # late now and then, answering in between: estimate and health untouched
        live.started(0)
        live.abandoned(0, 300.0)
        live.started(0)
        live.first_byte(0, 40.0)
        live.finished(0, True)
    assert live.ttft_ewma_ms[0] == 40.0 and live.inflight[0] == 0.0
    for k in range(3):  # three in a row with no first byte: stalled; the third wait is folded in
        live.started(0)
        live.abandoned(0, 300.0)
        assert (live.ttft_ewma_ms[0] > 40.0) == (k == 2)
    assert live.consecutive_failures[0] == 0 and live.error_ewma[0] == 0.0 and not live.is_cooling(0)
    assert live.inflight[0] == 0.0
