"""Priority-burst scenario: its seeded trace, the rows it derives from what clients saw, and its plot."""
from __future__ import annotations

from fastpath.bench import priority_burst as pb
from fastpath.config import load_config


def test_trace_is_seeded_and_only_low_priority_bursts():
    a = pb.make_trace(3, 6.0, high_rate=8.0, low_rate=4.0, burst_rate=60.0)
    assert a == pb.make_trace(3, 6.0, high_rate=8.0, low_rate=4.0, burst_rate=60.0)
    assert [x.t for x in a] == sorted(x.t for x in a)

    def count(prio: int, lo: float, hi: float) -> int:
        return sum(1 for x in a if x.priority == prio and lo <= x.t < hi)

    assert count(pb.LOW, 2.0, 4.0) > 5 * (count(pb.LOW, 0.0, 2.0) + count(pb.LOW, 4.0, 6.0)) / 2
    assert 0.4 < count(pb.HIGH, 2.0, 4.0) / max(1, count(pb.HIGH, 0.0, 2.0)) < 2.5  # high stays steady


def test_configs_differ_only_by_the_admission_table():
    base = load_config()
    on, off = pb.burst_config(base, True), pb.burst_config(base, False)
    assert [b.name for b in on.backends] == [b.name for b in off.backends] == list(pb.SITES)
    assert on.admission is not None and off.admission is None


def test_rows_count_sheds_pushbacks_and_slo_per_priority(tmp_path):
    records = [
        {"t": 0.1, "priority": pb.HIGH, "ttft_ms": 40.0, "status": "OK", "pushback_ms": None},
        {"t": 0.2, "priority": pb.HIGH, "ttft_ms": 900.0, "status": "OK", "pushback_ms": None},
        {"t": 0.3, "priority": pb.LOW, "ttft_ms": None, "status": "RESOURCE_EXHAUSTED", "pushback_ms": 120},
        {"t": 0.4, "priority": pb.LOW, "ttft_ms": None, "status": "RESOURCE_EXHAUSTED", "pushback_ms": None},
        {"t": 0.5, "priority": pb.LOW, "ttft_ms": None, "status": "UNAVAILABLE", "pushback_ms": None},
        {"t": 0.6, "priority": pb.LOW, "ttft_ms": 300.0, "status": "OK", "pushback_ms": None},
    ]
    high, low = pb.rows_of("admission", records, 7, 1.0)
    assert (high["requests"], high["served"], high["shed"]) == (2, 2, 0)
    assert high["within_slo_share"] == 0.5  # 900 ms misses the 300 ms SLO
    assert (low["requests"], low["served"], low["shed"], low["shed_with_pushback"], low["failed_other"]) == (4, 1, 2, 1, 1)
    assert low["pushback_p50_ms"] == 120.0
    assert len(high["timeline"]) == len(records)
    no_high, _ = pb.rows_of("no-admission", records, 7, 1.0)
    assert "timeline" not in no_high

    from fastpath.bench import plots

    rows = pb.rows_of("admission", records, 7, 1.0) + pb.rows_of("no-admission", records, 7, 1.0)
    path = plots.priority_burst({"fleet": {"rows": rows}}, tmp_path)
    assert path is not None and path.stat().st_size > 10_000
    assert plots.priority_burst({"fleet": {"rows": []}}, tmp_path) is None
