"""The client side: we are the HTTP/2 server for each client connection."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastpath.h2 import frames as fr

from .conn import H2Connection, flush_dirty
from .stream import ProxyStream

if TYPE_CHECKING:
    from .proxy import Proxy

log = logging.getLogger("fastpath.dataplane")


class DownstreamConnection(H2Connection):
    def __init__(self, proxy: "Proxy") -> None:
        super().__init__(proxy.limits)
        self.proxy = proxy
        self.preface = b""
        self.preface_ok = False
        self.last_stream = 0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.proxy.connection_opened(self)
        self.send(self.initial_frames())
        if self.proxy.draining:
            self.start_drain()
        flush_dirty()

    def data_received(self, data: bytes) -> None:
        if not self.preface_ok:
            self.preface += data
            if len(self.preface) < len(fr.PREFACE):
                if not fr.PREFACE.startswith(self.preface):
                    self._bad_preface()
                return
            if not self.preface.startswith(fr.PREFACE):
                self._bad_preface()
                return
            self.preface_ok = True
            data = self.preface[len(fr.PREFACE):]
            self.preface = b""
            if not data:
                return
        super().data_received(data)

    def _bad_preface(self) -> None:
        log.info("connection from %s is not HTTP/2 prior knowledge (h2c); closing", self.peer)
        self.connection_error(fr.PROTOCOL_ERROR, "expected the HTTP/2 client preface (h2c prior knowledge)")

    def last_peer_stream(self) -> int:
        return self.last_stream

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for stream in list(self.streams.values()):
            stream.on_client_reset(fr.CANCEL)
        self.streams.clear()
        self.proxy.connection_closed(self)
        flush_dirty()

    # -- frames --------------------------------------------------------------
    def on_headers(self, flags: int, sid: int, block: bytes) -> None:
        headers = self.decoder.decode(block)  # always decode: HPACK state is per connection
        end = bool(flags & fr.END_STREAM)
        stream = self.streams.get(sid)
        if stream is not None:
            stream.on_request_trailers(headers, end)
            return
        if not sid & 1:
            raise fr.H2Error(fr.PROTOCOL_ERROR, f"client opened even-numbered stream {sid}")
        if sid <= self.last_stream:
            raise fr.H2Error(fr.STREAM_CLOSED, f"HEADERS on closed stream {sid}")
        self.last_stream = sid
        if self.goaway_sent:
            self.send(fr.rst_stream_frame(sid, fr.REFUSED_STREAM))
            return
        if len(self.streams) >= self.limits.max_concurrent_streams:
            self.proxy.note_limit(self, "max_concurrent_streams")
            self.send(fr.rst_stream_frame(sid, fr.REFUSED_STREAM))
            return
        stream = ProxyStream(self.proxy, self, sid)
        self.streams[sid] = stream
        stream.on_request_headers(headers, end)

    def on_data(self, sid: int, data: bytes, end: bool, padding: int) -> None:
        stream = self.streams.get(sid)
        if stream is not None:
            stream.on_request_data(data, end, padding)
        elif sid > self.last_stream:
            raise fr.H2Error(fr.PROTOCOL_ERROR, f"DATA on idle stream {sid}")

    def on_stream_window(self, sid: int, inc: int) -> None:
        stream = self.streams.get(sid)
        if stream is not None:
            stream.resp_window(inc)

    def adjust_stream_windows(self, delta: int) -> None:
        for stream in list(self.streams.values()):
            if delta > 0:
                stream.resp_window(delta)
            else:
                stream.resp.window += delta

    def on_rst(self, sid: int, code: int) -> None:
        stream = self.streams.get(sid)
        if stream is not None:
            stream.on_client_reset(code)

    def on_goaway(self, last: int, code: int, debug: bytes) -> None:
        self.peer_goaway = last
        if code != fr.NO_ERROR:
            log.info("client %s sent GOAWAY %s: %s", self.peer, fr.ERROR_NAMES.get(code, code), debug[:100])

    def stream_closed(self, sid: int) -> None:
        self.streams.pop(sid, None)
        if self.goaway_sent and not self.streams and self.transport is not None:
            flush_dirty()
            self.transport.close()

    # -- graceful shutdown ----------------------------------------------------
    def start_drain(self) -> None:
        """GOAWAY(NO_ERROR): no new streams; the ones in flight finish, then the connection closes."""
        if self.goaway_sent or self.closed:
            return
        self.goaway_sent = True
        self.send(fr.goaway_frame(self.last_stream, fr.NO_ERROR, b"draining"))
        if not self.streams and self.transport is not None:
            flush_dirty()
            self.transport.close()
