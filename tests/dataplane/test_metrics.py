"""The proxy's metrics: what the hot path records is what /metrics says, in prometheus_client's own reading."""
from __future__ import annotations

import math

from hypothesis import given, settings, strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fastpath.dataplane.metrics import DURATION_BUCKETS, MAX_SERIES, TTFT_BUCKETS, ProxyCollector, ProxyMetrics


def scrape(m: ProxyMetrics) -> dict:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ProxyCollector(m))
    return {f.name: f for f in text_string_to_metric_families(generate_latest(reg).decode())}


calls = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["m1", "m2"]), st.booleans(),
                           st.floats(0, 100, allow_nan=False), st.floats(0, 12, allow_nan=False)), max_size=60)


@settings(max_examples=60, deadline=None)
@given(calls)
def test_histogram_buckets_hold_every_value_at_or_below_their_bound(recorded) -> None:
    m = ProxyMetrics()
    m.backend_names = ["a", "b", "c"]
    for i, model, ok, duration, ttft in recorded:
        m.call_finished(i, model, ok, duration, ttft)
    fams = scrape(m)
    for fam, bounds, pick in (("gen_ai_server_request_duration_seconds", DURATION_BUCKETS, 3),
                              ("gen_ai_server_time_to_first_token_seconds", TTFT_BUCKETS, 4)):
        for s in fams[fam].samples:
            key = (s.labels["backend"], s.labels["gen_ai_request_model"], s.labels["status"])
            values = [c[pick] for c in recorded
                      if ("abc"[c[0]], c[1], "ok" if c[2] else "error") == key and (pick == 3 or c[4] > 0)]
            if s.name.endswith("_bucket"):
                le = math.inf if s.labels["le"] == "+Inf" else float(s.labels["le"])
                assert s.value == sum(v <= le for v in values), (fam, key, le)
            elif s.name.endswith("_count"):
                assert s.value == len(values) > 0
            elif s.name.endswith("_sum"):
                assert math.isclose(s.value, sum(values), rel_tol=1e-9, abs_tol=1e-9)


def test_counters_for_other_features_and_the_series_bound() -> None:
    m = ProxyMetrics()
    m.backend_names = ["a"]
    m.hedge("sent")
    m.hedge("won")
    m.shed("low", "queue full")
    m.budget_refused("retry")
    m.set_queue_depth("high", 4)
    m.flow_closed("kernel", 100, 5000)
    for i in range(MAX_SERIES + 10):  # a client inventing model names cannot grow the series without bound
        m.call_finished(0, f"model-{i}", True, 0.1, 0.01)
    fams = scrape(m)
    assert {s.labels["outcome"]: s.value for s in fams["fastpath_hedges"].samples} == {"sent": 1, "won": 1}
    assert fams["fastpath_sheds"].samples[0].labels == {"priority": "low", "reason": "queue full"}
    assert fams["fastpath_budget_refusals"].samples[0].value == 1
    assert fams["fastpath_queue_depth"].samples[0].value == 4
    assert {s.labels["path"]: s.value for s in fams["fastpath_flow_bytes"].samples} == {
        "python": 100, "kernel": 5000, "dpu": 0}
    models = {s.labels["gen_ai_request_model"] for s in fams["gen_ai_server_request_duration_seconds"].samples}
    assert len(models) == MAX_SERIES + 1 and "other" in models


def test_a_scrape_renders_a_copy_so_the_loop_may_go_on_counting() -> None:
    m = ProxyMetrics()
    m.backend_names = ["a"]
    m.call_finished(0, "m", True, 0.1, 0.01)
    m.hedge("sent")
    copy = m.frozen()
    for _ in range(5):  # what the loop records while another thread renders the copy
        m.call_finished(0, "m", True, 0.1, 0.01)
        m.hedge("sent")
    fams = scrape(copy)
    counts = [s.value for s in fams["gen_ai_server_request_duration_seconds"].samples if s.name.endswith("_count")]
    assert counts == [1] and fams["fastpath_hedges"].samples[0].value == 1
    assert [s.value for s in scrape(m)["fastpath_hedges"].samples] == [6]
