"""GET /metrics on an asyncio loop: prometheus_client's exposition behind a few lines of HTTP/1.1.

The proxy and the controller are single event loops, and prometheus_client's
`generate_latest` is slow for a loop that relays tokens: ~25 µs per sample
line here, 10-28 ms for the proxy's ~1150 lines (5 backends x 3 models x 2
statuses of two histograms; load average 2-4). So the handler takes a
`render` coroutine: the proxy's copies its counters on the loop (~0.1 ms) and
runs `generate_latest` over the copy in a worker thread, where it only
competes for the GIL in the interpreter's 5 ms slices; the controller's,
small, renders in place. The connection closes after the answer; anything
but GET /metrics gets a 404 that says what to ask for.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("fastpath.metrics")
MAX_REQUEST_HEAD = 8192
Render = Callable[[], Awaitable[bytes]]


def in_place(registry: CollectorRegistry) -> Render:
    """A render that reads `registry` on the loop (for small registries)."""
    async def render() -> bytes:
        return generate_latest(registry)

    return render


class MetricsHandler(asyncio.Protocol):
    """One request per connection."""

    def __init__(self, render: Render) -> None:
        self.render = render
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.task is not None:
            return  # one request per connection: the rest is ignored
        self.buf += data
        if b"\r\n\r\n" not in self.buf:
            if len(self.buf) > MAX_REQUEST_HEAD:
                self._reply(b"431 Request Header Fields Too Large", b"request head over 8 KiB\n")
            return
        line = self.buf.split(b"\r\n", 1)[0].split()
        if len(line) >= 2 and line[0] in (b"GET", b"HEAD") and line[1].split(b"?")[0] == b"/metrics":
            head_only = line[0] == b"HEAD"
            self.task = asyncio.get_running_loop().create_task(self.render())
            self.task.add_done_callback(lambda t: self._rendered(t, head_only))
        else:
            self._reply(b"404 Not Found", b"try GET /metrics\n")

    def _rendered(self, task: asyncio.Task, head_only: bool) -> None:
        if task.cancelled():
            return
        e = task.exception()
        if e is not None:  # a broken collector must not take the endpoint down silently
            log.error("rendering /metrics failed", exc_info=e)
            self._reply(b"500 Internal Server Error", f"rendering metrics failed: {e}\n".encode())
            return
        self._reply(b"200 OK", b"" if head_only else task.result(), CONTENT_TYPE_LATEST.encode())

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


async def serve_metrics(render: Render, host: str, port: int) -> asyncio.base_events.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: MetricsHandler(render), host, port, reuse_address=True)
