"""Properties over random fleets, telemetry and proxy state: filters hold, scores stay in [0, 1],
the ranking follows the scores, and the incremental load figures equal a full recompute."""
from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.config import AXES
from fastpath.gen import control_pb2
from fastpath.router import LiveStats, RequestFeatures, Router, build_snapshot
from fastpath.router.load import LoadState
from fastpath.router.prefix import prompt_blocks

from .fleets import fleet, site

REGIONS = ["near", "far", "mid"]
MODELS = ["m1", "m2", "m3"]
ODD = st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 1e308])
VALUE = st.one_of(st.floats(0, 50, allow_nan=False), ODD)
FRACTION = st.one_of(st.floats(0, 1), ODD)


@st.composite
def fleets(draw):
    n = draw(st.integers(1, 10))
    sites = [
        site(f"s{i}", draw(st.sampled_from(REGIONS)), cost=draw(st.floats(0, 3)),
             models=tuple(draw(st.lists(st.sampled_from(MODELS), min_size=1, max_size=3, unique=True))),
             slots=draw(st.integers(1, 16)), prefill_ms=draw(st.floats(0, 200)), power=draw(st.sampled_from([0, 3000])))
        for i in range(n)
    ]
    return fleet(*sites, affinity_max_utilisation=draw(st.floats(0, 1)))


@st.composite
def telemetries(draw, config):
    if draw(st.booleans()):
        return None
    t = control_pb2.FleetTelemetry(version=draw(st.integers(0, 2**40)))
    for b in config.backends:
        if draw(st.integers(0, 4)) == 0:
            continue  # not in this scrape
        t.backends.add(
            name=b.name, healthy=draw(st.integers(0, 5)) > 0, has_metrics=draw(st.booleans()),
            num_requests_waiting=draw(VALUE), num_requests_running=draw(VALUE),
            gpu_cache_usage_perc=draw(FRACTION), power_draw_watts=draw(st.one_of(st.floats(0, 9000), ODD)),
            power_budget_watts=draw(st.one_of(st.just(0.0), st.floats(0, 9000), ODD)),
            ttft_ms_observed=draw(st.one_of(st.just(0.0), VALUE)), error_rate=draw(FRACTION),
            max_num_seqs=draw(st.one_of(st.just(0.0), VALUE)),
            ttft_ms_by_region=draw(st.dictionaries(st.sampled_from([*REGIONS, "elsewhere"]),
                                                   st.one_of(st.just(0.0), VALUE), max_size=3)),
        )
    for k in range(draw(st.integers(0, 3))):
        t.session_backend[f"s{k}"] = draw(st.sampled_from([b.name for b in config.backends] + ["gone"]))
    return t


OPS = st.lists(st.tuples(st.sampled_from(["start", "byte", "ok", "fail", "session"]), st.integers(0, 2**16),
                          st.one_of(st.floats(0, 2000), ODD)), max_size=40)


def live_ops(draw, live: LiveStats, n: int) -> None:
    """Applies a random sequence of proxy events (one draw: hypothesis draws are not cheap)."""
    for op, k, ms in draw(OPS):
        i = k % n
        if op == "start":
            live.started(i)
        elif op == "byte":
            live.first_byte(i, ms)
        elif op == "session":
            live.remember_session(f"s{k % 5}", i)
        else:
            live.finished(i, op == "ok")


PROMPTS = [prompt_blocks(b"system " * 300 + b"user %d " % k * 200, "m1", 64) for k in range(3)]
features = st.builds(
    RequestFeatures,
    model=st.sampled_from(["", *MODELS, "unknown"]),
    region=st.sampled_from(["", *REGIONS, "elsewhere"]),
    session=st.sampled_from(["", "s0", "s1", "s2", "s9"]),
    policy=st.sampled_from(["", "balanced", "latency-first", "cost-first"]),
    slo_ttft_ms=st.one_of(st.just(0.0), st.floats(1, 500)),
    max_cost=st.one_of(st.just(0.0), st.floats(0.01, 3)),
    allow_regions=st.one_of(st.just(()), st.lists(st.sampled_from(REGIONS), min_size=1, unique=True).map(
        lambda r: tuple(sorted(r)))),
    # Prompts of a few conversations that share their openings, cut at any block.
    prompt_blocks=st.builds(lambda p, k: PROMPTS[p][:k], st.integers(0, len(PROMPTS) - 1), st.integers(0, 12)),
)


@given(st.data())
@settings(max_examples=100, deadline=None)
def test_random_fleets_respect_filters_and_score_in_unit_range(data):
    config = data.draw(fleets())
    snap = build_snapshot(config, data.draw(telemetries(config)))
    n = snap.n
    live = LiveStats(n, fail_threshold=2, clock=lambda: 0.0)  # cool-downs never expire in this test
    router = Router(config)
    for _ in range(3):
        live_ops(data.draw, live, n)
        f = data.draw(features)
        d = router.route(f, snap, live)
        allowed = [
            i for i in range(n)
            if (not f.model or f.model in config.backends[i].models)
            and (snap.healthy[i] or d.panic) and not live.is_cooling(i)
            and (not f.allow_regions or config.backends[i].region in f.allow_regions)
            and (f.max_cost == 0 or config.backends[i].cost_per_1k_tokens <= f.max_cost)
        ]
        assert set(d.ranked) <= set(allowed)
        assert len(d.ranked) == min(len(allowed), router.max_ranked)
        assert len(set(d.ranked)) == len(d.ranked)
        if not d.ranked:
            assert d.reason
            assert d.header().startswith(b"policy=")
            continue
        assert d.reason == ""
        scores = []
        for pos in range(len(d.ranked)):
            v = d.axes(pos)
            for axis in ("score", *AXES):
                assert 0.0 <= v[axis] <= 1.0, (axis, v)
            assert v["predicted_ttft_ms"] >= 0 and math.isfinite(v["predicted_ttft_ms"])
            scores.append(v["score"])
            header = dict(p.split("=", 1) for p in d.header(pos).decode("ascii").split(";"))
            assert [k for k in header if k not in ("slo", "prefix", "panic", "explore")] == ["policy", "score", *AXES]
            if d.explain is not None and d.explain.total:
                matched, total = map(int, header["prefix"].split("/"))
                assert 0 <= matched <= total == len(f.prompt_blocks)
        if d.explore:
            continue  # an explored backend goes first whatever its score
        if f.slo_ttft_ms == 0:
            assert d.slo_met == -1
            assert all(a >= b - 1e-6 for a, b in itertools.pairwise(scores)), scores
        else:
            met = d.slo_met
            assert 0 <= met <= len(d.ranked)
            preds = [d.axes(p)["predicted_ttft_ms"] for p in range(len(d.ranked))]
            assert all(p <= f.slo_ttft_ms for p in preds[:met])
            assert all(p > f.slo_ttft_ms for p in preds[met:])
            assert all(a >= b - 1e-6 for a, b in itertools.pairwise(scores[:met]))
            # Misses by predicted TTFT (to float precision: SLO_MISS + pred rounds at 1e6 ms scale).
            assert all(a <= b * (1 + 1e-12) + 1e-6 for a, b in itertools.pairwise(preds[met:])), preds[met:]


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_row_by_row_updates_equal_a_full_recompute(data):
    config = data.draw(fleets())
    snap = build_snapshot(config, data.draw(telemetries(config)))
    live = LiveStats(snap.n)
    live_ops(data.draw, live, snap.n)
    state = LoadState(snap, live)
    for _ in range(3):
        live_ops(data.draw, live, snap.n)
        state.refresh()
        incremental = {k: getattr(state, k).copy() for k in ("model", "a", "c", "capacity", "health", "util")}
        state.recompute()
        for k, v in incremental.items():
            np.testing.assert_allclose(v, getattr(state, k), rtol=1e-12, atol=1e-12, err_msg=k)
            assert np.isfinite(v).all(), k
        for k in ("model", "a", "c", "capacity", "health", "util"):
            assert getattr(state, k + "_l") == getattr(state, k).tolist(), k  # the small-fleet mirrors


@given(st.data())
@settings(max_examples=100, deadline=None)
def test_small_fleet_python_path_and_numpy_path_decide_alike(data):
    config = data.draw(fleets())
    snap = build_snapshot(config, data.draw(telemetries(config)))
    live = LiveStats(snap.n, fail_threshold=2, clock=lambda: 0.0)
    python_path = Router(config, scalar_max=10**6)
    numpy_path = Router(config, scalar_max=0)
    for _ in range(3):
        live_ops(data.draw, live, snap.n)
        f = data.draw(features)
        a, b = python_path.route(f, snap, live), numpy_path.route(f, snap, live)
        assert (a.ranked, a.policy, a.reason, a.slo_met) == (b.ranked, b.policy, b.reason, b.slo_met)
        for pos in range(len(a.ranked)):
            assert a.header(pos) == b.header(pos)


@pytest.mark.parametrize("seed", range(4))
def test_large_fleet_candidate_subset_decides_like_the_python_path(seed):
    """Large fleets score narrow request shapes on their candidates only; same decisions."""
    rnd = random.Random(seed)
    sites = [site(f"s{i}", rnd.choice(REGIONS), cost=rnd.uniform(0, 3),
                  models=tuple(rnd.sample(MODELS, rnd.randint(1, 2))), slots=rnd.randint(1, 16))
             for i in range(320)]
    config = fleet(*sites)
    t = control_pb2.FleetTelemetry(version=1)
    for b in config.backends:
        t.backends.add(name=b.name, healthy=rnd.random() > 0.1, has_metrics=True,
                       num_requests_running=rnd.randint(0, 20), gpu_cache_usage_perc=rnd.random(),
                       ttft_ms_by_region={"near": rnd.choice([0.0, rnd.uniform(10, 500)])})
        if rnd.random() < 0.05:
            t.session_backend[f"s{rnd.randrange(5)}"] = b.name
    snap = build_snapshot(config, t)
    live = LiveStats(snap.n, fail_threshold=2, clock=lambda: 0.0)
    subset, python_path = Router(config, scalar_max=0), Router(config, scalar_max=10**6)
    used_subset = 0
    for _ in range(60):
        for _ in range(5):
            i = rnd.randrange(snap.n)
            rnd.choice([live.started, lambda i: live.finished(i, rnd.random() < 0.7),
                        lambda i: live.first_byte(i, rnd.uniform(5, 900)),
                        lambda i: live.remember_session(f"s{rnd.randrange(5)}", i)])(i)
        f = RequestFeatures(model=rnd.choice(MODELS), region=rnd.choice(REGIONS), session=f"s{rnd.randrange(8)}",
                            allow_regions=(rnd.choice(REGIONS),), max_cost=rnd.choice([0.0, 1.5]),
                            slo_ttft_ms=rnd.choice([0.0, 80.0, 300.0]),
                            prompt_blocks=PROMPTS[rnd.randrange(3)][:rnd.choice([0, 3, 6, 12])])
        a, b = subset.route(f, snap, live), python_path.route(f, snap, live)
        entry = subset._entries[(subset.default_policy, f.region, f.model, f.allow_regions, f.max_cost)]
        used_subset += entry.sub is not None
        assert (a.ranked, a.reason, a.slo_met) == (b.ranked, b.reason, b.slo_met)
        for pos in range(len(a.ranked)):
            assert a.header(pos) == b.header(pos)
    assert used_subset > 30  # the narrow shapes really took the subset path
