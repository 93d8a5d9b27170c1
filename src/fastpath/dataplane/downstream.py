"""The client side: we are the HTTP/2 server for each client connection (its transport and handler)."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Final, TYPE_CHECKING

from fastpath.h2 import frames as fr
from fastpath.h2.connection import H2Stream
from fastpath.h2.hpack_codec import HpackDecoder

from .call import MODEL_IN_BODY, Call
from .conn import H2Transport, flush_dirty

if TYPE_CHECKING:
    from .proxy import Proxy

log = logging.getLogger("fastpath.dataplane")


class DownstreamConnection(H2Transport):
    """A client's connection: we are its HTTP/2 server; each stream it opens becomes a `Call`."""

    def __init__(self, proxy: "Proxy") -> None:
        super().__init__(proxy.limits)
        self.proxy = proxy
        self.services = proxy.call_services
        self.sniff: Sniffer | None = None
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
        self.h2.initiate()
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
        self.h2.skip_acks = sniff.acked[:]  # the replay must not ACK these again
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
        super().data_received(data)

    def _tick(self) -> None:
        """Slowloris and idle checks: a cheap timer per connection, every few seconds."""
        if self.closed:
            return
        lim = self.limits
        now = time.monotonic()
        if not self.requests and now - self.opened > lim.header_timeout_s:
            self._timed_out("header_timeout", f"no complete request within {lim.header_timeout_s:g} s")
            return
        pending = self.h2.reader.pending_since()
        if pending and now - pending > lim.header_timeout_s:
            self._timed_out("header_timeout", f"header block not completed within {lim.header_timeout_s:g} s")
            return
        if not self.h2.streams and now - self.last_active > lim.idle_timeout_s:
            self._timed_out("idle_timeout", f"idle for {lim.idle_timeout_s:g} s")
            return
        self.timer = asyncio.get_running_loop().call_later(min(lim.header_timeout_s, lim.idle_timeout_s / 2), self._tick)

    def _timed_out(self, limit: str, message: str) -> None:
        self.proxy.note_limit(self, limit)
        log.info("closing connection with %s: %s", self.peer, message)
        self.h2.goaway(fr.NO_ERROR, message.encode())
        flush_dirty()
        if self.transport is not None:
            self.transport.close()

    def on_limit(self, name: str) -> None:
        self.proxy.note_limit(self, name)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.sniff is not None:
            self.sniff.cancel()
            self.sniff = None
        self.closed = True
        h2 = self.h2
        h2.closed = True
        for st in list(h2.streams.values()):
            if st.owner is not None:
                st.owner.on_client_reset(fr.CANCEL)
        h2.streams.clear()
        self.proxy.connection_closed(self)
        flush_dirty()

    # -- ConnectionHandler ----------------------------------------------------
    def on_headers(self, st: H2Stream, headers: list, end: bool) -> None:
        owner = st.owner
        if owner is None:
            self.requests += 1
            call = Call(self.services, self, st)  # typed: the compiled build calls it natively
            st.owner = call
            st.on_data = call.on_request_data
            call.on_request_headers(headers, end, self.h2.decoder.cached)
        else:
            held: Call = owner
            held.on_request_trailers(headers)

    def on_data(self, st: H2Stream, data: bytes, end: bool) -> None:
        call = st.owner
        if call is not None:
            call.on_request_data(data, end)

    def on_reset(self, st: H2Stream, code: int) -> None:
        if st.owner is not None:
            self.proxy.metrics.cancelled += 1
            st.owner.on_client_reset(code)

    def on_stream_error(self, st: H2Stream, code: int, message: str) -> None:
        self.proxy.note_stream_error(self, st.sid, code, message)
        st.owner.on_client_reset(code)

    def on_refused(self, sid: int, why: str, message: str) -> None:
        self.requests += 1
        if why == "malformed":
            self.proxy.note_malformed(self, sid, message)

    def on_goaway(self, last: int, code: int, debug: bytes) -> None:
        if code != fr.NO_ERROR:
            log.info("client %s sent GOAWAY %s: %s", self.peer, fr.ERROR_NAMES.get(code, code), debug[:100])

    def note_error(self, code: int, message: str) -> None:
        pass

    def stream_closed(self, sid: int) -> None:
        """The call on `sid` is over: the stream is closed (reset if the client is still sending)."""
        h2 = self.h2
        h2.close_stream(sid)
        if not h2.streams:
            self.last_active = time.monotonic()
            if h2.goaway_sent and self.transport is not None:
                self.close_soon()

    # -- graceful shutdown ----------------------------------------------------
    def start_drain(self) -> None:
        """GOAWAY(NO_ERROR): no new streams; the ones in flight finish, then the connection closes."""
        if self.h2.goaway_sent or self.closed:
            return
        self.h2.goaway(fr.NO_ERROR, b"draining")
        if not self.h2.streams and self.transport is not None:
            self.close_soon()


SNIFF_TIMEOUT_S: Final = 0.25   # a new connection that sends no call within this is routed
SNIFF_MAX_BYTES: Final = 65536  # bytes watched before giving up on pinning


class Sniffer:
    """Watches a new connection until its first call says whether to pin it.

    The client gets an empty SETTINGS frame (all protocol defaults, which any
    server may tighten later), and its SETTINGS and PINGs are ACKed at once
    (RFC 9113 §6.5.3, §6.7: nothing waits for the first call). If the
    connection is pinned, the backend then takes over the client's HTTP/2
    session: it gets everything but the PINGs we answered and the client's ACK
    of our empty SETTINGS, and the pinned flow drops the backend's ACKs of the
    SETTINGS we already ACKed (`acked`). If it is not pinned, routed mode
    replays everything and skips the ACKs already sent. A connection that
    sends no call within SNIFF_TIMEOUT_S is routed.
    """

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
        self.acked = [0, 0]  # SETTINGS and PINGs of the client we ACKed ourselves
        self.hflags = 0
        assert conn.transport is not None
        conn.transport.write(fr.settings_frame({}))
        self.timer = asyncio.get_running_loop().call_later(SNIFF_TIMEOUT_S, self._timeout)

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
        if self.size > SNIFF_MAX_BYTES:
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
                length = fr.unpack_frame_header(buf, pos)[0]
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
        _, ftype, flags, sid = fr.unpack_frame_header(frame)
        payload = frame[9:]
        if ftype == fr.SETTINGS and flags & fr.ACK and self.ack_pending:
            self.ack_pending = False  # the ACK of our empty SETTINGS: not the backend's business
            return
        if ftype == fr.SETTINGS and not flags & fr.ACK and sid == 0 and len(payload) % 6 == 0:
            self._ack(fr.settings_frame(ack=True), 0)
        elif ftype == fr.PING and not flags & fr.ACK and sid == 0 and len(payload) == 8:
            self._ack(fr.ping_frame(payload, ack=True), 1)
            return  # answered: the backend never sees it
        self.forward.append(frame)
        if self.decided is not None:
            return
        if ftype == fr.HEADERS or (ftype == fr.CONTINUATION and self.block is not None):
            if ftype == fr.HEADERS:
                if self.pending is not None or self.block is not None:
                    self.conn.end_sniff()
                    return
                parts = self.block = [fr.headers_block_fragment(payload, flags, sid)]
                self.hflags = flags
            else:
                cur = self.block
                if cur is None:
                    return
                cur.append(payload)
                parts = cur
            if flags & fr.END_HEADERS:
                self.block = None
                self._headers(sid, self.hflags, self.decoder.decode(b"".join(parts)))
        elif ftype == fr.DATA and self.pending is not None and sid == self.pending[0]:
            data = fr.strip_padding(payload, flags, sid)
            self._decide(self.pending[1], self.conn.proxy.model_from_body([data]) or "")

    def _ack(self, frame: bytes, kind: int) -> None:
        t = self.conn.transport
        if t is not None and not t.is_closing():
            t.write(frame)
            self.acked[kind] += 1

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
        elif model or flags & fr.END_STREAM or path not in MODEL_IN_BODY:
            self._decide(headers, "")
        else:
            self.pending = (sid, headers)

    def _decide(self, headers: list, model: str) -> None:
        self.decided = (headers, model)  # handed off by feed() once our SETTINGS is ACKed

    def _handoff(self, headers: list, model: str, rest: bytes | None = None) -> None:
        conn = self.conn
        initial = b"".join(self.forward) + (self.buf if rest is None else rest)
        if not conn.proxy.pinned.start(conn, headers, model, initial, self.acked[0]):
            conn.end_sniff()
