"""A short soak in the normal suite: the same stack, traffic, site kill and restart, and end checks as bench/soak.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def soak(tmp_path_factory):
    work = tmp_path_factory.mktemp("soak")
    out = work / "summary.json"
    proc = subprocess.run(
        [sys.executable, "-m", "fastpath.bench.soak", "--seconds", "15", "--connections", "10", "--clients", "2",
         "--session-share", "0.4", "--progress-every", "5", "--json", str(out)],
        capture_output=True, text=True, timeout=110, env={**os.environ, "TMPDIR": str(work)})  # logs land in tmp_path
    assert out.exists(), f"no summary (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc, json.loads(out.read_text())


def test_every_request_is_accounted_for(soak):
    _, s = soak
    assert s["requests"] > 50
    assert s["lost"] == 0 and s["answered"] == s["requests"]
    assert s["outcomes"]["ok"] > 0.5 * s["requests"]
    assert s["outcomes"].get("cancelled", 0) > 0  # the clients cancel streams mid-way, and see CANCELLED
    shapes = {k.split(":")[0] for k in s["by_shape"]}
    assert {"routed-unary", "routed-stream", "routed-cancel", "pinned-unary", "pinned-stream"} <= shapes


def test_a_site_was_killed_and_restarted(soak):
    _, s = soak
    events = [e["event"] for e in s["events"]]
    assert any(e.startswith(f"killed {s['killed_site']}") for e in events), events
    assert any(e.startswith(f"restarted {s['killed_site']}") for e in events), events


def test_progress_is_shown(soak):
    proc, _ = soak
    assert proc.stderr.count("requests (") >= 3, proc.stderr[-2000:]


def test_end_checks_pass(soak):
    proc, s = soak
    failed = {c["name"]: c["detail"] for c in s["checks"] if not c["ok"]}
    assert not failed, f"soak checks failed: {failed}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0 and s["passed"]


def test_bad_arguments_are_refused_with_the_reason():
    proc = subprocess.run([sys.executable, "-m", "fastpath.bench.soak", "--seconds", "2"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2
    assert "--seconds 2: at least 5" in proc.stderr
