"""The workers section of the bench runs end to end and reports both worker counts and their ratio."""
import pytest

from fastpath.bench.workers_bench import render, run_bench

pytestmark = pytest.mark.slow


def test_workers_bench_reports_messages_per_second_for_one_and_two_workers():
    result = run_bench(rounds=1, seconds=0.5)
    runs = result["runs"]
    assert sorted(r["workers"] for r in runs) == [1, 2]
    assert all(r["errors"] == 0 and r["messages"] > 0 for r in runs), runs
    assert result["ratio_2_over_1"] == pytest.approx(result["median_msgs_per_s"][2] / result["median_msgs_per_s"][1],
                                                     rel=1e-2)
    assert "ratio 2 workers / 1 worker" in render(result)
