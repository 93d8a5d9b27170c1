"""Exploration: a backend nobody has observed (new, or back from cool-down or from unhealthy)
gets a bounded share of calls until it is observed, then competes on what was observed."""
from __future__ import annotations

from fastpath.router import LiveStats, RequestFeatures, Router, build_snapshot

from .fleets import fleet, site, telemetry


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def cold_and_far():
    """A near backend whose prior says slow (never observed) and a far one observed answering."""
    return fleet(site("near-cold", "near", prefill_ms=400.0), site("far-warm", "far", prefill_ms=20.0))


def test_a_cold_nearer_backend_gets_traffic_within_a_bounded_number_of_requests():
    cfg = cold_and_far()
    router = Router(cfg, explore_every=10)
    live = LiveStats(2)
    snap = build_snapshot(cfg, telemetry(cfg))
    live.first_byte(1, 90.0)  # the far one was observed: 90 ms
    f = RequestFeatures(model="m", region="near")
    picks = []
    for _ in range(10):
        d = router.route(f, snap, live)
        picks.append(d.ranked[0])
        if d.explore:
            assert b";explore=1" in d.header() and d.ranked[0] == 0
    assert picks.count(0) == 1 and picks[-1] == 0  # one call in ten explored it, no more
    live.first_byte(0, 5.0)  # it answered in 5 ms
    picks = [router.route(f, snap, live).ranked[0] for _ in range(20)]
    assert picks.count(0) == 20  # observed fast and near: it takes the traffic
    assert live.n_unobserved == 0


def test_without_exploration_the_cold_backend_is_never_tried():
    cfg = cold_and_far()
    router, live = Router(cfg, explore_every=0), LiveStats(2)
    snap = build_snapshot(cfg, telemetry(cfg))
    live.first_byte(1, 90.0)
    assert {router.route(RequestFeatures(model="m", region="near"), snap, live).ranked[0] for _ in range(50)} == {1}


def test_a_recovered_backend_is_explored_again():
    cfg = cold_and_far()
    clock = Clock()
    router = Router(cfg, explore_every=5)
    live = LiveStats(2, fail_threshold=1, cooldown_s=1.0, clock=clock)
    snap = build_snapshot(cfg, telemetry(cfg))
    live.first_byte(0, 300.0)
    live.first_byte(1, 90.0)
    f = RequestFeatures(model="m", region="near")
    assert all(router.route(f, snap, live).ranked[0] == 1 for _ in range(10))  # both observed: no exploring
    live.started(0)
    live.finished(0, ok=False)  # cools down
    clock.t += 1.5  # ... and comes back: what it was observed doing is stale
    picks = [router.route(f, snap, live).ranked[0] for _ in range(5)]
    assert picks.count(0) == 1
    # Back from unhealthy in the telemetry: likewise.
    live.first_byte(0, 300.0)
    down = build_snapshot(cfg, telemetry(cfg, version=2, near_cold={"healthy": False}))
    assert all(router.route(f, down, live).ranked == [1] for _ in range(5))
    up = build_snapshot(cfg, telemetry(cfg, version=3))
    assert [router.route(f, up, live).ranked[0] for _ in range(5)].count(0) == 1


def test_exploring_keeps_the_slo_order():
    """With an SLO only a backend predicted to meet it is explored."""
    cfg = cold_and_far()
    router, live = Router(cfg, explore_every=1), LiveStats(2)
    snap = build_snapshot(cfg, telemetry(cfg))
    live.first_byte(1, 90.0)
    d = router.route(RequestFeatures(model="m", region="near", slo_ttft_ms=200.0), snap, live)
    assert d.ranked[0] == 1 and not d.explore  # the cold one is predicted over 400 ms
