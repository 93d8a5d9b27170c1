"""GET /metrics on an asyncio loop: prometheus_client's exposition behind a few lines of HTTP/1.1.

The proxy and the controller are single event loops; prometheus_client's own
server would run in a thread and read their state from there, racing the
loop. Here the registry is rendered on the loop itself, between two events,
with `generate_latest` (a few hundred µs for the proxy's families), and the
connection closes after the answer. Anything but GET /metrics gets a 404 that
says what to ask for.
"""
from __future__ import annotations

import asyncio
import logging

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("fastpath.metrics")
MAX_REQUEST_HEAD = 8192


class MetricsHandler(asyncio.Protocol):
    """One request per connection."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if b"\r\n\r\n" not in self.buf:
            if len(self.buf) > MAX_REQUEST_HEAD:
                self._reply(b"431 Request Header Fields Too Large", b"request head over 8 KiB\n")
            return
        line = self.buf.split(b"\r\n", 1)[0].split()
        if len(line) >= 2 and line[0] in (b"GET", b"HEAD") and line[1].split(b"?")[0] == b"/metrics":
            try:
                body = generate_latest(self.registry)
            except Exception as e:  # a broken collector must not take the endpoint down silently
                log.exception("rendering /metrics failed")
                self._reply(b"500 Internal Server Error", f"rendering metrics failed: {e}\n".encode())
                return
            self._reply(b"200 OK", b"" if line[0] == b"HEAD" else body, CONTENT_TYPE_LATEST.encode())
        else:
            self._reply(b"404 Not Found", b"try GET /metrics\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def _reply(self, status: bytes, body: bytes, ctype: bytes = b"text/plain; charset=utf-8") -> None:
        t = self.transport
        if t is None:
            return
        t.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype + b"\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        t.close()
        self.buf = b""


async def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> asyncio.base_events.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: MetricsHandler(registry), host, port, reuse_address=True)
