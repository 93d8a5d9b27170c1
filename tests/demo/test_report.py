"""The demo's report: shares, cost and the spill-over story come from what clients saw."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fastpath.config import load_config
from fastpath.report import burst_summary, percentile, render_table, summarize
from fastpath.workload import Plan, RequestSpec, Result, plan_workload

CONFIG = load_config()


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=50), st.floats(0.01, 100))
def test_percentile_is_a_nearest_rank_value(values, q):
    p = percentile(values, q)
    assert p in values
    assert sum(v <= p for v in values) >= q / 100 * len(values) - 1e-9
    assert sum(v < p for v in values) < q / 100 * len(values) + 1e-9 or p == min(values)


def _result(i, region, model, backend, *, tokens=10, ok=True, phase="mixed", start=0.0, end=1.0, ttft=50.0):
    spec = RequestSpec(i, phase, region, model, True, tokens, "p")
    return Result(spec, ok=ok, backend=backend if ok else "", tokens=tokens if ok else 0, ttft_ms=ttft,
                  started_s=start, ended_s=end, error="" if ok else "UNAVAILABLE: down")


def test_cost_share_and_near_share_follow_the_config():
    rs = [
        _result(0, "us-east", "llama-3-8b", "use1-l4", tokens=10),
        _result(1, "us-east", "llama-3-8b", "use1-l4", tokens=30),
        _result(2, "us-east", "llama-3-8b", "usw2-h100", tokens=20),
        _result(3, "us-east", "llama-3-8b", "", ok=False),
    ]
    plan = Plan([], seed=0)
    s = summarize(CONFIG, plan, rs)
    row = s["rows"][0]
    assert (row["requests"], row["ok"], row["errors"]) == (4, 3, 1)
    price = {b.name: b.cost_per_1k_tokens for b in CONFIG.backends}
    expect = (40 * price["use1-l4"] + 20 * price["usw2-h100"]) / 1000
    assert abs(row["cost_usd"] - expect) < 1e-9
    assert abs(row["cost_per_1k_tokens"] - expect / 60 * 1000) < 1e-3
    assert row["sites"] == {"use1-l4": round(2 / 3, 3), "usw2-h100": round(1 / 3, 3)}
    assert row["near_share"] == round(2 / 3, 3)
    assert s["errors"] == {"UNAVAILABLE": 1}
    assert "UNAVAILABLE" in render_table(s)


def test_burst_story_counts_what_was_in_flight_when_the_first_request_spilled():
    plan = plan_workload(CONFIG, 120, 3)
    site = CONFIG.backend(plan.burst_site)
    rs = [_result(i, plan.burst_region, plan.burst_model, site.name, phase="burst", start=i * 0.01, end=5.0)
          for i in range(site.sim.slots)]
    rs.append(_result(99, plan.burst_region, plan.burst_model, "usw2-h100", phase="burst", start=0.5, end=5.0))
    b = burst_summary(CONFIG, plan, rs)
    assert b["in_flight_at_first_spill"] == site.sim.slots
    assert b["stayed"] == site.sim.slots and b["spilled"] == {"usw2-h100": 1}
    text = "\n".join(summarize(CONFIG, plan, rs)["observations"])
    assert f"until it had {site.sim.slots} requests in flight (100% of its {site.sim.slots} slots)" in text


def test_a_site_that_does_not_serve_the_model_is_called_out():
    rs = [_result(0, "eu-west", "llama-3-70b", "euw1-l4")]
    s = summarize(CONFIG, Plan([], seed=0), rs)
    assert s["wrong_model"] and any(o.startswith("WRONG") for o in s["observations"])
