"""`fastpath bpf load/status/unload` end to end, checked with bpftool."""
from __future__ import annotations

import json
import os
import subprocess
import time
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.bpf

NAMES = {"fp_socks", "fp_targets", "fp_peers", "fp_flows", "fp_errors", "fp_splice"}


def fastpath(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastpath.cli", *args], check=False, capture_output=True, text=True, timeout=60)


def bpftool_ids(kind: str) -> set[int]:
    out = subprocess.run(["bpftool", "-j", kind, "show"], capture_output=True, text=True, check=True).stdout
    return {o["id"] for o in json.loads(out or "[]")}


def test_load_status_unload(bpf_ready):
    pin_dir = Path(f"/sys/fs/bpf/fastpath-test-{uuid.uuid4().hex[:8]}")
    try:
        r = fastpath("bpf", "load", "--pin-dir", str(pin_dir), "--max-flows", "64")
        assert r.returncode == 0, r.stderr
        assert sorted(os.listdir(pin_dir)) == sorted(NAMES)
        assert all((pin_dir / n).stat().st_mode & 0o777 == 0o600 for n in NAMES)
        assert pin_dir.stat().st_mode & 0o777 == 0o700

        r = fastpath("bpf", "status", "--json", "--pin-dir", str(pin_dir))
        assert r.returncode == 0, r.stderr
        status = json.loads(r.stdout)
        assert status["ok"] and status["features"]["sockhash"]["ok"] and status["features"]["bpffs"]["ok"]
        pinned = {o["name"]: o for o in status["pinned"]}
        assert set(pinned) == NAMES
        assert pinned["fp_flows"]["max_entries"] == 64 and pinned["fp_socks"]["max_entries"] == 128
        assert pinned["fp_targets"]["max_entries"] == 128
        assert pinned["fp_socks"]["entries"] == 0 and pinned["fp_splice"]["type"] == "sk_skb"
        assert pinned["fp_errors"]["counts"] == {"no_peer": 0, "redirect": 0, "no_flow": 0}
        prog_id = pinned["fp_splice"]["id"]
        map_ids = {o["id"] for o in pinned.values() if o["kind"] == "map"}
        assert prog_id in bpftool_ids("prog") and map_ids <= bpftool_ids("map")
        assert not {o["id"] for o in status["held_by_processes"]} & (map_ids | {prog_id})

        r = fastpath("bpf", "load", "--pin-dir", str(pin_dir))
        assert r.returncode == 1 and "already loaded" in r.stderr

        text = fastpath("bpf", "status", "--pin-dir", str(pin_dir)).stdout
        assert "fp_socks" in text and f"id {prog_id}" in text

        r = fastpath("bpf", "unload", "--pin-dir", str(pin_dir))
        assert r.returncode == 0, r.stderr
        assert not pin_dir.exists()
        # The kernel frees unpinned objects from a work queue: give it a moment.
        deadline = time.monotonic() + 5
        while (prog_id in bpftool_ids("prog") or map_ids & bpftool_ids("map")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert prog_id not in bpftool_ids("prog")
        assert not map_ids & bpftool_ids("map")
        assert "nothing pinned" in fastpath("bpf", "unload", "--pin-dir", str(pin_dir)).stdout
    finally:
        if pin_dir.exists():
            fastpath("bpf", "unload", "--pin-dir", str(pin_dir))


def test_driver_uses_the_pinned_maps(bpf_ready):
    """A proxy process opening the pins shares the maps that `fastpath bpf status` reports."""
    from fastpath.offload.ebpf import EbpfDriver

    pin_dir = Path(f"/sys/fs/bpf/fastpath-test-{uuid.uuid4().hex[:8]}")
    assert fastpath("bpf", "load", "--pin-dir", str(pin_dir)).returncode == 0
    try:
        with EbpfDriver(pin_dir=pin_dir) as driver:
            pinned = {o["name"]: o["id"] for o in json.loads(fastpath("bpf", "status", "--json", "--pin-dir", str(pin_dir)).stdout)["pinned"]}
            assert driver.maps.socks.info().id == pinned["fp_socks"]
            assert driver.maps.flows.info().id == pinned["fp_flows"]
        with EbpfDriver(pin_dir=None) as private:  # a proxy's own copy shows as held, not pinned
            held = json.loads(fastpath("bpf", "status", "--json", "--pin-dir", str(pin_dir)).stdout)["held_by_processes"]
            assert private.maps.socks.info().id in {o["id"] for o in held}
    finally:
        assert fastpath("bpf", "unload", "--pin-dir", str(pin_dir)).returncode == 0


def test_bpf_without_action_prints_usage():
    r = fastpath("bpf")
    assert r.returncode == 2 and "status" in r.stderr


CHILD = """
import socket, sys
from pathlib import Path
from fastpath.offload.ebpf import EbpfDriver
d = EbpfDriver(pin_dir=Path(sys.argv[1]))
def pair():
    l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen()
    c = socket.create_connection(l.getsockname()); s, _ = l.accept(); return c, s
keep = [pair(), pair()]
r = d.splice("doomed", keep[0][1], keep[1][0])
print(r.path, flush=True)
sys.stdin.readline()
"""


def test_entries_of_a_killed_proxy_are_collected(bpf_ready):
    """A proxy killed mid-flow leaves counters behind in the shared maps; the next driver removes them."""
    from fastpath.offload.ebpf import EbpfDriver

    pin_dir = Path(f"/sys/fs/bpf/fastpath-test-{uuid.uuid4().hex[:8]}")
    assert fastpath("bpf", "load", "--pin-dir", str(pin_dir)).returncode == 0
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(pin_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "kernel"
        status = json.loads(fastpath("bpf", "status", "--json", "--pin-dir", str(pin_dir)).stdout)
        counts = {o["name"]: o.get("entries") for o in status["pinned"]}
        assert (counts["fp_socks"], counts["fp_peers"], counts["fp_flows"]) == (2, 2, 1)
        child.kill()
        child.wait(5)
        status = json.loads(fastpath("bpf", "status", "--json", "--pin-dir", str(pin_dir)).stdout)
        counts = {o["name"]: o.get("entries") for o in status["pinned"]}
        # the kernel dropped the closed sockets; peers and counters are left over
        assert (counts["fp_socks"], counts["fp_peers"], counts["fp_flows"]) == (0, 2, 1)
        with EbpfDriver(pin_dir=pin_dir) as driver:  # opening collects what the dead process left
            assert (len(driver.maps.socks.keys()), len(driver.maps.peers.keys()), len(driver.maps.flows.keys())) == (0, 0, 0)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
        for f in (child.stdin, child.stdout):
            f.close()
        assert fastpath("bpf", "unload", "--pin-dir", str(pin_dir)).returncode == 0
