"""A small asyncio HTTP/1.1 server for a site's /metrics and /fault.

Keep-alive is supported because the controller scrapes every 50 ms over one
connection; anything malformed gets a 400 with a reason, and the connection
is closed.  No framework: a site must start fast and cost little.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

# (method, path, query, body) -> (status, content type, body)
Handler = Callable[[str, str, str, bytes], Awaitable[tuple[int, str, bytes]]]
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large"}
MAX_HEADER_BYTES = 16384
MAX_BODY_BYTES = 65536


class HttpEndpoint:
    """Serves `handler` on host:port (port 0 = any free port; see .port)."""

    def __init__(self, host: str, port: int, handler: Handler) -> None:
        self.host = host
        self.requested_port = port
        self.handler = handler
        self.server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        """The bound port (kept after stop, so a restart binds the same one)."""
        return self.requested_port

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, self.host, self.requested_port, limit=MAX_HEADER_BYTES)
        self.requested_port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is None:
            return
        self.server.close()
        for w in list(self._conns):
            w.close()
        await self.server.wait_closed()
        self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    await self._reply(writer, 413, "text/plain", b"request head too large\n", close=True)
                    return
                keep = await self._one(reader, writer, head)
                if not keep:
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._conns.discard(writer)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await self._reply(writer, 400, "text/plain", b"expected a request line like: GET /metrics HTTP/1.1\n", close=True)
            return False
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                await self._reply(writer, 400, "text/plain", f"malformed header line {line!r}\n".encode(), close=True)
                return False
            headers[name.strip().lower()] = value.strip()
        body = b""
        if "content-length" in headers:
            try:
                n = int(headers["content-length"])
                if n < 0:
                    raise ValueError
            except ValueError:
                await self._reply(writer, 400, "text/plain", b"bad Content-Length\n", close=True)
                return False
            if n > MAX_BODY_BYTES:
                await self._reply(writer, 413, "text/plain", b"body too large\n", close=True)
                return False
            try:
                body = await reader.readexactly(n)
            except asyncio.IncompleteReadError:
                return False
        elif headers.get("transfer-encoding"):
            await self._reply(writer, 400, "text/plain", b"chunked bodies are not supported; send Content-Length\n", close=True)
            return False
        conn = headers.get("connection", "").lower()
        keep = conn != "close" if version == "HTTP/1.1" else conn == "keep-alive"
        url = urlsplit(target)
        try:
            status, ctype, payload = await self.handler(method.upper(), url.path, url.query, body)
        except Exception as e:  # a handler bug must not kill the site
            log.exception("HTTP handler failed for %s %s", method, target)
            status, ctype, payload = 500, "text/plain", f"internal error: {e}\n".encode()
        await self._reply(writer, status, ctype, payload if method.upper() != "HEAD" else b"", close=not keep, length=len(payload))
        return keep

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes, close: bool, length: int | None = None) -> None:
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body) if length is None else length}\r\n"
            f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
        ).encode()
        writer.write(head + body)
        await writer.drain()
