"""TTFT against offered load for one simulated site: the curve routers must respect.

    python -m fastpath.sim.load_curve [--site use1-a100] [--seconds 4]

Drives Poisson arrivals at fractions of the site's nominal capacity
(slots / service time) over real gRPC and prints client-observed TTFT
p50/p99 per load, showing the knee near saturation.  `measure()` returns the
rows for benchmarks.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from dataclasses import replace

import grpc

from fastpath.config import Backend, load_config
from fastpath.gen import grpc_service_pb2_grpc as pb_grpc
from fastpath.sim.llm_request import make_request
from fastpath.sim.site import Site


def capacity_rps(b: Backend, max_tokens: int) -> float:
    """Requests per second the site sustains with a full batch: slots / (prefill + decode), both inflated.

    Full-batch inflation is the site's (fastpath.sim.batch_queue): prefill ×2, decode ×1.5.
    """
    spec = b.sim
    assert spec is not None
    service_s = 2.0 * spec.prefill_ms / 1000 + 1.5 * (max_tokens - 1) / spec.tokens_per_s
    return spec.slots / service_s


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def _one_load(stub: pb_grpc.GRPCInferenceServiceStub, model: str, rate: float, seconds: float,
                    max_tokens: int, rng: random.Random) -> list[float]:
    ttfts: list[float] = []

    async def call(i: int) -> None:
        async def requests():
            yield make_request(model, f"load {rate:.1f} request {i}", max_tokens)

        t0 = time.perf_counter()
        first = True
        async for _ in stub.ModelStreamInfer(requests()):
            if first:
                ttfts.append(time.perf_counter() - t0)
                first = False

    tasks = []
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        tasks.append(asyncio.ensure_future(call(i)))
        i += 1
        await asyncio.sleep(rng.expovariate(rate))
    await asyncio.gather(*tasks)
    return ttfts


async def _measure(b: Backend, loads: tuple[float, ...], seconds: float, max_tokens: int, seed: int) -> list[dict]:
    site = Site(replace(b, address="127.0.0.1:0", metrics_url=""), {})
    await site.start()
    rows = []
    try:
        async with grpc.aio.insecure_channel(site.address) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            cap = capacity_rps(b, max_tokens)
            for load in loads:
                ttfts = await _one_load(stub, b.models[0], load * cap, seconds, max_tokens, random.Random(seed))
                rows.append({"site": b.name, "offered_load": load, "rate_rps": round(load * cap, 2),
                             "requests": len(ttfts), "ttft_p50_ms": round(_pct(ttfts, 0.5) * 1000, 1),
                             "ttft_p99_ms": round(_pct(ttfts, 0.99) * 1000, 1)})
                print(f"  load {load:4.2f}: {rows[-1]['ttft_p50_ms']:7.1f} ms p50 {rows[-1]['ttft_p99_ms']:7.1f} ms p99",
                      file=sys.stderr, flush=True)
    finally:
        await site.stop(grace=None)
    return rows


def measure(site: str = "use1-a100", loads: tuple[float, ...] = (0.2, 0.5, 0.7, 0.85, 1.0, 1.15, 1.3),
            seconds: float = 4.0, max_tokens: int = 16, seed: int = 1) -> list[dict]:
    """TTFT p50/p99 (ms) per offered load (fraction of capacity_rps) for a site of the default config."""
    b = load_config().backend(site)
    if b.sim is None:
        raise ValueError(f"{site} has no [backends.sim] table")
    return asyncio.run(_measure(b, loads, seconds, max_tokens, seed))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastpath.sim.load_curve", description=__doc__.splitlines()[0])
    p.add_argument("--site", default="use1-a100")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds per load level")
    p.add_argument("--max-tokens", type=int, default=16)
    a = p.parse_args(argv)
    b = load_config().backend(a.site)
    print(f"{a.site}: capacity ≈ {capacity_rps(b, a.max_tokens):.1f} req/s at {a.max_tokens} tokens", file=sys.stderr)
    rows = measure(a.site, seconds=a.seconds, max_tokens=a.max_tokens)
    print("offered_load rate_rps requests ttft_p50_ms ttft_p99_ms")
    for r in rows:
        print(f"{r['offered_load']:12.2f} {r['rate_rps']:8.1f} {r['requests']:8d} {r['ttft_p50_ms']:11.1f} {r['ttft_p99_ms']:11.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
