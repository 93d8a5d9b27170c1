"""The paired A/B bench: two real proxies on one backend, calls alternated between them."""
import pytest

from fastpath.bench import paired

from .bench_test_tools import need_tool, which

pytestmark = pytest.mark.slow


def test_paired_runs_both_sides_and_reports_per_round_ratios():
    res = paired.measure("fastpath-pure", "fastpath", kind="unary", rounds=2, duration_s=0.4, warmup_s=0.2)
    assert (res["a"], res["b"]) == ("fastpath-pure", "fastpath")
    rows = res["rows"]
    assert len(rows) == 2
    for row in rows:
        # alternation: each side got the same number of calls, give or take the one in flight at the end
        assert row["a"]["calls"] > 10 and abs(row["a"]["calls"] - row["b"]["calls"]) <= 1, row
        assert row["a"]["cpu_us_per_msg"] > 0 and row["b"]["cpu_us_per_msg"] > 0
        assert row["ratio_b_over_a"] == pytest.approx(row["b"]["cpu_us_per_msg"] / row["a"]["cpu_us_per_msg"])
    s = res["summary"]
    assert s["ratio_min"] <= s["ratio_b_over_a"] <= s["ratio_max"]


def test_a_run_removes_its_scratch_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    paired.measure("fastpath", "fastpath", kind="unary", rounds=1, duration_s=0.2, warmup_s=0.1)
    assert list(tmp_path.iterdir()) == []


def test_streamed_messages_are_counted_per_message():
    res = paired.measure("fastpath", "fastpath", kind="stream", rounds=1, duration_s=0.3, warmup_s=0.1)
    row = res["rows"][0]
    assert row["a"]["calls"] > 0 and row["b"]["calls"] > 0
    assert row["a"]["cpu_us_per_msg"] > 0


def test_summary_is_the_median_over_rounds():
    rows = [{"round": i, "a": {"cpu_us_per_msg": a, "p50_us": 10.0 * a}, "b": {"cpu_us_per_msg": b, "p50_us": 10.0 * b},
             "ratio_b_over_a": b / a} for i, (a, b) in enumerate([(100.0, 90.0), (200.0, 220.0), (110.0, 99.0)])]
    s = paired.summarize(rows)
    assert s["a"] == {"cpu_us_per_msg": 110.0, "p50_us": 1100.0}
    assert s["b"]["cpu_us_per_msg"] == 99.0
    assert s["ratio_b_over_a"] == pytest.approx(0.9) and s["ratio_max"] == pytest.approx(1.1)


def test_an_unknown_side_is_refused_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match="expected fastpath, fastpath:PYTHON, fastpath-pure, relay or one of"):
        paired.start_side("squid", "127.0.0.1:1", tmp_path)


def test_the_relay_floor_side_carries_calls_and_costs_less_than_the_proxy():
    """The byte relay is the floor the bench reports: it must really carry the calls, for less CPU than
    a proxy that parses HTTP/2 and routes each call."""
    res = paired.measure("relay", "fastpath-pure", kind="unary", rounds=2, duration_s=0.4, warmup_s=0.2)
    for row in res["rows"]:
        assert row["a"]["calls"] > 10 and abs(row["a"]["calls"] - row["b"]["calls"]) <= 1, row
    assert res["summary"]["ratio_b_over_a"] > 1.0


def test_the_bench_section_runs_the_suite_through_the_extras_child(tmp_path):
    from fastpath.bench import extras

    need_tool(which("nginx"), "nginx")
    res = extras.run_measure("fastpath.bench.paired:measure_suite", {"quick": True}, 180, tmp_path)
    assert res["available"] and res["note"] == "", res["note"]
    rows = res["rows"]
    assert [(r["scenario"], r["metadata"]) for r in rows] == [("unary_c1", "repeated"), ("stream_c1", "repeated")]
    for r in rows:
        assert (r["a"], r["b"]) == ("nginx", "fastpath")
        assert r["a_cpu_us_per_msg"] > 0 and r["b_cpu_us_per_msg"] > 0 and r["a_p50_us"] > 0
        assert r["ratio_min"] <= r["ratio_b_over_a"] <= r["ratio_max"]
