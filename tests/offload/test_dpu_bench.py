"""The DPU bench rows: every card-path connection is switched by the card, and insertion latency is measured."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.bpf, pytest.mark.slow]


def test_dpu_bench_rows_come_from_the_card(bpf_ready, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTPATH_DPU_DIR", str(tmp_path))
    from fastpath.bench import dpu_bench
    from fastpath.bench.splice_bench import CONCURRENCY

    rows = dpu_bench.measure(quick=True)
    rt = {(r["path"], r["concurrency"]): r for r in rows if r["kind"] == "round_trip"}
    assert set(rt) == {(p, c) for p in dpu_bench.PATHS for c in CONCURRENCY}
    assert all(r["msgs_per_s"] > 0 and r["rounds"] == 2 for r in rt.values())
    [card] = [r for r in rows if r["kind"] == "dpu_card_counters"]
    # every connection of the card path (each round: 1 + 64) went through the card, both ways byte for byte
    assert card["connections"] == 2 * sum(CONCURRENCY)
    assert card["bytes_to_backend"] == card["bytes_to_client"] > 0
    [ins] = [r for r in rows if r["kind"] == "dpu_insertion"]
    # a sample is dropped only when an insertion takes over 2 s (a machine stalled that long)
    assert ins["samples"] >= 18 and 0 < ins["inserted_p50_us"] <= ins["first_switched_p50_us"]
    assert not list(tmp_path.glob("*.json"))  # the card is gone
