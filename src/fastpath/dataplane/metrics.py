"""The proxy's own counters, rendered as Prometheus text at /metrics."""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Callable

log = logging.getLogger("fastpath.dataplane")


class ProxyMetrics:
    __slots__ = ("requests", "errors", "failovers", "cancelled", "resets", "limits_hit",
                 "connections_total", "connections_open", "pinned_total", "offloaded_total", "offload_refused")

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()  # (backend, ok|error) -> calls
        self.errors = 0
        self.failovers = 0
        self.cancelled = 0
        self.resets = 0
        self.limits_hit: Counter[str] = Counter()
        self.connections_total = 0
        self.connections_open = 0
        self.pinned_total = 0
        self.offloaded_total = 0
        self.offload_refused = 0

    def render(self, gauges: dict[str, float] | None = None) -> str:
        lines = [
            "# TYPE fastpath_requests_total counter",
            *(f'fastpath_requests_total{{backend="{b}",result="{r}"}} {n}' for (b, r), n in sorted(self.requests.items())),
            "# TYPE fastpath_proxy_errors_total counter", f"fastpath_proxy_errors_total {self.errors}",
            "# TYPE fastpath_failovers_total counter", f"fastpath_failovers_total {self.failovers}",
            "# TYPE fastpath_cancelled_total counter", f"fastpath_cancelled_total {self.cancelled}",
            "# TYPE fastpath_stream_resets_total counter", f"fastpath_stream_resets_total {self.resets}",
            "# TYPE fastpath_limit_hits_total counter",
            *(f'fastpath_limit_hits_total{{limit="{k}"}} {n}' for k, n in sorted(self.limits_hit.items())),
            "# TYPE fastpath_connections_total counter", f"fastpath_connections_total {self.connections_total}",
            "# TYPE fastpath_connections_open gauge", f"fastpath_connections_open {self.connections_open}",
            "# TYPE fastpath_pinned_total counter", f"fastpath_pinned_total {self.pinned_total}",
            "# TYPE fastpath_offloaded_total counter", f"fastpath_offloaded_total {self.offloaded_total}",
            "# TYPE fastpath_offload_refused_total counter", f"fastpath_offload_refused_total {self.offload_refused}",
        ]
        for name, value in (gauges or {}).items():
            lines += [f"# TYPE {name} gauge", f"{name} {value}"]
        return "\n".join(lines) + "\n"


class MetricsServer(asyncio.Protocol):
    """A minimal HTTP/1.1 responder for GET /metrics (one request per connection)."""

    def __init__(self, render: Callable[[], str]) -> None:
        self.render = render
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 8192:
                self._reply(b"431 Request Header Fields Too Large", b"")
            return
        line = self.buf.split(b"\r\n", 1)[0].split()
        if len(line) >= 2 and line[0] == b"GET" and line[1].split(b"?")[0] == b"/metrics":
            self._reply(b"200 OK", self.render().encode())
        else:
            self._reply(b"404 Not Found", b"try GET /metrics\n")

    def _reply(self, status: bytes, body: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; version=0.0.4\r\n"
                             b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        self.transport.close()
