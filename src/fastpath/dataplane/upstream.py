"""The backend side: pooled HTTP/2 (h2c) client connections, many streams multiplexed on each."""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from fastpath.h2 import frames as fr

from fastpath.h2.connection import H2Stream

from .call import DONE
from .conn import H2Transport, flush_dirty

if TYPE_CHECKING:
    from .call import Call
    from .proxy import Proxy

log = logging.getLogger("fastpath.dataplane")


class UpstreamConnection(H2Transport):
    """A pooled connection to one backend: we are its HTTP/2 client, one stream per `Call` attempt."""

    client_side = True

    def __init__(self, proxy: "Proxy", backend: int) -> None:
        super().__init__(proxy.limits)
        self.proxy = proxy
        self.backend = backend
        self.name = proxy.names[backend]
        self.connected = False
        self.draining = False
        self.waiting: deque[Call] = deque()  # calls waiting for the connection or a stream slot

    @property
    def next_id(self) -> int:
        return self.h2.next_local_id

    # -- pool interface --------------------------------------------------------
    @property
    def usable(self) -> bool:
        return not (self.closed or self.draining or self.h2.next_local_id > fr.MAX_STREAM_ID - 2)

    @property
    def load(self) -> int:
        return len(self.h2.streams) + len(self.waiting)

    def open_stream(self, call: "Call") -> None:
        if self.connected and len(self.h2.streams) < self.h2.peer_max_streams and not self.waiting:
            self._start(call)
        else:
            self.waiting.append(call)

    def _start(self, call: "Call") -> None:
        st = self.h2.open_stream(call)
        st.on_data = call.on_response_data
        call.start_upstream(self, st)
        if self.h2.next_local_id > fr.MAX_STREAM_ID - 2:
            self.draining = True  # stream ids exhausted: new streams go to a fresh connection

    def _start_waiting(self) -> None:
        waiting = self.waiting
        h2 = self.h2
        while waiting and self.connected and not self.closed and len(h2.streams) < h2.peer_max_streams:
            call = waiting.popleft()
            if call.state != DONE and call.up is None and call.backend == self.backend:  # still wants this backend
                self._start(call)

    def stream_closed(self, sid: int) -> None:
        """The call is done with `sid`: reset it if still open, and let a waiting call have the slot."""
        self.h2.close_stream(sid)
        if self.waiting:
            self._start_waiting()
        elif self.draining and not self.h2.streams and self.transport is not None:
            self.close_soon()

    # -- connection lifecycle ------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.connected = True
        self.h2.initiate()
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
        self.h2.closed = True
        self.proxy.pool.remove(self)
        why = "closed the connection" if exc is None else f"connection failed ({exc.__class__.__name__})"
        if not was_closed and (self.h2.streams or self.waiting):
            log.warning("backend %s %s with %d streams in flight", self.name, why, len(self.h2.streams))
        self._fail_all(why)
        flush_dirty()

    def _fail_all(self, why: str) -> None:
        calls = [st.owner for st in self.h2.streams.values()] + list(self.waiting)
        self.h2.streams.clear()
        self.waiting.clear()
        for call in calls:
            if call is not None and (call.up is self or call.up is None):
                call.on_upstream_lost(why)

    def on_connection_error(self, code: int, message: str) -> None:
        super().on_connection_error(code, message)
        self.draining = True
        self.proxy.pool.remove(self)

    # -- ConnectionHandler ----------------------------------------------------
    def on_headers(self, st: H2Stream, headers: list, end: bool) -> None:
        call: Call = st.owner  # typed: the compiled build calls it natively
        call.on_response_headers(headers, end)

    def on_data(self, st: H2Stream, data: bytes, end: bool) -> None:
        st.owner.on_response_data(data, end)

    def on_reset(self, st: H2Stream, code: int) -> None:
        if code == fr.REFUSED_STREAM:
            st.owner.on_upstream_lost("refused the stream (REFUSED_STREAM)")
        else:
            st.owner.on_upstream_reset(code)

    def on_stream_error(self, st: H2Stream, code: int, message: str) -> None:
        st.owner.on_upstream_lost(f"broke the protocol ({message})")

    def on_goaway(self, last: int, code: int, debug: bytes) -> None:
        """The backend is going away: streams above `last` were not processed and fail over."""
        self.draining = True
        self.proxy.pool.remove(self)
        if code != fr.NO_ERROR:
            log.warning("backend %s sent GOAWAY %s: %s", self.name, fr.ERROR_NAMES.get(code, code), debug[:100])
        for sid, st in list(self.h2.streams.items()):
            if sid > last:
                self.h2.close_stream(sid)
                st.owner.on_upstream_lost("refused the call (GOAWAY)")
        for call in list(self.waiting):
            call.on_upstream_lost("refused the call (GOAWAY)")
        self.waiting.clear()
        if not self.h2.streams and self.transport is not None:
            self.close_soon()


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
                await asyncio.wait_for(loop.create_connection(lambda: conn, host, port), timeout)  # type: ignore[type-var]
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
