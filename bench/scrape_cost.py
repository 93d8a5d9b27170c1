"""CPU per metrics scrape: the controller's own HTTP/1.1 client and parser against the library route.

The controller reads every backend's /metrics 20 times a second. This runs
both routes side by side in one process against one loopback endpoint serving
a page shaped like a site's (the simulated fleet's page, and a vLLM-sized one
with per-model histograms), and reports CPU per scrape (medians of repeats)
and what 20 scrapes/s per backend would cost for a fleet of 5:

  hand     fastpath.control.http1client (kept-alive) + promtext.parse(only=wanted)
  lib      urllib in a worker thread (a new connection per read, as the
           standard library does) + prometheus_client.parser
  parsers  the two parsers alone on the same bytes

    python -m fastpath.bench.scrape_cost
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from fastpath.control import promtext
from fastpath.control.http1client import Http1Client
from fastpath.control.scraper import WANTED, read_metrics
from fastpath.sim.metrics import Histogram, ModelCounters, render


def site_page(models: int) -> bytes:
    names = tuple(f"model-{i}" for i in range(models))
    counters = {m: ModelCounters() for m in names}
    for c in counters.values():
        for v in (0.01, 0.05, 0.2, 1.0):
            c.ttft.observe(v)
    return render(site="s", models=names, waiting={m: 1 for m in names}, running={m: 2 for m in names},
                  cache_usage=0.4, counters=counters, power_draw=1200, power_budget=4000, slots=16,
                  kv_hits=3, kv_misses=1, fault="none").encode()


def vllm_page(models: int) -> bytes:
    """A vLLM-sized page: the site page plus the latency histograms vLLM exports per model."""
    extra = []
    for name in ("vllm:e2e_request_latency_seconds", "vllm:time_per_output_token_seconds",
                 "vllm:request_prompt_tokens", "vllm:request_generation_tokens", "vllm:request_queue_time_seconds"):
        extra.append(f"# HELP {name} x\n# TYPE {name} histogram")
        for i in range(models):
            h = Histogram()
            h.observe(0.3)
            extra.extend(h.lines(name, f'model_name="model-{i}"'))
    return site_page(models) + ("\n".join(extra) + "\n").encode()


def parse_hand(body: bytes) -> dict[str, float]:
    return read_metrics(promtext.parse(body, strict=False, only=WANTED))


def parse_lib(body: bytes) -> dict[str, float]:
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if s.name in WANTED:
                out[s.name] = out.get(s.name, 0.0) + s.value
    return out


async def serve(body: bytes) -> tuple[asyncio.base_events.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                close = b"Connection: close" in head or b"connection: close" in head.lower()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: %d\r\n%s\r\n%s"
                             % (len(body), b"Connection: close\r\n" if close else b"", body))
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/metrics"


def cpu_us(fn, n: int) -> float:
    t = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t) / n * 1e6


async def acpu_us(fn, n: int) -> float:
    t = time.process_time()
    for _ in range(n):
        await fn()
    return (time.process_time() - t) / n * 1e6


async def measure(page: bytes, n: int, repeats: int) -> dict[str, float]:
    server, url = await serve(page)
    client = Http1Client(url, 2.0)

    async def hand() -> None:
        parse_hand(await client.get())

    def fetch() -> bytes:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback
            return r.read()

    async def lib() -> None:
        parse_lib(await asyncio.to_thread(fetch))

    assert parse_hand(page).keys() and parse_lib(page).keys()
    runs: dict[str, list[float]] = {"hand": [], "lib": [], "parse_hand": [], "parse_lib": []}
    for _ in range(repeats):  # interleaved, so load changes hit both alike
        runs["hand"].append(await acpu_us(hand, n))
        runs["lib"].append(await acpu_us(lib, n))
        runs["parse_hand"].append(cpu_us(lambda: parse_hand(page), n))
        runs["parse_lib"].append(cpu_us(lambda: parse_lib(page), n))
    client.close()
    server.close()
    return {k: statistics.median(v) for k, v in runs.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="scrapes per run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    out = {"load_average": os.getloadavg()[0]}
    for label, page in (("sim page (3 models)", site_page(3)), ("vLLM-sized page (3 models)", vllm_page(3))):
        r = asyncio.run(measure(page, args.n, args.repeats))
        r["bytes"] = len(page)
        out[label] = r
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"CPU per scrape, µs (median of {args.repeats} runs of {args.n}; load average {out['load_average']:.2f})")
    for label, r in out.items():
        if label == "load_average":
            continue
        print(f"  {label}, {r['bytes']} bytes:")
        print(f"    fetch+parse  hand {r['hand']:8.0f}   lib {r['lib']:8.0f}   lib/hand {r['lib'] / r['hand']:.1f}x")
        print(f"    parse only   hand {r['parse_hand']:8.0f}   lib {r['parse_lib']:8.0f}   "
              f"lib/hand {r['parse_lib'] / r['parse_hand']:.1f}x")
        print(f"    5 backends x 20/s: hand {r['hand'] * 100 / 1e4:.1f}% of a core, lib {r['lib'] * 100 / 1e4:.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
