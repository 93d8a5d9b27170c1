"""The DPU card path against the proxy path and direct, through the emulated BlueField.

One emulated card (namespaces, veths, the tc flow-table program), a uvloop
echo server on a backend address, and the uvloop byte relay on the VIP in the
host namespace (what the proxy's pinned mode does). Paths, all 64-byte
ping-pong from a client process in the client namespace:

- fastpath-dpu-direct: client -> backend address, routed by the card (no rule, no proxy);
- fastpath-dpu-proxy:  client -> VIP -> relay in the host -> backend (the card forwards, the relay copies);
- fastpath-dpu:        client -> VIP, switched by a card rule straight to the backend (the relay sees nothing).

Rounds interleave the paths; figures are medians over rounds. Rule insertion
latency is measured from the driver's decision (`steer()`) to the entry's
completion, and to the first packet the card switched for it (the kernel's
CLOCK_MONOTONIC time stamp in the entry), while a client opens a connection
every ~0.5 ms.

`python -m fastpath.bench.dpu_bench [--quick]` prints the rows;
`measure(quick)` returns them (the splice bench includes them in its run).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

from fastpath.bench.splice_bench import CONCURRENCY, _spawn, _stop, pct, round_trip_rows, run_client

PATHS = ("fastpath-dpu-direct", "fastpath-dpu-proxy", "fastpath-dpu")


def unavailable() -> str:
    """Why the card path cannot run here, or ''."""
    if os.geteuid() != 0:
        return "needs root (namespaces, tc, BPF)"
    from fastpath.offload.dpu_card import object_path

    if not object_path().exists():
        return f"{object_path()} missing: run `make bpf`"
    return ""


class InNetns:
    """Runs a child in one of the card's namespaces (the `wrap(argv)` splice_bench's spawners take)."""

    def __init__(self, card: Any, side: str) -> None:
        self.card, self.side = card, side

    def wrap(self, argv: list[str]) -> list[str]:
        return self.card.exec_argv(self.side, argv)


def insertion_latency(card: Any, driver: Any, echo_port: int, samples: int) -> dict[str, float]:
    """Decision -> entry inserted, and decision -> first packet switched, over `samples` rules."""
    from fastpath.offload import dpu_netns
    from fastpath.offload.dpu_flow import ERROR, SUCCESS, entry_counters

    src, port = card.client_addr(2), 9  # nothing listens on the VIP's port 9: unswitched SYNs cost one RST
    inserted, first = [], []
    pool: list[socket.socket] = []
    try:
        for i in range(samples):
            for s in pool:
                s.close()
            pool = dpu_netns.run_in(card.ns["cli"], lambda: [socket.socket() for _ in range(256)])
            e_done = driver.steer(f"insert-{i}", src, (card.vip, port), (card.backend_addr(0), echo_port))
            entry = driver.entry(f"insert-{i}")
            deadline = time.monotonic() + 2.0
            value = None
            while time.monotonic() < deadline:
                if not pool:  # a slow insertion outlasted the batch: more sockets, same namespace
                    pool = dpu_netns.run_in(card.ns["cli"], lambda: [socket.socket() for _ in range(256)])
                s = pool.pop()
                s.setblocking(False)
                s.bind((src, 0))
                s.connect_ex((card.vip, port))  # the SYN leaves now
                s.close()
                if entry is not None and entry.status == SUCCESS:
                    value = entry_counters(driver.agent.query(entry))
                    if value["first_ns"]:
                        break
                time.sleep(0.0005)
            if entry is not None and entry.status == SUCCESS and value and value["first_ns"]:
                inserted.append((entry.inserted_ns - entry.decided_ns) / 1e3)
                first.append((value["first_ns"] - entry.decided_ns) / 1e3)
            if entry is not None and entry.status != ERROR:
                driver.remove(f"insert-{i}")
            e_done.wait(1)
            for k, _ in card.maps.conns.items():  # the switched SYNs' connection entries
                card.maps.conns.delete(k)
            time.sleep(0.01)
    finally:
        for s in pool:
            s.close()
    return {"inserted_p50_us": pct(inserted, 0.5), "inserted_p99_us": pct(inserted, 0.99),
            "first_switched_p50_us": pct(first, 0.5), "first_switched_p99_us": pct(first, 0.99), "samples": len(first)}


def measure(quick: bool = False, progress: bool = False) -> list[dict[str, Any]]:
    why = unavailable()
    if why:
        return [{"kind": "round_trip", "path": p, "note": f"unavailable: {why}"} for p in PATHS]
    from fastpath.offload.dpu import DpuDriver
    from fastpath.offload.dpu_card import EmulatedCard
    from fastpath.offload.dpu_flow import SUCCESS

    rounds, seconds = (2, 0.5) if quick else (3, 2.0)
    card = EmulatedCard(clients=3, backends=1, max_conns=65536).create()
    procs: list[subprocess.Popen] = []
    driver = None
    try:
        echo, echo_port = _spawn("echo", card.backend_addr(0), cgroup=InNetns(card, "net"))
        procs.append(echo)
        relay, relay_port = _spawn("pyrelay", str(echo_port), "", card.vip, card.backend_addr(0), cgroup=InNetns(card, "host"))
        procs.append(relay)
        driver = DpuDriver(card.info)
        driver.steer("bench", card.client_addr(0), (card.vip, relay_port), (card.backend_addr(0), echo_port))
        deadline = time.monotonic() + 5
        while (e := driver.entry("bench")) is None or e.status != SUCCESS:
            if time.monotonic() > deadline:
                raise RuntimeError("the card did not insert the bench rule")
            time.sleep(0.01)
        targets = {  # path -> (host, port, source address, pid charged)
            "fastpath-dpu-direct": (card.backend_addr(0), echo_port, card.client_addr(1), 0),
            "fastpath-dpu-proxy": (card.vip, relay_port, card.client_addr(1), relay.pid),
            "fastpath-dpu": (card.vip, relay_port, card.client_addr(0), relay.pid),
        }
        raw: dict[tuple[str, int], list[dict[str, float]]] = {}
        for rnd in range(rounds):
            order = PATHS[rnd % len(PATHS):] + PATHS[:rnd % len(PATHS)]
            for path in order:
                for conns in CONCURRENCY:
                    host, port, src, pid = targets[path]
                    w = run_client(port, conns, seconds, pid, InNetns(card, "cli"), host, src)
                    n = max(1, w["n"])
                    raw.setdefault((path, conns), []).append({
                        "p50": w["p50"], "p99": w["p99"], "msgs_per_s": w["n"] / w["wall"],
                        "relay_cpu_us_per_msg": w["cpu_ns"] / 1000 / n, "system_cpu_us_per_msg": w["busy_ns"] / 1000 / n})
                    if progress:
                        r = raw[(path, conns)][-1]
                        print(f"round {rnd + 1}/{rounds} {path:<20} c={conns:<3} p50 {r['p50']:7.1f} µs  "
                              f"relay CPU {r['relay_cpu_us_per_msg']:5.2f} µs/msg", file=sys.stderr, flush=True)
        entry = driver.entry("bench")
        card_bytes = driver.agent.query(entry) if entry is not None else None
        rows = round_trip_rows(raw)
        if card_bytes is not None:
            rows.append({"kind": "dpu_card_counters", "path": "fastpath-dpu", "bytes_to_backend": int(card_bytes.bytes[0]),
                         "bytes_to_client": int(card_bytes.bytes[1]), "connections": int(card_bytes.conns)})
        if progress:
            print("dpu rule insertion latency ...", file=sys.stderr, flush=True)
        rows.append({"kind": "dpu_insertion", "path": "fastpath-dpu",
                     **insertion_latency(card, driver, echo_port, 20 if quick else 100)})
        return rows
    finally:
        if driver is not None:
            driver.close()
        for p in procs:
            _stop(p)
        card.destroy()


def main(argv: list[str] | None = None) -> int:
    from fastpath.bench.splice_bench import table

    ap = argparse.ArgumentParser(prog="python -m fastpath.bench.dpu_bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds of 0.5 s instead of 3 of 2 s")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args(argv)
    rows = measure(args.quick, progress=True)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
