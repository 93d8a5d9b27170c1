"""The proxy's own observations: in-flight counts, cool-down, sessions, the change log."""
from __future__ import annotations

import pytest

from fastpath.router import LiveStats, RequestFeatures, Router, build_snapshot
from fastpath.router import live as live_module

from .fleets import fleet, site


def test_inflight_counts_up_and_down_and_never_below_zero():
    live = LiveStats(2)
    live.started(1)
    live.started(1)
    live.finished(1, True)
    live.finished(1, True)
    live.finished(1, True)  # a stray end (e.g. a refused connect) must not go negative
    assert list(live.inflight) == [0.0, 0.0]


def test_first_byte_keeps_an_ewma_and_ignores_nonsense():
    live = LiveStats(1)
    live.first_byte(0, 100.0)
    assert live.ttft_ewma_ms[0] == 100.0
    live.first_byte(0, 200.0)
    assert live.ttft_ewma_ms[0] == pytest.approx(100.0 + live_module.TTFT_ALPHA * 100.0)
    before = live.ttft_ewma_ms[0]
    for bad in (float("nan"), float("inf"), -5.0):
        live.first_byte(0, bad)
    assert live.ttft_ewma_ms[0] == before


def test_cool_down_expires_and_the_count_returns_to_zero():
    t = [0.0]
    live = LiveStats(3, fail_threshold=2, cooldown_s=1.0, clock=lambda: t[0])
    for i in (0, 2):
        live.finished(i, False)
        live.finished(i, False)
    assert live.n_cooling == 2 and live.cooling().tolist() == [True, False, True]
    t[0] = 1.5
    assert live.cooling() is None and live.n_cooling == 0
    assert live.consecutive_failures[0] == 2  # remembered: the next failure cools it again
    live.finished(0, False)
    assert live.cooling().tolist() == [True, False, False]


def test_sessions_are_bounded_and_most_recent_survive(monkeypatch):
    monkeypatch.setattr(live_module, "MAX_SESSIONS", 3)
    live = LiveStats(2)
    for s in ("a", "b", "c"):
        live.remember_session(s, 0)
    live.remember_session("a", 1)  # refreshed: now the most recent
    live.remember_session("d", 1)  # evicts the oldest, b
    assert live.sessions == {"c": 0, "a": 1, "d": 1}


def test_router_stays_correct_when_the_change_log_is_cut(monkeypatch):
    monkeypatch.setattr(live_module, "CHANGE_LOG_MAX", 8)
    cfg = fleet(site("a", "near", slots=2), site("b", "near", slots=2))
    router = Router(cfg)
    snap = build_snapshot(cfg)
    live = LiveStats(2)
    f = RequestFeatures(model="m", region="near")
    assert router.route(f, snap, live).ranked[0] == 0
    for _ in range(20):  # more changes than the log holds: the router must recompute, not miss them
        live.started(0)
    assert live.changed_since(0) is None
    d = router.route(f, snap, live)
    assert d.ranked[0] == 1
    assert d.axes(d.ranked.index(0))["capacity"] == pytest.approx(0.5)  # a is full: no free slots


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="at least one backend"):
        LiveStats(0)
    with pytest.raises(ValueError, match="fail_threshold"):
        LiveStats(2, fail_threshold=0)
