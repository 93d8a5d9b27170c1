"""The backend side: pooled HTTP/2 (h2c) client connections, many streams multiplexed on each."""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from fastpath.h2 import frames as fr

from .conn import H2Connection, flush_dirty
from .stream import DONE

if TYPE_CHECKING:
    from .proxy import Proxy
    from .stream import ProxyStream

log = logging.getLogger("fastpath.dataplane")


class UpstreamConnection(H2Connection):
    is_client_side = True

    def __init__(self, proxy: "Proxy", backend: int) -> None:
        super().__init__(proxy.limits)
        self.proxy = proxy
        self.backend = backend
        self.name = proxy.names[backend]
        self.next_id = 1
        self.connected = False
        self.draining = False
        self.waiting: deque[ProxyStream] = deque()  # streams waiting for the connection or a stream slot

    # -- pool interface --------------------------------------------------------
    @property
    def usable(self) -> bool:
        return not (self.closed or self.draining or self.next_id > fr.MAX_STREAM_ID - 2)

    @property
    def load(self) -> int:
        return len(self.streams) + len(self.waiting)

    def open_stream(self, stream: "ProxyStream") -> None:
        if self.connected and len(self.streams) < self.peer_max_streams and not self.waiting:
            self._start(stream)
        else:
            self.waiting.append(stream)

    def _start(self, stream: "ProxyStream") -> None:
        sid = self.next_id
        self.next_id += 2
        self.streams[sid] = stream
        stream.start_upstream(self, sid)
        if self.next_id > fr.MAX_STREAM_ID - 2:
            self.draining = True  # stream ids exhausted: new streams go to a fresh connection

    def _start_waiting(self) -> None:
        waiting = self.waiting
        while waiting and self.connected and not self.closed and len(self.streams) < self.peer_max_streams:
            stream = waiting.popleft()
            if stream.state != DONE and stream.up is None:  # still wants a backend
                self._start(stream)

    def stream_closed(self, sid: int) -> None:
        if self.streams.pop(sid, None) is not None:
            if self.waiting:
                self._start_waiting()
            elif self.draining and not self.streams and self.transport is not None:
                self.transport.close()

    # -- connection lifecycle ------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.connected = True
        self.send(fr.PREFACE + self.initial_frames())
        self._start_waiting()
        flush_dirty()

    def connect_failed(self, why: str) -> None:
        self.closed = True
        self.proxy.pool.remove(self)
        self.proxy.backend_unreachable(self.backend, why)
        self._fail_all(why)
        flush_dirty()

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed = self.closed
        self.closed = True
        self.connected = False
        self.proxy.pool.remove(self)
        why = "closed the connection" if exc is None else f"connection failed ({exc.__class__.__name__})"
        if not was_closed and (self.streams or self.waiting):
            log.warning("backend %s %s with %d streams in flight", self.name, why, len(self.streams))
        self._fail_all(why)
        flush_dirty()

    def _fail_all(self, why: str) -> None:
        streams = list(self.streams.values()) + list(self.waiting)
        self.streams.clear()
        self.waiting.clear()
        for stream in streams:
            if stream.up is self or stream.up is None:
                stream.on_upstream_lost(why)

    # -- frames --------------------------------------------------------------
    def on_headers(self, flags: int, sid: int, block: bytes) -> None:
        headers = self.decoder.decode(block)
        stream = self.streams.get(sid)
        if stream is not None:
            stream.on_response_headers(headers, bool(flags & fr.END_STREAM))

    def on_data(self, sid: int, data: bytes, end: bool, padding: int) -> None:
        stream = self.streams.get(sid)
        if stream is not None:
            stream.on_response_data(data, end, padding)

    def on_stream_window(self, sid: int, inc: int) -> None:
        stream = self.streams.get(sid)
        if stream is not None:
            stream.req_window(inc)

    def adjust_stream_windows(self, delta: int) -> None:
        for stream in list(self.streams.values()):
            if delta > 0:
                stream.req_window(delta)
            else:
                stream.req.window += delta

    def on_rst(self, sid: int, code: int) -> None:
        stream = self.streams.get(sid)
        if stream is not None:
            if code == fr.REFUSED_STREAM:
                stream.on_upstream_lost("refused the stream (REFUSED_STREAM)")
            else:
                stream.on_upstream_reset(code)

    def on_goaway(self, last: int, code: int, debug: bytes) -> None:
        """The backend is going away: streams above `last` were not processed and fail over."""
        self.peer_goaway = last
        self.draining = True
        self.proxy.pool.remove(self)
        if code != fr.NO_ERROR:
            log.warning("backend %s sent GOAWAY %s: %s", self.name, fr.ERROR_NAMES.get(code, code), debug[:100])
        for sid, stream in list(self.streams.items()):
            if sid > last:
                stream.on_upstream_lost("refused the call (GOAWAY)")
        for stream in list(self.waiting):
            stream.on_upstream_lost("refused the call (GOAWAY)")
        self.waiting.clear()
        if not self.streams and self.transport is not None:
            self.transport.close()


class UpstreamPool:
    """Up to `per_backend` multiplexed connections per backend, opened lazily."""

    def __init__(self, proxy: "Proxy", per_backend: int) -> None:
        self.proxy = proxy
        self.per_backend = max(1, per_backend)
        self.conns: dict[int, list[UpstreamConnection]] = {}

    def acquire(self, backend: int) -> UpstreamConnection | None:
        conns = self.conns.setdefault(backend, [])
        best = None
        for c in conns:
            if c.usable and (best is None or c.load < best.load):
                best = c
        if best is not None and (best.load == 0 or len(conns) >= self.per_backend):
            return best
        return self._connect(backend)

    def _connect(self, backend: int) -> UpstreamConnection:
        conn = UpstreamConnection(self.proxy, backend)
        self.conns.setdefault(backend, []).append(conn)
        host, port = self.proxy.backend_address(backend)
        loop = asyncio.get_running_loop()
        timeout = self.proxy.limits.upstream_connect_timeout_s

        async def connect() -> None:
            try:
                await asyncio.wait_for(loop.create_connection(lambda: conn, host, port), timeout)
            except (OSError, asyncio.TimeoutError) as e:
                why = "did not accept the connection in time" if isinstance(e, asyncio.TimeoutError) \
                    else f"refused the connection ({e.strerror or e.__class__.__name__})"
                conn.connect_failed(why)

        task = loop.create_task(connect())
        self.proxy.tasks.add(task)
        task.add_done_callback(self.proxy.tasks.discard)
        return conn

    def remove(self, conn: UpstreamConnection) -> None:
        conns = self.conns.get(conn.backend)
        if conns and conn in conns:
            conns.remove(conn)

    def close(self) -> None:
        for conns in self.conns.values():
            for c in conns:
                if c.transport is not None:
                    c.transport.close()
        self.conns.clear()
