"""Push latency: from SetPolicy on the controller to the policy reaching every subscribed proxy.

Runs a real `fastpath controller` process and N subscriber processes (each a
FleetWatcher, as a proxy runs it, with its own proxy id), then changes a
policy K times; each subscriber notes when every change arrived (CLOCK_MONOTONIC
is shared by processes on one host). Reports p50/p99/max per subscriber and
over all, and the controller's own view (its push-latency histogram).

    python -m fastpath.bench.push_latency [--subscribers 3] [--changes 200]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from fastpath.launch import fastpath_argv, python_argv

POLICY = "bench-push"


def subscriber(target: str, proxy_id: str) -> int:
    """Prints 'i monotonic' for each change i of the bench policy it receives."""
    from fastpath.control.watcher import FleetWatcher

    async def main() -> None:
        seen = -1

        def on_policies(pl) -> None:
            nonlocal seen
            now = time.monotonic()
            for p in pl.policies:
                if p.name == POLICY:
                    i = round(p.ttft / (p.ttft + p.cost) * 1e6)  # the change number rides in the weights
                    if i != seen:
                        seen = i
                        print(i, now, flush=True)

        w = FleetWatcher(target, proxy_id, lambda v: None, on_policies=on_policies)
        print("ready", flush=True)
        await w.run()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    return 0


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subscribers", type=int, default=3)
    ap.add_argument("--changes", type=int, default=200)
    ap.add_argument("--gap-ms", type=float, default=20.0, help="time between changes")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--subscriber", nargs=2, metavar=("TARGET", "ID"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.subscriber:
        return subscriber(*args.subscriber)

    import grpc

    from fastpath.config import parse_config
    from fastpath.control.auth import metadata
    from fastpath.gen import control_pb2, control_pb2_grpc
    from fastpath.ports import free_port

    token = "bench-" + os.urandom(8).hex()
    env = dict(os.environ, FASTPATH_CONTROL_TOKEN=token, PYTHONUNBUFFERED="1")
    control, mport = f"127.0.0.1:{free_port()}", free_port()
    cfg = parse_config({"control": {"listen": control, "metrics_listen": f"127.0.0.1:{mport}"},
                        "backends": [{"name": "a", "address": "127.0.0.1:1", "region": "r",
                                      "cost_per_1k_tokens": 1.0, "models": ["m"]}]}, "push bench")
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="fastpath-push-") as tmp:
        path = cfg.write(Path(tmp) / "config.toml")
        try:
            ctl = subprocess.Popen(fastpath_argv("controller", "--config", str(path)),
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
            procs.append(ctl)
            assert "listening on" in ctl.stdout.readline()
            subs = []
            for i in range(args.subscribers):
                p = subprocess.Popen(python_argv("fastpath.bench.push_latency", "--subscriber", control,
                                                 f"bench-proxy-{i}"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env, text=True)
                procs.append(p)
                subs.append(p)
                assert p.stdout.readline().strip() == "ready"
            sent: dict[int, float] = {}
            with grpc.insecure_channel(control) as ch:
                stub = control_pb2_grpc.ControlStub(ch)
                md = metadata(token)
                time.sleep(1.0)  # every subscriber has its full state
                for i in range(1, args.changes + 1):
                    if i % 50 == 0:
                        print(f"  {i}/{args.changes} changes", file=sys.stderr, flush=True)
                    w = i / 1e6
                    sent[i] = time.monotonic()
                    stub.SetPolicy(control_pb2.Policy(name=POLICY, ttft=w, cost=1 - w), metadata=md, timeout=5)
                    time.sleep(args.gap_ms / 1000)
                time.sleep(1.0)
            with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as r:
                ctl_metrics = r.read().decode()
        finally:
            for p in reversed(procs):
                p.terminate()
            for p in procs:
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        per_sub: dict[str, list[float]] = {}
        for n, p in enumerate(subs):
            lat = []
            for line in p.stdout.read().splitlines():
                i_s, t_s = line.split()
                if int(i_s) in sent:
                    lat.append((float(t_s) - sent[int(i_s)]) * 1000)
            per_sub[f"bench-proxy-{n}"] = lat
    every = [x for v in per_sub.values() for x in v]
    result = {
        "load_average": os.getloadavg()[0], "changes": args.changes, "subscribers": args.subscribers,
        "received": {k: len(v) for k, v in per_sub.items()},
        "per_subscriber_ms": {k: {"p50": statistics.median(v), "p99": pct(v, 0.99), "max": max(v)}
                              for k, v in per_sub.items() if v},
        "all_ms": {"p50": statistics.median(every), "p99": pct(every, 0.99), "max": max(every)} if every else {},
        "controller_push_histogram": [ln for ln in ctl_metrics.splitlines()
                                      if ln.startswith("fastpath_controller_push_latency_seconds_")
                                      and 'kind="delta"' in ln and ("_count" in ln or "_sum" in ln)],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"push latency, SetPolicy -> subscriber, {args.changes} changes x {args.subscribers} subscribers "
          f"(load average {result['load_average']:.2f})")
    for k, v in result["per_subscriber_ms"].items():
        print(f"  {k}: received {result['received'][k]}/{args.changes}  p50 {v['p50']:.2f} ms  "
              f"p99 {v['p99']:.2f} ms  max {v['max']:.2f} ms")
    a = result["all_ms"]
    if a:
        print(f"  all: p50 {a['p50']:.2f} ms  p99 {a['p99']:.2f} ms  max {a['max']:.2f} ms")
    for ln in result["controller_push_histogram"]:
        print("  controller:", ln)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
