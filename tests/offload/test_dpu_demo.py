"""`fastpath demo --offload dpu`: repeat session connections switched by the card, byte-exact, none on the proxy."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.bpf, pytest.mark.slow]


def test_demo_switches_every_repeat_connection_through_the_card(bpf_ready, tmp_path):
    r = subprocess.run([sys.executable, "-m", "fastpath.cli", "demo", "--offload", "dpu", "--json", "--requests", "60"],
                       capture_output=True, text=True, timeout=180, env={**__import__("os").environ, "TMPDIR": str(tmp_path),
                                                                          "FASTPATH_DPU_DIR": str(tmp_path / "dpu")})
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    rows = summary["sessions"]
    assert rows and all(row["repeat_connections"] >= 1 for row in rows)
    for row in rows:
        assert row["ok"] == row["repeat_connections"]
        assert row["card_switched"] == row["repeat_connections"]
        assert row["proxy_connections"] == 0
        assert row["card_bytes_to_backend"] == row["client_bytes_sent"] > 0
        assert row["card_bytes_to_client"] == row["client_bytes_received"] > 0
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert summary["card"] not in names
    assert not list((tmp_path / "dpu").glob("*.json"))


def test_cli_without_a_card_says_what_to_do(tmp_path):
    r = subprocess.run([sys.executable, "-m", "fastpath.cli", "dpu", "status"], capture_output=True, text=True, timeout=60,
                       env={**__import__("os").environ, "FASTPATH_DPU_DIR": str(tmp_path)})
    assert r.returncode == 1
    assert "no emulated card" in r.stderr and "FASTPATH_DPU_DIR" in r.stderr
