"""Router decision cost: route() time per request vs fleet size and active constraints.

Synthetic fleets of N backends over 8 regions and 6 models, with telemetry
(load, KV, power, observed TTFT, errors) and a proxy's LiveStats that changes
between requests the way a busy proxy's does: every routed request starts a
stream on its winner, and streams finish and report first bytes in between.
Only route() is timed (time.perf_counter_ns around the call); snapshot build
and the first route after a snapshot swap are reported separately.

    python -m fastpath.bench.router_cost [--sizes 8,64,512,4096] [--requests 20000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from fastpath.config import AXES, Config, parse_config
from fastpath.gen import control_pb2
from fastpath.router import LiveStats, RequestFeatures, Router, build_snapshot
from fastpath.router.prefix import BLOCK_BYTES, prompt_blocks

REGIONS = ("us-east", "us-west", "us-central", "eu-west", "eu-central", "ap-south", "ap-east", "sa-east")
MODELS = ("llama-3-8b", "llama-3-70b", "mistral-7b", "qwen-2-7b", "phi-3", "gemma-2-9b")
# Constraints switched on one after another: the count is "active constraints".
CONSTRAINTS = ("model", "region", "session", "allow_regions", "max_cost", "slo_ttft_ms", "prompt")
DEFAULT_SIZES = (8, 64, 512, 4096)
DEFAULT_CONSTRAINTS = (0, 1, 2, 3, 4, 5, 6, 7)


def synthetic_config(n: int, seed: int = 1) -> Config:
    """A valid fleet config of n backends spread over REGIONS, each serving 2-4 MODELS."""
    rnd = random.Random(seed)
    coords = {r: (rnd.uniform(0, 100), rnd.uniform(0, 100)) for r in REGIONS}
    rtt = {
        c: {s: round(2.0 + 1.5 * ((coords[c][0] - coords[s][0]) ** 2 + (coords[c][1] - coords[s][1]) ** 2) ** 0.5, 1)
            for s in REGIONS}
        for c in REGIONS
    }
    backends = []
    for i in range(n):
        models = rnd.sample(MODELS, rnd.randint(2, 4))
        if i < len(MODELS):
            models = sorted(set(models) | {MODELS[i]})
        backends.append({
            "name": f"site-{i}",
            "address": f"127.0.0.1:{20000 + i}",
            "region": REGIONS[i % len(REGIONS)],
            "cost_per_1k_tokens": round(rnd.uniform(0.2, 1.5), 2),
            "power_budget_watts": rnd.choice([2000, 5000, 9000]),
            "models": models,
            "sim": {"slots": rnd.choice([4, 8, 12, 16]), "prefill_ms": rnd.choice([15, 25, 45])},
        })
    policies = {
        "balanced": {"ttft": 0.35, "cost": 0.15, "affinity": 0.2, "capacity": 0.15, "proximity": 0.15},
        "latency-first": {"ttft": 0.55, "affinity": 0.15, "capacity": 0.1, "proximity": 0.2},
    }
    data = {"policies": policies, "regions": {"rtt_ms": rtt}, "backends": backends}
    return parse_config(data, f"<synthetic fleet of {n}>")


def synthetic_telemetry(config: Config, seed: int = 2) -> control_pb2.FleetTelemetry:
    rnd = random.Random(seed)
    t = control_pb2.FleetTelemetry(version=1)
    for b in config.backends:
        slots = b.sim.slots if b.sim else 8
        t.backends.add(
            name=b.name, healthy=rnd.random() > 0.05, has_metrics=True,
            num_requests_running=rnd.randint(0, slots), num_requests_waiting=rnd.choice([0, 0, 0, 1, 3]),
            gpu_cache_usage_perc=rnd.random(), power_draw_watts=rnd.uniform(0.3, 0.9) * b.power_budget_watts,
            ttft_ms_observed=rnd.choice([0.0, rnd.uniform(20, 300)]), error_rate=rnd.choice([0.0, 0.0, 0.02]),
            max_num_seqs=slots,
        )
    for k in range(1000):
        t.session_backend[f"s{k}"] = config.backends[rnd.randrange(len(config.backends))].name
    return t


def request_mix(active: int, count: int, seed: int = 3) -> list[RequestFeatures]:
    """`count` requests with the first `active` CONSTRAINTS set, over a few request shapes."""
    rnd = random.Random(seed)
    on = set(CONSTRAINTS[:active])
    systems = [(b"system prompt %d: " % k) * 120 for k in range(16)]  # ~2 KiB each
    conversations = [(rnd.choice(systems), b"user %d asks, assistant answers. " % k * 8) for k in range(500)]
    turns = [0] * len(conversations)
    out = []
    for _ in range(count):
        f = RequestFeatures()
        if "model" in on:
            f.model = rnd.choice(MODELS[:3])
        if "region" in on:
            f.region = rnd.choice(REGIONS[:4])
        if "session" in on:
            f.session = f"s{rnd.randrange(2000)}"  # half known to the controller
        if "allow_regions" in on:
            f.allow_regions = rnd.choice([("eu-central", "eu-west"), ("us-central", "us-east", "us-west")])
        if "max_cost" in on:
            f.max_cost = rnd.choice([1.0, 1.2])
        if "slo_ttft_ms" in on:
            f.slo_ttft_ms = rnd.choice([150.0, 400.0])
        if "prompt" in on:  # prefix axis on: chat turns over shared system prompts (blocks hashed up front)
            c = rnd.randrange(len(conversations))
            turns[c] += 1
            system, words = conversations[c]
            prompt = system + words * turns[c]
            f.prompt_blocks = prompt_blocks(prompt, f.model, BLOCK_BYTES)
        out.append(f)
    return out


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q))


def measure_one(n: int, active: int, requests: int = 20000, concurrency: int = 32,
                fleet: tuple[Config, control_pb2.FleetTelemetry] | None = None,
                mix: list[RequestFeatures] | None = None) -> dict[str, Any]:
    """route() cost for a fleet of n with `active` constraints; times in microseconds.

    `fleet` and `mix` let measure() build each fleet and request mix once.
    """
    config, telemetry = fleet or (None, None)
    if config is None or len(config.backends) != n:
        config = synthetic_config(n)
        telemetry = synthetic_telemetry(config)
    t0 = time.perf_counter_ns()
    snap = build_snapshot(config, telemetry)
    build_us = (time.perf_counter_ns() - t0) / 1e3
    live = LiveStats(n)
    router = Router(config)
    if mix is None or len(mix) != requests:
        mix = request_mix(active, requests)
    t0 = time.perf_counter_ns()
    router.route(mix[0], snap, live)
    first_us = (time.perf_counter_ns() - t0) / 1e3
    for f in mix[:200]:  # warm the per-shape caches, as a running proxy has
        router.route(f, snap, live)

    times = np.empty(requests, dtype=np.int64)
    learn_times = np.empty(requests, dtype=np.int64)
    learn = router.learn
    open_streams: deque[int] = deque()
    routed = 0
    clock = time.perf_counter_ns
    route = router.route
    gc_was = gc.isenabled()
    gc.disable()
    cpu0 = time.thread_time_ns()
    try:
        for k, f in enumerate(mix):
            t0 = clock()
            d = route(f, snap, live)
            t1 = clock()
            times[k] = t1 - t0
            learn(d)  # the proxy's next step: the prefix index learns where the prompt went
            learn_times[k] = clock() - t1
            if d.ranked:
                routed += 1
                i = d.ranked[0]
                live.started(i)
                open_streams.append(i)
                if f.session:
                    live.remember_session(f.session, i)
            while len(open_streams) > concurrency:  # the oldest stream answers and ends
                j = open_streams.popleft()
                live.first_byte(j, 40.0 + (k % 7) * 5.0)
                live.finished(j, ok=(k % 50) != 0)
    finally:
        loop_cpu_us = (time.thread_time_ns() - cpu0) / 1e3 / requests
        if gc_was:
            gc.enable()
    us = times / 1e3
    t0 = clock()
    for _ in range(200):
        d.header() if d.ranked else None
    header_us = (clock() - t0) / 1e3 / 200
    return {
        "backends": n,
        "constraints": active,
        "active": ",".join(CONSTRAINTS[:active]) or "none",
        "requests": requests,
        "routed_fraction": routed / requests,
        "p50_us": _percentile(us, 50),
        "p90_us": _percentile(us, 90),
        "p99_us": _percentile(us, 99),
        "mean_us": float(us.mean()),
        "learn_p50_us": _percentile(learn_times / 1e3, 50),
        # CPU time (not wall) per request of the whole loop: route() plus the proxy's
        # LiveStats events and the bench's own bookkeeping; steadier on a shared machine.
        "loop_cpu_us": loop_cpu_us,
        "header_us": header_us,
        "snapshot_build_us": build_us,
        "first_route_us": first_us,
    }


def measure(
    sizes: Sequence[int] = DEFAULT_SIZES,
    constraints: Sequence[int] = DEFAULT_CONSTRAINTS,
    requests: int = 20000,
    progress: bool = False,
    rounds: int = 3,
) -> list[dict[str, Any]]:
    """One row per (fleet size, number of active constraints); see measure_one for the fields.

    Each row is measured `rounds` times, the rounds interleaved (every row once,
    then every row again), and its figures are the medians over the rounds: on
    a shared machine a burst of noise then moves one round, not the result.
    `p50_rounds_us` keeps each round's p50.
    """
    if rounds < 1:
        raise ValueError(f"rounds: {rounds} is not a count of rounds; give 1 or more")
    for c in constraints:
        if not 0 <= c <= len(CONSTRAINTS):
            raise ValueError(f"constraints: {c} is out of range; counts go from 0 to {len(CONSTRAINTS)} ({CONSTRAINTS})")
    for n in sizes:
        if n < 1:
            raise ValueError(f"sizes: {n} is not a fleet size; give positive backend counts")
    mixes = {c: request_mix(c, requests) for c in constraints}
    fleets = {}
    for n in sizes:
        config = synthetic_config(n)
        fleets[n] = (config, synthetic_telemetry(config))
    runs: dict[tuple[int, int], list[dict[str, Any]]] = {(n, c): [] for n in sizes for c in constraints}
    k = 0
    for r in range(rounds):
        for n in sizes:
            for c in constraints:
                k += 1
                if progress:
                    print(f"[{k}/{rounds * len(runs)}] round {r + 1}: {n} backends, {c} constraints",
                          file=sys.stderr, flush=True)
                runs[n, c].append(measure_one(n, c, requests, fleet=fleets[n], mix=mixes[c]))
    return [_median_row(rs) for rs in runs.values()]


def _median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from a row's rounds: each number the median over the rounds."""
    row = dict(runs[0])
    for key, value in row.items():
        if isinstance(value, float):
            row[key] = float(np.median([r[key] for r in runs]))
    row["rounds"] = len(runs)
    row["p50_rounds_us"] = [round(r["p50_us"], 2) for r in runs]
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    head = f"{'backends':>8} {'constr':>6} {'p50 µs':>8} {'p90 µs':>8} {'p99 µs':>8} {'learn µs':>8} {'loop cpu µs':>11} " \
           f"{'header µs':>9} {'snapshot µs':>11} {'1st route µs':>12}  active"
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['backends']:>8} {r['constraints']:>6} {r['p50_us']:>8.1f} {r['p90_us']:>8.1f} {r['p99_us']:>8.1f} "
            f"{r['learn_p50_us']:>8.1f} {r['loop_cpu_us']:>11.1f} {r['header_us']:>9.1f} {r['snapshot_build_us']:>11.0f} {r['first_route_us']:>12.0f}  {r['active']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastpath.bench.router_cost", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="fleet sizes, comma-separated")
    p.add_argument("--constraints", default=",".join(map(str, DEFAULT_CONSTRAINTS)),
                   help=f"numbers of active constraints, comma-separated (in the order {','.join(CONSTRAINTS)})")
    p.add_argument("--requests", type=int, default=20000, help="timed route() calls per row and round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per row; the table shows medians")
    args = p.parse_args(argv)
    try:
        sizes = [int(x) for x in args.sizes.split(",") if x]
        constraints = [int(x) for x in args.constraints.split(",") if x]
    except ValueError:
        p.error("--sizes and --constraints take comma-separated integers, e.g. --sizes 8,64")
    rows = measure(sizes, constraints, args.requests, progress=True, rounds=args.rounds)
    print(f"router decision cost (route() only; axes {', '.join(AXES)}; medians of {args.rounds} interleaved rounds)")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
