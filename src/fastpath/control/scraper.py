"""Reads every backend's Prometheus metrics on a fixed interval.

The router scores TTFT and headroom from what backends say about their own
queues, so the controller reads the names vLLM exports
(`vllm:num_requests_waiting`, `vllm:num_requests_running`,
`vllm:gpu_cache_usage_perc`, or `vllm:kv_cache_usage_perc` in newer vLLM) and
the simulated fleet's power and batch-size gauges. Each backend has its own
loop and its own kept-alive connection, so one slow or dead backend delays
nobody else; a failed read keeps the last values and records why.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from fastpath.config import Backend
from fastpath.control import promtext
from fastpath.control.http1client import Http1Client, HttpError

log = logging.getLogger("fastpath.control.scraper")

# Telemetry field -> (metric names, first found wins; how label sets combine).
METRIC_NAMES: dict[str, tuple[tuple[str, ...], str]] = {
    "num_requests_waiting": (("vllm:num_requests_waiting",), "sum"),
    "num_requests_running": (("vllm:num_requests_running",), "sum"),
    "gpu_cache_usage_perc": (("vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc"), "mean"),
    "power_draw_watts": (("fastpath_sim_power_draw_watts",), "sum"),
    "power_budget_watts": (("fastpath_sim_power_budget_watts",), "sum"),
    "max_num_seqs": (("fastpath_sim_max_num_seqs",), "sum"),
}
WANTED = tuple(n for names, _ in METRIC_NAMES.values() for n in names)


@dataclass
class BackendMetrics:
    """What the last successful read of one backend said (0 = not exported)."""

    has_metrics: bool
    num_requests_waiting: float = 0.0
    num_requests_running: float = 0.0
    gpu_cache_usage_perc: float = 0.0
    power_draw_watts: float = 0.0
    power_budget_watts: float = 0.0
    max_num_seqs: float = 0.0
    scraped_unix_ms: int = 0
    error: str = ""  # why the latest read failed; "" when it worked
    skipped_lines: int = 0  # malformed lines in the latest read
    scrapes: int = 0
    failures: int = 0
    present: set[str] = field(default_factory=set)  # fields the backend exports

    def values(self) -> tuple[float, ...]:
        return tuple(getattr(self, f) for f in METRIC_NAMES)


def read_metrics(expo: promtext.Exposition) -> dict[str, float]:
    """The telemetry fields found in one exposition."""
    out: dict[str, float] = {}
    for fname, (names, how) in METRIC_NAMES.items():
        for name in names:
            value = expo.total(name) if how == "sum" else expo.mean(name)
            if value is not None:
                out[fname] = value
                break
    if "gpu_cache_usage_perc" in out:  # vLLM exports a fraction; keep it one
        out["gpu_cache_usage_perc"] = min(max(out["gpu_cache_usage_perc"], 0.0), 1.0)
    return out


class Scraper:
    """One read loop per backend that has a metrics_url."""

    def __init__(
        self,
        backends: Iterable[Backend],
        interval_s: float,
        timeout_s: float | None = None,
        on_change: Callable[[str, bool], None] | None = None,
        on_scrape: Callable[[str, float, bool], None] | None = None,
    ) -> None:
        self.interval_s = max(interval_s, 0.005)
        self.timeout_s = timeout_s if timeout_s is not None else max(0.5, 4 * self.interval_s)
        self.on_change = on_change or (lambda name, changed: None)
        self.on_scrape = on_scrape or (lambda name, seconds, ok: None)  # every read: how long, and whether it worked
        self.metrics: dict[str, BackendMetrics] = {}
        self._clients: dict[str, Http1Client] = {}
        for b in backends:
            self.metrics[b.name] = BackendMetrics(has_metrics=bool(b.metrics_url))
            if b.metrics_url:
                self._clients[b.name] = Http1Client(b.metrics_url, self.timeout_s)

    async def run(self) -> None:
        """Scrapes until cancelled."""
        try:
            await asyncio.gather(*(self._loop(name) for name in self._clients))
        finally:
            self.close()

    async def _loop(self, name: str) -> None:
        next_at = time.monotonic()
        while True:
            await self.scrape_once(name)
            next_at += self.interval_s
            now = time.monotonic()
            if next_at < now:  # a slow read: skip the ticks it covered rather than bunch up
                next_at = now
            await asyncio.sleep(next_at - now)

    async def scrape_once(self, name: str) -> BackendMetrics:
        """Reads one backend now, updates its metrics, and reports the change."""
        m = self.metrics[name]
        client = self._clients[name]
        m.scrapes += 1
        before = m.values()
        t0 = time.perf_counter()
        try:
            body = await client.get()
        except HttpError as e:
            self.on_scrape(name, time.perf_counter() - t0, False)
            self._failed(name, m, f"metrics {client.url}: {e}")
            return m
        self.on_scrape(name, time.perf_counter() - t0, True)
        expo = promtext.parse(body, strict=False, only=WANTED)
        found = read_metrics(expo)
        for fname in METRIC_NAMES:
            setattr(m, fname, found.get(fname, 0.0))
        m.present = set(found)
        m.scraped_unix_ms = int(time.time() * 1000)
        if expo.skipped and m.skipped_lines != len(expo.skipped):
            lineno, reason = expo.skipped[0]
            log.warning("%s: %d malformed metrics line(s) skipped, first at line %d: %s", name, len(expo.skipped), lineno, reason)
        m.skipped_lines = len(expo.skipped)
        if m.error:
            log.info("%s: metrics readable again", name)
            m.error = ""
        self.on_change(name, m.values() != before)
        return m

    def _failed(self, name: str, m: BackendMetrics, why: str) -> None:
        m.failures += 1
        if why != m.error:
            log.warning("%s: %s", name, why)
            m.error = why
            self.on_change(name, True)

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
