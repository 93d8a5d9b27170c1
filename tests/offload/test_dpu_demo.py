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


def test_dpu_up_builds_a_card_that_status_sees_and_removes_it_on_sigint(bpf_ready, tmp_path):
    import os
    import select
    import signal

    env = {**os.environ, "FASTPATH_DPU_DIR": str(tmp_path)}
    p = subprocess.Popen([sys.executable, "-m", "fastpath.cli", "dpu", "up", "--clients", "2", "--max-rules", "8"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready, _, _ = select.select([p.stdout], [], [], 60)
        assert ready, "dpu up printed nothing"
        line = p.stdout.readline()
        assert line.startswith("card ") and "10.77.0.3" in line
        name = line.split()[1]
        r = subprocess.run([sys.executable, "-m", "fastpath.cli", "dpu", "status", "--json"], capture_output=True,
                           text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        s = json.loads(r.stdout)
        assert s["card"] == name and s["flow_table"] == {"used": 0, "capacity": 8} and not s["agent"]["agent"]
        r = subprocess.run([sys.executable, "-m", "fastpath.cli", "dpu", "rules"], capture_output=True, text=True,
                           env=env, timeout=60)
        assert r.returncode == 0 and "no rules" in r.stdout
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(30) == 0
    assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not list(tmp_path.glob("*.json"))


def test_dpu_down_removes_a_card_whose_process_was_killed(bpf_ready, tmp_path):
    import os
    import select
    import signal

    env = {**os.environ, "FASTPATH_DPU_DIR": str(tmp_path)}
    p = subprocess.Popen([sys.executable, "-m", "fastpath.cli", "dpu", "up"], stdout=subprocess.PIPE, text=True, env=env)
    ready, _, _ = select.select([p.stdout], [], [], 60)
    assert ready
    name = p.stdout.readline().split()[1]
    refused = subprocess.run([sys.executable, "-m", "fastpath.cli", "dpu", "down"], capture_output=True, text=True,
                             env=env, timeout=60)
    assert refused.returncode == 1 and "still runs" in refused.stderr  # never pulls a live card away
    os.kill(p.pid, signal.SIGKILL)
    p.wait(10)
    p.stdout.close()
    assert name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout  # left behind
    r = subprocess.run([sys.executable, "-m", "fastpath.cli", "dpu", "down"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 0 and f"card {name}: removed netns {name}-" in r.stdout
    assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not list(tmp_path.glob("*.json"))
    assert not any(d.name.endswith(name) for d in __import__("pathlib").Path("/sys/fs/bpf").iterdir())
