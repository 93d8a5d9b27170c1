"""The router cost benchmark runs and reports what the harness reads (no speed is asserted)."""
from __future__ import annotations

import pytest
from fastpath.bench import router_cost

FIELDS = {"backends", "constraints", "active", "requests", "routed_fraction", "p50_us", "p90_us", "p99_us",
          "mean_us", "learn_p50_us", "loop_cpu_us", "header_us", "snapshot_build_us", "first_route_us", "rounds",
          "p50_rounds_us"}


def test_measure_reports_one_row_per_size_and_constraint_count():
    rows = router_cost.measure(sizes=(8, 300), constraints=(0, len(router_cost.CONSTRAINTS)), requests=300, rounds=1)
    assert [(r["backends"], r["constraints"]) for r in rows] == [(8, 0), (8, 7), (300, 0), (300, 7)]
    for r in rows:
        assert set(r) == FIELDS
        assert 0 < r["p50_us"] <= r["p90_us"] <= r["p99_us"]
        assert r["routed_fraction"] > 0.5  # the synthetic requests are mostly routable
    assert rows[0]["active"] == "none" and "slo_ttft_ms" in rows[1]["active"] and "prompt" in rows[1]["active"]
    assert "p50" in router_cost.format_table(rows)


def test_each_row_is_the_median_of_its_interleaved_rounds():
    rows = router_cost.measure(sizes=(8,), constraints=(0, 7), requests=200, rounds=3)
    for r in rows:
        assert r["rounds"] == 3 and len(r["p50_rounds_us"]) == 3
        assert r["p50_us"] == pytest.approx(sorted(r["p50_rounds_us"])[1], abs=0.01)
    with pytest.raises(ValueError, match="rounds: 0"):
        router_cost.measure(sizes=(8,), constraints=(0,), requests=10, rounds=0)


def test_synthetic_fleet_serves_every_model_and_region():
    cfg = router_cost.synthetic_config(8)
    assert set(cfg.models) == set(router_cost.MODELS)
    assert set(cfg.site_regions) == set(router_cost.REGIONS)


def test_bad_arguments_say_what_is_expected():
    with pytest.raises(ValueError, match="constraints: 9 is out of range"):
        router_cost.measure(sizes=(8,), constraints=(9,), requests=10)
    with pytest.raises(ValueError, match="sizes: 0"):
        router_cost.measure(sizes=(0,), constraints=(0,), requests=10)


def test_command_line_prints_the_table(capsys):
    assert router_cost.main(["--sizes", "8", "--constraints", "1", "--requests", "200"]) == 0
    out = capsys.readouterr().out
    assert "router decision cost" in out and "model" in out
