"""The /metrics page: vLLM's names and labels, readable by a Prometheus text parser."""
from hypothesis import given
from hypothesis import strategies as st

from fastpath.sim.metrics import Histogram, ModelCounters, parse_prometheus_text, render

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)


@given(st.lists(names, min_size=1, max_size=4, unique=True), st.integers(0, 50), st.integers(0, 50),
       st.floats(0, 1), st.lists(st.floats(0, 20), max_size=20))
def test_render_parses_back(models, waiting, running, usage, ttfts):
    counters = {m: ModelCounters() for m in models}
    for v in ttfts:
        counters[models[0]].ttft.observe(v)
    text = render(site="s", models=tuple(models), waiting={models[0]: waiting}, running={models[-1]: running},
                  cache_usage=usage, counters=counters, power_draw=1500.0, power_budget=6000.0, slots=8,
                  kv_hits=1, kv_misses=2, fault="none")
    m = parse_prometheus_text(text)
    lab = lambda name: (("model_name", name),)  # noqa: E731
    assert m[("vllm:num_requests_waiting", lab(models[0]))] == waiting
    assert m[("vllm:num_requests_running", lab(models[-1]))] == running
    assert abs(m[("vllm:gpu_cache_usage_perc", lab(models[0]))] - usage) < 1e-5
    assert m[("fastpath_sim_max_num_seqs", ())] == 8
    assert m[("fastpath_sim_power_draw_watts", ())] == 1500
    assert m[("vllm:time_to_first_token_seconds_count", lab(models[0]))] == len(ttfts)
    inf = m[("vllm:time_to_first_token_seconds_bucket", tuple(sorted(lab(models[0]) + (("le", "+Inf"),))))]
    assert inf == len(ttfts)


@given(st.lists(st.floats(0, 20), max_size=50))
def test_histogram_buckets_are_cumulative(values):
    h = Histogram()
    for v in values:
        h.observe(v)
    counts = [float(line.rsplit(" ", 1)[1]) for line in h.lines("x", 'a="b"') if "_bucket" in line]
    assert counts == sorted(counts)
    assert counts[-1] == len(values)
    for le, c in zip(h.buckets, counts):
        assert c == sum(1 for v in values if v <= le)
