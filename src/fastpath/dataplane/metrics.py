"""The proxy's metrics at scrape time: Prometheus families built from what the fast path counted.

The counting itself (ProxyMetrics: plain ints, dicts and bucket lists, recorded per call) lives in
`fastpath.dataplane.call_metrics`, compiled with the fast path, and is re-exported here;
`ProxyCollector` turns a frozen copy of it into prometheus_client metric families when /metrics
is read, so the dataplane never imports prometheus_client.

Names follow Prometheus conventions, and the OpenTelemetry GenAI semantic
conventions where they have one: `gen_ai_server_request_duration_seconds`,
`gen_ai_server_time_to_first_token_seconds` (label `gen_ai_request_model`).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from .call_metrics import (AXES, DECISION_BUCKETS, DURATION_BUCKETS, MAX_SERIES, PATHS, TTFT_BUCKETS, Buckets,
                           Histograms, ProxyMetrics, winning_axis)

__all__ = ["AXES", "DECISION_BUCKETS", "DURATION_BUCKETS", "MAX_SERIES", "PATHS", "TTFT_BUCKETS", "Buckets",
           "Histograms", "ProxyCollector", "ProxyMetrics", "winning_axis"]


def _counter(name: str, doc: str, labels: Sequence[str], items: Iterable[tuple[Sequence[str], float]]) -> CounterMetricFamily:
    m = CounterMetricFamily(name, doc, labels=labels)
    for values, n in items:
        m.add_metric(list(values), n)
    return m


class ProxyCollector(Collector):
    """Builds the proxy's metric families from ProxyMetrics at scrape time."""

    def __init__(self, m: ProxyMetrics) -> None:
        self.m = m

    def _hist(self, name: str, doc: str, h: Histograms) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(name, doc, labels=["backend", "gen_ai_request_model", "status"])
        names = self.m.backend_names
        for (i, model, ok), b in sorted(h.series.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
            if not any(b.counts):
                continue
            backend = names[i] if 0 <= i < len(names) else str(i)
            fam.add_metric([backend, model, "ok" if ok else "error"], b.cumulative(h.bounds), b.sum)
        return fam

    def collect(self) -> Iterable[Any]:
        m = self.m
        yield self._hist("gen_ai_server_request_duration_seconds",
                         "Time from a call's HEADERS to its end, by backend, model and status "
                         "(an attempt failed over to another backend counts as an error of the first)", m.duration)
        yield self._hist("gen_ai_server_time_to_first_token_seconds",
                         "Time from a call's HEADERS to the backend's first response message", m.ttft)
        fam = HistogramMetricFamily("fastpath_router_decision_seconds", "Time the router took to rank backends for a call")
        b = m._decision_buckets
        fam.add_metric([], b.cumulative(DECISION_BUCKETS), b.sum)
        yield fam
        yield _counter("fastpath_requests", "Calls (and failed attempts) by backend and result",
                       ["backend", "result"], sorted(m.requests.items()))
        yield _counter("fastpath_router_decisions", "Routing decisions by policy and by the axis that weighed most",
                       ["policy", "axis"], sorted(m.decisions.items()))
        yield _counter("fastpath_failovers", "Calls replayed on the next backend after one failed", [], [((), m.failovers)])
        yield _counter("fastpath_hedges", "Hedged attempts by outcome", ["outcome"],
                       (((k,), n) for k, n in sorted(m.hedges.items())))
        yield _counter("fastpath_sheds", "Calls shed under overload by priority and reason", ["priority", "reason"],
                       sorted(m.sheds.items()))
        yield _counter("fastpath_budget_refusals", "Calls refused because a budget ran out", ["budget"],
                       (((k,), n) for k, n in sorted(m.budget_refusals.items())))
        yield _counter("fastpath_model_substitutions", "Calls served by a substitute model (a model group's member)",
                       ["requested_model", "served_model"], sorted(m.substitutions.items()))
        yield _counter("fastpath_model_substitutes_refused",
                       "Substitute backends passed over because the call's messages cannot be rewritten "
                       "(compressed, too large, not protobuf)", ["requested_model", "substitute_model"],
                       sorted(m.substitutes_refused.items()))
        g = GaugeMetricFamily("fastpath_queue_depth", "Calls waiting for a backend, by priority", labels=["priority"])
        for p, n in sorted(m.queue_depth.items()):
            g.add_metric([p], n)
        yield g
        yield _counter("fastpath_limit_hits", "Client requests refused by a protocol or resource limit", ["limit"],
                       (((k,), n) for k, n in sorted(m.limits_hit.items())))
        yield _counter("fastpath_proxy_errors", "Calls answered with an error by the proxy itself", [], [((), m.errors)])
        yield _counter("fastpath_cancelled", "Calls cancelled by the client", [], [((), m.cancelled)])
        yield _counter("fastpath_stream_resets", "Streams reset by the proxy", [], [((), m.resets)])
        yield _counter("fastpath_connections", "Client connections accepted", [], [((), m.connections_total)])
        yield GaugeMetricFamily("fastpath_connections_open", "Client connections open", value=m.connections_open)
        yield _counter("fastpath_pinned", "Connections pinned to one backend (sessions)", [], [((), m.pinned_total)])
        yield _counter("fastpath_offloaded", "Pinned sessions moved off the Python relay", [], [((), m.offloaded_total)])
        yield _counter("fastpath_offload_refused", "Pinned sessions that stayed on the Python relay", [],
                       [((), m.offload_refused)])
        flows: Counter[str] = Counter({p: 0 for p in PATHS})
        nbytes: Counter[str] = Counter({p: 0 for p in PATHS})
        nbytes.update(m.flow_bytes_closed)
        for row in m.open_flows():
            flows[row["path"]] += 1
            nbytes["python"] += row["bytes_python"]
            if row["path"] != "python":
                nbytes[row["path"]] += row["bytes_offload"]
        g = GaugeMetricFamily("fastpath_flows", "Pinned sessions open, by the path their bytes take", labels=["path"])
        for p, n in sorted(flows.items()):
            g.add_metric([p], n)
        yield g
        yield _counter("fastpath_flow_bytes", "Bytes of pinned sessions by the path that moved them", ["path"],
                       (((p,), n) for p, n in sorted(nbytes.items())))
        for name, value in m.gauges().items():
            yield GaugeMetricFamily(name, name.replace("_", " ").removeprefix("fastpath "), value=value)
