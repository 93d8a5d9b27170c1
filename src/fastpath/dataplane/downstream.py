"""The client side: we are the HTTP/2 server for each client connection."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from fastpath.h2 import frames as fr
from fastpath.h2.hpack_codec import HpackDecoder

from .conn import H2Connection, flush_dirty
from .limits import TokenBucket
from .stream import _MODEL_IN_BODY, ProxyStream

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
        self.sniff: Sniffer | None = None
        self.reset_bucket = TokenBucket(proxy.limits.resets_per_s, proxy.limits.reset_burst)
        self.opened = time.monotonic()
        self.last_active = self.opened
        self.requests = 0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.proxy.connection_opened(self):
            self.closed = True
            transport.close()
            return
        lim = self.limits
        self.timer = asyncio.get_running_loop().call_later(min(lim.header_timeout_s, lim.idle_timeout_s / 2), self._tick)
        if self.proxy.pin_sessions and not self.proxy.draining:
            self.sniff = Sniffer(self)  # routed or pinned is decided at the first HEADERS
        else:
            self.begin_routed()

    def begin_routed(self) -> None:
        self.send(self.initial_frames())
        if self.proxy.draining:
            self.start_drain()
        flush_dirty()

    def end_sniff(self) -> None:
        """Routed mode after all: answer as the HTTP/2 endpoint and replay what the client sent."""
        sniff, self.sniff = self.sniff, None
        if sniff is None:
            return
        sniff.cancel()
        self.begin_routed()
        raw = b"".join(sniff.raw)
        if raw:
            self.data_received(raw)

    def handed_off(self) -> None:
        """The transport now belongs to a pinned flow; this object is done."""
        if self.sniff is not None:
            self.sniff.cancel()
            self.sniff = None
        self.closed = True
        self.proxy.connection_closed(self)

    def data_received(self, data: bytes) -> None:
        if self.sniff is not None:
            self.sniff.feed(data)
            return
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

    def _tick(self) -> None:
        """Slowloris and idle checks: a cheap timer per connection, every few seconds."""
        if self.closed:
            return
        lim = self.limits
        now = time.monotonic()
        if not self.requests and now - self.opened > lim.header_timeout_s:
            self._timed_out("header_timeout", f"no complete request within {lim.header_timeout_s:g} s")
            return
        pending = self.reader.pending_since()
        if pending and now - pending > lim.header_timeout_s:
            self._timed_out("header_timeout", f"header block not completed within {lim.header_timeout_s:g} s")
            return
        if not self.streams and now - self.last_active > lim.idle_timeout_s:
            self._timed_out("idle_timeout", f"idle for {lim.idle_timeout_s:g} s")
            return
        self.timer = asyncio.get_running_loop().call_later(min(lim.header_timeout_s, lim.idle_timeout_s / 2), self._tick)

    def _timed_out(self, limit: str, message: str) -> None:
        self.proxy.note_limit(self, limit)
        log.info("closing connection with %s: %s", self.peer, message)
        if not self.goaway_sent:
            self.send(fr.goaway_frame(self.last_stream, fr.NO_ERROR, message.encode()))
            self.goaway_sent = True
        flush_dirty()
        if self.transport is not None:
            self.transport.close()

    def note_error(self, code: int, message: str) -> None:
        if code == fr.ENHANCE_YOUR_CALM:
            self.proxy.note_limit(self, message.split(" (")[0])

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.sniff is not None:
            self.sniff.cancel()
            self.sniff = None
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
        self.requests += 1
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
        if not self.reset_bucket.take():
            raise fr.H2Error(fr.ENHANCE_YOUR_CALM, "too many stream resets (rapid reset)")
        stream = self.streams.get(sid)
        if stream is not None:
            stream.on_client_reset(code)

    def on_goaway(self, last: int, code: int, debug: bytes) -> None:
        self.peer_goaway = last
        if code != fr.NO_ERROR:
            log.info("client %s sent GOAWAY %s: %s", self.peer, fr.ERROR_NAMES.get(code, code), debug[:100])

    def stream_closed(self, sid: int) -> None:
        self.streams.pop(sid, None)
        if not self.streams:
            self.last_active = time.monotonic()
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


class Sniffer:
    """Watches a new connection until its first call says whether to pin it.

    The client gets an empty SETTINGS frame (all protocol defaults, which any
    server may tighten later) and nothing else: no window grants, no ACK of
    its settings. If the connection is pinned, the backend then takes over the
    client's HTTP/2 session from its first byte — it ACKs the client's
    SETTINGS and sends its own — and the client's ACK of our empty SETTINGS is
    the one frame not passed on. If it is not pinned, routed mode replays
    everything. A connection that sends no call within `timeout_s` is routed.
    """

    timeout_s = 0.25
    max_bytes = 65536

    def __init__(self, conn: DownstreamConnection) -> None:
        import asyncio

        self.conn = conn
        self.raw: list[bytes] = []     # everything received, for routed mode
        self.forward: list[bytes] = [fr.PREFACE]  # what a pinned backend gets (minus our SETTINGS ACK)
        self.size = 0
        self.buf = b""
        self.preface_seen = False
        self.ack_pending = True
        self.block: list[bytes] | None = None  # header block fragments while CONTINUATION is pending
        self.decoder = HpackDecoder(max_header_list=conn.limits.max_header_list)
        self.pending: tuple[int, list] | None = None  # (stream, headers) waiting for model_name in DATA
        self.decided: tuple[list, str] | None = None   # pin decision waiting for the SETTINGS ACK
        assert conn.transport is not None
        conn.transport.write(fr.settings_frame({}))
        self.timer = asyncio.get_running_loop().call_later(self.timeout_s, self._timeout)

    def cancel(self) -> None:
        self.timer.cancel()

    def _timeout(self) -> None:
        if self.decided is not None:  # the client never ACKed our SETTINGS: hand over as is
            self._handoff(*self.decided)
        else:
            self.conn.end_sniff()

    def feed(self, data: bytes) -> None:
        conn = self.conn
        self.raw.append(data)
        self.size += len(data)
        if self.size > self.max_bytes:
            conn.end_sniff()
            return
        buf = self.buf + data
        if not self.preface_seen:
            n = len(fr.PREFACE)
            if len(buf) < n:
                if not fr.PREFACE.startswith(buf):
                    conn.end_sniff()  # routed mode answers the bad preface
                else:
                    self.buf = buf
                return
            if not buf.startswith(fr.PREFACE):
                conn.end_sniff()
                return
            self.preface_seen = True
            buf = buf[n:]
        pos = 0
        try:
            while len(buf) - pos >= 9:
                length = int.from_bytes(buf[pos:pos + 3], "big")
                if length > conn.limits.max_frame_size:
                    raise fr.H2Error(fr.FRAME_SIZE_ERROR, "frame too large")
                end = pos + 9 + length
                if end > len(buf):
                    break
                frame = buf[pos:end]
                pos = end
                self._frame(frame)
                if conn.sniff is not self:
                    return
                if self.decided is not None and not self.ack_pending:
                    self._handoff(*self.decided, rest=buf[pos:])
                    return
        except fr.H2Error:
            conn.end_sniff()  # routed mode meets the same error and answers it properly
            return
        self.buf = buf[pos:]

    def _frame(self, frame: bytes) -> None:
        ftype, flags, sid = frame[3], frame[4], int.from_bytes(frame[5:9], "big") & fr.MAX_STREAM_ID
        payload = frame[9:]
        if ftype == fr.SETTINGS and flags & fr.ACK and self.ack_pending:
            self.ack_pending = False  # the ACK of our empty SETTINGS: not the backend's business
            return
        self.forward.append(frame)
        if self.decided is not None:
            return
        if ftype == fr.HEADERS or (ftype == fr.CONTINUATION and self.block is not None):
            if ftype == fr.HEADERS:
                if self.pending is not None or self.block is not None:
                    self.conn.end_sniff()
                    return
                self.block = [fr.headers_block_fragment(payload, flags, sid)]
                self.hflags = flags
            else:
                self.block.append(payload)
            if flags & fr.END_HEADERS:
                block, self.block = b"".join(self.block), None
                self._headers(sid, self.hflags, self.decoder.decode(block))
        elif ftype == fr.DATA and self.pending is not None and sid == self.pending[0]:
            data = fr.strip_padding(payload, flags, sid)
            self._decide(self.pending[1], self.conn.proxy.model_from_body([data]) or "")

    def _headers(self, sid: int, flags: int, headers: list) -> None:
        session = model = path = b""
        for name, value in headers:
            if name == b"x-fastpath-session":
                session = value
            elif name == b"x-fastpath-model":
                model = value
            elif name == b":path":
                path = value
        if not session:
            self.conn.end_sniff()
        elif model or flags & fr.END_STREAM or path not in _MODEL_IN_BODY:
            self._decide(headers, "")
        else:
            self.pending = (sid, headers)

    def _decide(self, headers: list, model: str) -> None:
        self.decided = (headers, model)  # handed off by feed() once our SETTINGS is ACKed

    def _handoff(self, headers: list, model: str, rest: bytes | None = None) -> None:
        conn = self.conn
        initial = b"".join(self.forward) + (self.buf if rest is None else rest)
        if not conn.proxy.start_pinned(conn, headers, model, initial):
            conn.end_sniff()
