"""Priority burst: admission control keeps high-priority TTFT while a low-priority burst is shed with pushback.

Two classes of traffic share two simulated sites in one region (12 batch
slots in all) through `fastpath up`'s stack (fleet, controller, proxy):
  high  x-fastpath-priority 5, tenant "interactive", a steady Poisson stream
        with a tight TTFT SLO (x-fastpath-slo-ttft-ms);
  low   x-fastpath-priority 0, tenant "batch", a light stream that bursts
        far beyond the fleet's capacity in the middle third, looser SLO.
The same seeded trace is replayed twice, each on a fresh stack: with an
[admission] table (calls no site has headroom for are held in the proxy,
high priority first, and shed with RESOURCE_EXHAUSTED and
grpc-retry-pushback-ms when they can no longer meet their SLO) and without
one (every call goes to a site at once and queues there). One row per
(mode, priority): requests, served, shed (and how many of those carried a
pushback), TTFT p50/p99 of the served calls at the client, the median
pushback; the admission run keeps a per-call timeline for the plot.

`python -m fastpath.bench.priority_burst [--quick] [--plot DIR]`; the bench
harness runs it with the fleet scenarios (`make bench`).
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import json
import random
import sys
import time
from dataclasses import dataclass
from typing import Any

from .fleet_scenarios import poisson_times

SITES = ("use1-a100", "use1-l4")  # one region, 8 + 4 batch slots
REGION = "us-east"
HIGH, LOW = 5, 0
CLASSES = {HIGH: ("interactive", 300.0), LOW: ("batch", 1500.0)}  # priority -> (tenant, SLO ms)
TIMELINE_MAX = 800  # points kept for the plot
# Long low-priority calls: the burst overloads the sites' batch slots (GPU time), not the
# client's CPU — a few hundred calls, each holding a slot for about half a second.
HIGH_TOKENS, LOW_TOKENS = 8, 48
WARMUP_CALLS = 6


@dataclass(frozen=True)
class Arrival:
    t: float
    priority: int
    max_tokens: int


def make_trace(seed: int, duration_s: float, high_rate: float, low_rate: float, burst_rate: float) -> list[Arrival]:
    """High priority at high_rate throughout; low priority at low_rate, burst_rate in the middle third."""
    rng = random.Random(seed)
    out = [Arrival(t, HIGH, HIGH_TOKENS) for t in poisson_times(rng, duration_s, high_rate)]
    out += [Arrival(t, LOW, LOW_TOKENS) for t in poisson_times(rng, duration_s, low_rate, burst_rate)]
    out.sort(key=lambda a: a.t)
    return out


def burst_config(base: Any, admission: bool) -> Any:
    """`base` cut to SITES, with an [admission] table or without one."""
    from fastpath.config import parse_config

    data = copy.deepcopy(base.raw)
    data["backends"] = [b for b in data["backends"] if b["name"] in SITES]
    data.pop("admission", None)
    if admission:
        data["admission"] = {"max_queue_bytes": 4 << 20, "max_wait_ms": 3000}
    return parse_config(data, f"{base.source} (priority burst, admission {'on' if admission else 'off'})")


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(q / 100 * len(s)))], 1)


async def replay(proxy: str, model: str, trace: list[Arrival], tag: str, deadline_s: float = 10.0) -> list[dict]:
    """Sends every arrival at its time through the proxy; one record per call."""
    import grpc

    from fastpath.gen import grpc_service_pb2_grpc as pb_grpc
    from fastpath.sim.llm_request import make_request, text_output

    channels = [grpc.aio.insecure_channel(proxy, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(4)]
    await asyncio.gather(*(asyncio.wait_for(ch.channel_ready(), 10) for ch in channels))
    stubs = [pb_grpc.GRPCInferenceServiceStub(ch) for ch in channels]
    records: list[dict] = []

    async def one(k: int, a: Arrival) -> None:
        tenant, slo = CLASSES[a.priority]
        md = (("x-fastpath-region", REGION), ("x-fastpath-priority", str(a.priority)),
              ("x-fastpath-tenant", tenant), ("x-fastpath-slo-ttft-ms", f"{slo:g}"))
        rec: dict[str, Any] = {"t": round(a.t, 4), "priority": a.priority, "ttft_ms": None, "status": "OK",
                               "pushback_ms": None}
        t0 = time.monotonic()

        async def reqs():
            yield make_request(model, f"{tag}-{k} route the token cache", a.max_tokens, request_id=f"{tag}-{k}")

        call = stubs[k % len(stubs)].ModelStreamInfer(reqs(), metadata=md, timeout=deadline_s)
        try:
            async for msg in call:
                if msg.error_message:
                    raise RuntimeError(msg.error_message)
                if rec["ttft_ms"] is None and text_output(msg.infer_response):
                    rec["ttft_ms"] = round((time.monotonic() - t0) * 1000, 2)
        except grpc.aio.AioRpcError as e:
            rec["status"] = e.code().name
            for key, value in (e.trailing_metadata() or ()):
                if key == "grpc-retry-pushback-ms":
                    rec["pushback_ms"] = int(value)
        except Exception as e:  # noqa: BLE001 - a failed call is counted, not raised
            rec["status"] = type(e).__name__
        records.append(rec)

    # Warm-up, not measured: the proxy's upstream connections and the sites' first calls.
    for k in range(WARMUP_CALLS):
        call = stubs[k % len(stubs)].ModelStreamInfer(
            iter([make_request(model, f"{tag} warm-up {k}", 2, request_id=f"{tag}-w{k}")]),
            metadata=(("x-fastpath-region", REGION),), timeout=deadline_s)
        async for _ in call:
            pass
    await asyncio.sleep(0.5)
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    async def at(k: int, a: Arrival) -> None:  # each call at its time in the trace
        await asyncio.sleep(max(0.0, t0 + a.t - loop.time()))
        await one(k, a)

    await asyncio.gather(*(at(k, a) for k, a in enumerate(trace)))
    for ch in channels:
        await ch.close()
    return records


def rows_of(mode: str, records: list[dict], seed: int, duration_s: float) -> list[dict[str, Any]]:
    rows = []
    for prio in (HIGH, LOW):
        rs = [r for r in records if r["priority"] == prio]
        served = [r for r in rs if r["status"] == "OK" and r["ttft_ms"] is not None]
        shed = [r for r in rs if r["status"] == "RESOURCE_EXHAUSTED"]
        pushbacks = [r["pushback_ms"] for r in shed if r["pushback_ms"] is not None]
        ttfts = [r["ttft_ms"] for r in served]
        slo = CLASSES[prio][1]
        rows.append({
            "type": "fleet", "layout": "priority-burst", "policy": f"{mode}/{'high' if prio == HIGH else 'low'}",
            "mode": mode, "priority": prio, "tenant": CLASSES[prio][0], "slo_ttft_ms": slo,
            "requests": len(rs), "served": len(served), "shed": len(shed), "shed_with_pushback": len(pushbacks),
            "failed_other": len(rs) - len(served) - len(shed),
            "shed_share": round(len(shed) / len(rs), 4) if rs else None,
            "ttft_p50_ms": _pct(ttfts, 50), "ttft_p99_ms": _pct(ttfts, 99),
            "within_slo_share": round(sum(t <= slo for t in ttfts) / len(rs), 4) if rs else None,
            "pushback_p50_ms": _pct([float(p) for p in pushbacks], 50),
            "seed": seed, "trace_duration_s": duration_s,
        })
    if mode == "admission":
        step = max(1, len(records) // TIMELINE_MAX)
        rows[0]["timeline"] = [[r["t"], r["priority"], r["ttft_ms"], r["status"] == "RESOURCE_EXHAUSTED"]
                               for r in sorted(records, key=lambda r: r["t"])[::step]]
    return rows


def measure(quick: bool = False, seed: int = 7, progress: bool = False) -> list[dict[str, Any]]:
    """Rows for (admission, no-admission) x (high, low) over one seeded trace."""
    from fastpath.config import load_config, with_ports
    from fastpath.ports import free_port_block
    from fastpath.up import Stack

    base = load_config()
    duration = 3.0 if quick else 6.0
    trace = make_trace(seed, duration, high_rate=8.0, low_rate=4.0, burst_rate=60.0)
    rows: list[dict[str, Any]] = []
    for mode in ("admission", "no-admission"):
        cfg = with_ports(burst_config(base, mode == "admission"), free_port_block(3 + 2 * len(SITES)))
        model = sorted(set(cfg.backends[0].models) & set(cfg.backends[1].models))[0]
        t0 = time.monotonic()
        with Stack(cfg, log_level="WARNING", workers=1) as stack:
            if progress:
                print(f"[priority-burst/{mode}] stack up in {time.monotonic() - t0:.1f} s; {len(trace)} arrivals",
                      file=sys.stderr, flush=True)
            records = asyncio.run(replay(stack.proxy_address, model, trace, tag=f"pb{mode[0]}{seed}"))
        got = rows_of(mode, records, seed, duration)
        rows += got
        if progress:
            for r in got:
                print(f"[priority-burst] {r['policy']:20s} ttft p50 {r['ttft_p50_ms']} p99 {r['ttft_p99_ms']} ms, "
                      f"shed {r['shed']}/{r['requests']} ({r['shed_with_pushback']} with pushback, "
                      f"p50 {r['pushback_p50_ms']} ms)", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastpath.bench.priority_burst", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a 3 s trace instead of 6 s")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", action="store_true", help="print rows as JSON")
    p.add_argument("--plot", metavar="DIR", help="write priority_burst.png into DIR")
    args = p.parse_args(argv)
    rows = measure(quick=args.quick, seed=args.seed, progress=True)
    if args.plot:
        from .plots import plot_rows, priority_burst

        print(f"plot: {plot_rows(priority_burst, rows, args.plot)}", file=sys.stderr)
    for r in rows if not args.json else ():
        print(f"{r['policy']:20s} ttft p50 {r['ttft_p50_ms']!s:>7} p99 {r['ttft_p99_ms']!s:>7} ms  "
              f"shed {r['shed']}/{r['requests']} (pushback {r['shed_with_pushback']}, p50 {r['pushback_p50_ms']} ms)"
              f"  in SLO {r['within_slo_share']}")
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
