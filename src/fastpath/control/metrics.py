"""The controller's own metrics (prometheus_client), served at [control] metrics_listen.

Scrape latency and errors per backend, the pushed state's version, push
latency (from a change in the fleet state to the update leaving for a
subscriber), subscribers, reloads, and the flows and sessions learned. The
histograms are prometheus_client's own: the controller records a few hundred
samples a second, far from where their ~1 µs per observation matters.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter as PCounter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from fastpath.control.controller import Controller

log = logging.getLogger("fastpath.control.metrics")
SCRAPE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PUSH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class ControllerMetrics:
    def __init__(self, ctl: "Controller") -> None:
        self.ctl = ctl
        self.registry = CollectorRegistry(auto_describe=False)
        self.scrape_seconds = Histogram("fastpath_controller_scrape_duration_seconds",
                                        "Time to read one backend's metrics endpoint", ["backend"],
                                        buckets=SCRAPE_BUCKETS, registry=self.registry)
        self.scrape_errors = PCounter("fastpath_controller_scrape_errors", "Failed reads of a backend's metrics",
                                      ["backend"], registry=self.registry)
        self.push_seconds = Histogram("fastpath_controller_push_latency_seconds",
                                      "From a change of the pushed state to its update leaving for a subscriber",
                                      ["kind"], buckets=PUSH_BUCKETS, registry=self.registry)
        self.reloads: Counter[str] = Counter()
        self.last_scrape_s: dict[str, float] = {}
        self.registry.register(_StateCollector(self))
        self._server: Any = None

    def scraped(self, backend: str, seconds: float, ok: bool) -> None:
        self.last_scrape_s[backend] = seconds
        self.scrape_seconds.labels(backend).observe(seconds)
        if not ok:
            self.scrape_errors.labels(backend).inc()

    def pushed(self, seconds: float, full: bool) -> None:
        self.push_seconds.labels("full" if full else "delta").observe(seconds)

    def start(self) -> None:
        """Serves /metrics on [control] metrics_listen from the controller's loop (a busy port is logged, not fatal)."""
        import asyncio

        from fastpath.config import split_hostport
        from fastpath.metrics_http import in_place, serve_metrics

        listen = getattr(self.ctl.config.control, "metrics_listen", "")
        if not listen:
            return
        host, port = split_hostport(listen, "control.metrics_listen")

        async def start() -> None:
            try:
                self._server = await serve_metrics(in_place(self.registry), host, port)
                log.info("controller metrics on http://%s/metrics", self.address)
            except OSError as e:
                log.warning("controller metrics endpoint %s not started: %s", listen, e.strerror)

        self._task = asyncio.get_running_loop().create_task(start())

    @property
    def address(self) -> str:
        if self._server is None or not self._server.sockets:
            return ""
        h, p = self._server.sockets[0].getsockname()[:2]
        return f"{h}:{p}"

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


class _StateCollector(Collector):
    """Gauges read from the controller's state at scrape time."""

    def __init__(self, m: ControllerMetrics) -> None:
        self.m = m

    def collect(self) -> Iterable[Any]:
        ctl = self.m.ctl
        st = ctl.state
        yield GaugeMetricFamily("fastpath_controller_state_version", "Version of the pushed state", value=st.version)
        yield GaugeMetricFamily("fastpath_controller_config_generation", "Config file generation (grows per reload)",
                                value=ctl.config_generation)
        yield GaugeMetricFamily("fastpath_controller_subscribers", "Proxies subscribed to pushed configuration",
                                value=len(ctl.subscriptions))
        yield GaugeMetricFamily("fastpath_controller_sessions_learned", "Sessions with a learned backend",
                                value=len(st.sessions))
        yield CounterMetricFamily("fastpath_controller_sessions_learned_changes",
                                  "Changes to learned session affinity", value=st.session_seq)
        flows: Counter[str] = Counter({p: 0 for p in ("python", "kernel", "dpu")})
        for f in st.flows.entries():
            flows[f.path] += 1
        g = GaugeMetricFamily("fastpath_controller_flows", "Sessions in the flow table by data path", labels=["path"])
        for p, n in sorted(flows.items()):
            g.add_metric([p], n)
        yield g
        c = CounterMetricFamily("fastpath_controller_reloads", "Config reloads by result", labels=["result"])
        for r in ("applied", "refused"):
            c.add_metric([r], self.m.reloads[r])
        yield c
        g = GaugeMetricFamily("fastpath_controller_backend_healthy", "1 when the backend passes its probes",
                              labels=["backend"])
        for name, h in sorted(st.health.items()):
            g.add_metric([name], 1.0 if h.healthy else 0.0)
        yield g
        yield CounterMetricFamily("fastpath_controller_observations_rejected",
                                  "Observations from proxies that could not be used", value=st.rejected_observations)
