"""A tiny real run of the harness: results.json schema, unavailable paths, ratios to nginx, plots."""
from __future__ import annotations

import argparse
import json

import pytest

from fastpath.bench import harness, paths

from .bench_test_tools import need_tool, which


@pytest.fixture
def absent_path():
    def start(ctx):
        raise paths.PathUnavailable("not built on this machine")

    paths.register(paths.PathSpec("absent", "a path whose proxy is not installed", start))
    yield "absent"
    paths.REGISTRY.pop("absent", None)


def _args(**kw) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    harness.add_arguments(p)
    argv = []
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return p.parse_args(argv)


def test_tiny_run_writes_the_documented_schema(tmp_path, absent_path, capsys):
    need_tool(which("nginx"), "nginx")
    out = tmp_path / "results"
    code = harness.run(_args(paths=f"direct,nginx,{absent_path}", rounds=1, duration=0.1, warmup=0.03,
                             skip="paired,router_cost,splice,fleet", out=out))
    assert code == 0
    result = json.loads((out / "latest" / "results.json").read_text())
    assert result["schema"] == harness.SCHEMA
    for key in ("started", "finished", "settings", "machine", "versions", "paths", "rows", "rounds",
                "summary_vs_nginx", "paired", "router_cost", "splice", "fleet", "notes", "plots"):
        assert key in result, key
    m = result["machine"]
    assert m["cores"] >= 1 and m["kernel"] and m["python"]
    assert result["versions"]["nginx"].startswith("1.")
    by_name = {p["name"]: p for p in result["paths"]}
    assert by_name["absent"]["available"] is False
    assert "not built" in by_name["absent"]["reason"]
    assert by_name["nginx"]["available"] is True

    rows = [r for r in result["rows"] if r["type"] == "path"]
    expected = {(p, s.name, md) for p in ("direct", "nginx") for s in harness.SCENARIOS for md in harness.METADATA_MODES}
    assert {(r["path"], r["scenario"], r["metadata"]) for r in rows} == expected
    for r in rows:
        assert r["errors"] == 0, r["first_error"]
        assert r["p50_us"] > 0 and r["p99_us"] >= r["p50_us"]
        assert r["msgs_per_s"] > 0
        assert r["backend_cpu_us_per_msg"] > 0 and r["client_cpu_us_per_msg"] > 0
        assert r["all_cpu_us_per_msg"] >= r["backend_cpu_us_per_msg"] + r["client_cpu_us_per_msg"] - 0.05
        assert r["latency_cdf_us"] and r["latency_cdf_us"][0][0] == 0 and r["latency_cdf_us"][-1][0] == 100
        if r["path"] == "nginx":
            # 0.1 s windows are ~10 clock ticks: the tick count may round to 0, the scheduler's ns may not
            assert r["proxy_cpu_us_per_msg_stat"] is not None and r["proxy_cpu_us_per_msg_stat"] >= 0
            assert r["proxy_cpu_us_per_msg"] == r["proxy_cpu_us_per_msg_sched"] > 0
        else:
            assert r["proxy_cpu_us_per_msg"] is None
    for s in result["summary_vs_nginx"]:
        if s["path"] == "nginx" and s["proxy_cpu_us_per_msg"]:
            assert s["cpu_per_msg_vs_nginx"] == 1.0
        if s["path"] == "direct":
            assert s["added_p50_us"] == 0
    assert result["router_cost"]["note"].startswith("skipped") and result["paired"]["note"].startswith("skipped")
    assert set(result["plots"]) >= {"latency_cdf.png", "cpu_per_message.png"}
    for name in result["plots"]:
        assert (out / "latest" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "nginx" in printed and "absent: unavailable" in printed


def test_unknown_path_is_refused_naming_the_known_ones(tmp_path, capsys):
    assert harness.run(_args(paths="direct,nosuch", out=tmp_path)) == 2
    err = capsys.readouterr().err
    assert "nosuch" in err and "nginx" in err


@pytest.mark.parametrize("bad", [{"rounds": 0}, {"duration": 0}, {"skip": "everything"}])
def test_bad_options_are_refused(tmp_path, bad, capsys):
    assert harness.run(_args(out=tmp_path, **bad)) == 2
    assert "fastpath bench:" in capsys.readouterr().err


def test_a_backend_that_dies_ends_the_run_with_the_reason(tmp_path, capsys):
    import os
    import signal
    import threading
    import time
    from pathlib import Path

    from fastpath.bench import proc_cpu

    def kill_backend_once_it_serves():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for pid in proc_cpu.descendants(os.getpid()):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"fastpath.bench.backend" in cmd and b"fastpath.bench.load" not in cmd:
                    time.sleep(1.5)  # let a few windows pass
                    os.kill(pid, signal.SIGKILL)
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_backend_once_it_serves, daemon=True)
    killer.start()
    code = harness.run(_args(paths="direct", rounds=40, duration=0.1, warmup=0.02, skip="paired,router_cost,splice,fleet",
                             out=tmp_path, no_plots=True))
    killer.join(5)
    assert code == 1
    assert "bench backend exited" in capsys.readouterr().err
