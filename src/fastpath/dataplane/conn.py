"""An HTTP/2 connection endpoint on asyncio/uvloop, shared by the client and backend sides.

Frames are parsed by `fastpath.h2.frames.FrameReader`; output is queued per
connection and written once per event (one `transport.write` per read event,
whatever number of frames it produced), which is what keeps the CPU per
message low. `Half` is one direction of a proxied stream: the sending state
(windows, pending bytes, trailers) toward one connection.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from fastpath.h2 import frames as fr
from fastpath.h2.hpack_codec import HpackDecoder, HpackEncoder

from .limits import Limits, TokenBucket

if TYPE_CHECKING:
    from .stream import ProxyStream

log = logging.getLogger("fastpath.dataplane")

_dirty: list["H2Connection"] = []
_data_hdr = fr._pack_hdr
_DATA = fr.DATA
_END = fr.END_STREAM


def flush_dirty() -> None:
    """Writes every connection's queued frames: one transport write per connection per event."""
    while _dirty:
        conn = _dirty.pop()
        conn.queued = False
        out = conn.out
        if out:
            t = conn.transport
            if t is not None and not conn.closed:
                t.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()


class Half:
    """One direction of a proxied stream: bytes waiting to go out on `conn` stream `sid`.

    Sending respects the peer's stream and connection windows and max frame
    size (DATA is split to fit). What cannot go out waits in `pending`; it is
    bounded because the source is only given window back (`on_sent`) for
    bytes that went out, so a slow reader slows only its own stream.
    """

    __slots__ = ("conn", "sid", "window", "pending", "pending_bytes", "end", "trailers", "trailers_extra", "done",
                 "on_sent", "skip_credit", "blocked", "started")

    def __init__(self, on_sent: Callable[[int], None]) -> None:
        self.conn: H2Connection | None = None
        self.sid = 0
        self.window = 0
        self.pending: deque[bytes] = deque()
        self.pending_bytes = 0
        self.end = False          # END_STREAM to send once pending is out
        self.trailers: list | None = None  # header list to close with instead of an empty DATA
        self.trailers_extra: list | None = None  # fields of the trailers unique to this stream (literals)
        self.done = False         # END_STREAM sent
        self.on_sent = on_sent
        self.skip_credit = 0      # replayed bytes that were credited to the source already
        self.blocked = False      # waiting in conn.blocked for connection window
        self.started = False      # stream open on conn (HEADERS sent)

    def attach(self, conn: "H2Connection", sid: int) -> None:
        self.conn = conn
        self.sid = sid
        self.window = conn.peer_initial_window
        self.started = True

    def push(self, data: bytes, end: bool) -> None:
        """Queues `data` (and END_STREAM if `end`) and sends what the windows allow now."""
        n = len(data)
        if n and not self.pending and self.started and not self.done:
            conn = self.conn
            if n <= self.window and n <= conn.send_window and n <= conn.peer_max_frame and not conn.closed:
                # The common case, one frame that fits: no queueing.
                last = end and self.trailers is None
                conn.send(_data_hdr(n >> 8, n & 0xFF, _DATA, _END if last else 0, self.sid) + data)
                self.window -= n
                conn.send_window -= n
                if self.skip_credit:
                    used = min(self.skip_credit, n)
                    self.skip_credit -= used
                    n -= used
                if n:
                    self.on_sent(n)
                if last:
                    self.done = True
                elif end:
                    self.end = True
                    self.pump()  # trailers
                return
        if data:
            self.pending.append(data)
            self.pending_bytes += len(data)
        if end:
            self.end = True
        if self.started:
            self.pump()

    def pump(self) -> None:
        conn = self.conn
        if conn is None or not self.started or self.done or conn.closed:
            return
        pending = self.pending
        sent_total = 0
        max_frame = conn.peer_max_frame
        sid = self.sid
        while pending:
            avail = self.window if self.window < conn.send_window else conn.send_window
            if avail <= 0:
                if conn.send_window <= 0 and not self.blocked:
                    self.blocked = True
                    conn.blocked.append(self)
                break
            data = pending[0]
            n = len(data)
            last_chunk = len(pending) == 1
            k = n if n <= avail else avail
            if k > max_frame:
                k = max_frame
            flags = _END if (k == n and last_chunk and self.end and self.trailers is None) else 0
            if k == n:
                pending.popleft()
                conn.send(_data_hdr(k >> 8, k & 0xFF, _DATA, flags, sid) + data)
            else:
                pending[0] = data[k:]
                conn.send(_data_hdr(k >> 8, k & 0xFF, _DATA, flags, sid) + data[:k])
            self.window -= k
            conn.send_window -= k
            self.pending_bytes -= k
            sent_total += k
            if flags:
                self.done = True
        if sent_total:
            skip = self.skip_credit
            if skip:
                used = skip if skip < sent_total else sent_total
                self.skip_credit = skip - used
                sent_total -= used
            if sent_total:
                self.on_sent(sent_total)
        if not pending and self.end and not self.done:
            if self.trailers is not None:
                conn.send_headers(sid, self.trailers, end_stream=True, extra=self.trailers_extra)
                self.trailers = None
            else:
                conn.send(_data_hdr(0, 0, _DATA, _END, sid))
            self.done = True


class H2Connection(asyncio.Protocol):
    """Frame I/O, SETTINGS, PING, windows and GOAWAY for one HTTP/2 connection."""

    is_client_side = False  # True for connections to backends (we are the HTTP/2 client)

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.transport: asyncio.Transport | None = None
        self.out: list[bytes] = []
        self.queued = False
        self.closed = False
        self.reader = fr.FrameReader(limits.max_frame_size, limits.max_header_block)
        self.decoder = HpackDecoder(max_header_list=limits.max_header_list)
        self.encoder = HpackEncoder()
        self.streams: dict[int, "ProxyStream"] = {}
        self.peer_initial_window = fr.DEFAULT_WINDOW
        self.peer_max_frame = fr.DEFAULT_MAX_FRAME
        self.peer_max_streams = 2**31 - 1
        self.send_window = fr.DEFAULT_WINDOW
        self.recv_window = fr.DEFAULT_WINDOW  # connection-level window we granted the peer
        self.recv_unacked = 0
        self.blocked: deque[Half] = deque()
        self.goaway_sent = False
        self.peer_goaway: int | None = None  # last stream id the peer said it will process
        self.peer: str = "?"
        self.control_bucket = TokenBucket(limits.control_frames_per_s, limits.control_burst)
        self.conn_update_at = limits.connection_window >> 2  # WINDOW_UPDATE once this much was consumed

    # -- output --------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.out.append(data)
        if not self.queued:
            self.queued = True
            _dirty.append(self)

    def send_control(self, frame: bytes) -> None:
        """Queues an ACK; a peer that makes us ACK but never reads what we send is cut off."""
        t = self.transport
        if t is not None and t.get_write_buffer_size() > self.limits.max_unsent_control_bytes:
            raise fr.H2Error(fr.ENHANCE_YOUR_CALM, "peer does not read our frames (PING/SETTINGS ACKs piling up)")
        self.send(frame)

    def send_headers(self, sid: int, headers: list, end_stream: bool, extra: list | None = None) -> None:
        """HEADERS for `headers`; `extra` fields (values unique to this message) go as literals."""
        block = self.encoder.encode(headers)
        if extra:
            lit = self.encoder.literal
            block += b"".join(lit(n, v) for n, v in extra)
        self.send(fr.headers_frames(sid, block, end_stream, self.peer_max_frame))

    def initial_frames(self) -> bytes:
        lim = self.limits
        settings = {
            fr.SETTINGS_INITIAL_WINDOW_SIZE: lim.stream_window,
            fr.SETTINGS_MAX_FRAME_SIZE: lim.max_frame_size,
            fr.SETTINGS_MAX_HEADER_LIST_SIZE: lim.max_header_list,
        }
        if self.is_client_side:
            settings[fr.SETTINGS_ENABLE_PUSH] = 0
        else:
            settings[fr.SETTINGS_MAX_CONCURRENT_STREAMS] = lim.max_concurrent_streams
        self.recv_window = lim.connection_window
        return fr.settings_frame(settings) + fr.window_update_frame(0, lim.connection_window - fr.DEFAULT_WINDOW)

    # -- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"

    def data_received(self, data: bytes) -> None:
        try:
            for ftype, flags, sid, payload in self.reader.feed(data):
                self.on_frame(ftype, flags, sid, payload)
        except fr.H2Error as e:
            self.connection_error(e.code, str(e))
        except Exception:
            log.exception("internal error on connection with %s", self.peer)
            self.connection_error(fr.INTERNAL_ERROR, "internal error")
        finally:
            flush_dirty()

    def pause_writing(self) -> None:  # windows bound what we write; nothing more to do
        pass

    def resume_writing(self) -> None:
        pass

    # -- frames --------------------------------------------------------------
    def on_frame(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if ftype == fr.DATA:
            if not payload and not flags & fr.END_STREAM and not self.control_bucket.take():
                raise fr.H2Error(fr.ENHANCE_YOUR_CALM, "flood of empty DATA frames")
            self.on_data_frame(flags, sid, payload)
            return
        if ftype == fr.HEADERS:
            self.on_headers(flags, sid, payload)
            return
        if ftype != fr.WINDOW_UPDATE and not self.control_bucket.take():
            raise fr.H2Error(fr.ENHANCE_YOUR_CALM, f"control frame flood (frame type {ftype})")
        if ftype == fr.WINDOW_UPDATE:
            inc = fr.parse_window_update(payload, sid)
            if sid == 0:
                self.send_window += inc
                if self.send_window > fr.MAX_WINDOW:
                    raise fr.H2Error(fr.FLOW_CONTROL_ERROR, "connection window overflow")
                self.unblock()
            else:
                self.on_stream_window(sid, inc)
        elif ftype == fr.SETTINGS:
            if sid != 0:
                raise fr.H2Error(fr.PROTOCOL_ERROR, "SETTINGS on a stream")
            if flags & fr.ACK:
                if payload:
                    raise fr.H2Error(fr.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
                return
            self.apply_settings(fr.parse_settings(payload))
            self.send_control(fr.settings_frame(ack=True))
        elif ftype == fr.PING:
            if len(payload) != 8 or sid != 0:
                raise fr.H2Error(fr.FRAME_SIZE_ERROR if len(payload) != 8 else fr.PROTOCOL_ERROR, "malformed PING")
            if not flags & fr.ACK:
                self.send_control(fr.ping_frame(payload, ack=True))
        elif ftype == fr.RST_STREAM:
            if sid == 0:
                raise fr.H2Error(fr.PROTOCOL_ERROR, "RST_STREAM on stream 0")
            self.on_rst(sid, fr.parse_rst_stream(payload))
        elif ftype == fr.GOAWAY:
            last, code, debug = fr.parse_goaway(payload)
            self.on_goaway(last, code, debug)
        elif ftype == fr.PUSH_PROMISE:
            raise fr.H2Error(fr.PROTOCOL_ERROR, "PUSH_PROMISE is not accepted (push disabled)")
        # PRIORITY and unknown frame types are ignored (RFC 9113 §5.5).

    def on_data_frame(self, flags: int, sid: int, payload: bytes) -> None:
        n = len(payload)
        if n:
            self.recv_window -= n
            if self.recv_window < 0:
                raise fr.H2Error(fr.FLOW_CONTROL_ERROR, "peer sent more DATA than the connection window allows")
            self.recv_unacked += n
            if self.recv_unacked >= self.conn_update_at:
                self.send(fr.window_update_frame(0, self.recv_unacked))
                self.recv_window += self.recv_unacked
                self.recv_unacked = 0
        if sid == 0:
            raise fr.H2Error(fr.PROTOCOL_ERROR, "DATA on stream 0")
        data = fr.strip_padding(payload, flags, sid) if flags & fr.PADDED else payload
        self.on_data(sid, data, bool(flags & fr.END_STREAM), n - len(data))

    def apply_settings(self, settings: list[tuple[int, int]]) -> None:
        for key, value in settings:
            if key == fr.SETTINGS_INITIAL_WINDOW_SIZE:
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                if delta:
                    self.adjust_stream_windows(delta)
            elif key == fr.SETTINGS_MAX_FRAME_SIZE:
                self.peer_max_frame = value
            elif key == fr.SETTINGS_HEADER_TABLE_SIZE:
                self.encoder.set_max_table_size(value)
            elif key == fr.SETTINGS_MAX_CONCURRENT_STREAMS:
                self.peer_max_streams = value

    def unblock(self) -> None:
        blocked = self.blocked
        while blocked and self.send_window > 0:
            half = blocked.popleft()
            half.blocked = False
            half.pump()

    def connection_error(self, code: int, message: str) -> None:
        """Ends the connection with GOAWAY(code) after a protocol violation by the peer."""
        if self.closed:
            return
        self.note_error(code, message)
        log.warning("closing connection with %s: %s (%s)", self.peer, message, fr.ERROR_NAMES.get(code, code))
        self.send(fr.goaway_frame(self.last_peer_stream(), code, message.encode()[:200]))
        self.goaway_sent = True
        flush_dirty()
        if self.transport is not None:
            self.transport.close()

    # -- hooks for the two sides --------------------------------------------
    def note_error(self, code: int, message: str) -> None:
        pass

    def last_peer_stream(self) -> int:
        return 0

    def on_headers(self, flags: int, sid: int, block: bytes) -> None:
        raise NotImplementedError

    def on_data(self, sid: int, data: bytes, end: bool, padding: int) -> None:
        raise NotImplementedError

    def on_stream_window(self, sid: int, inc: int) -> None:
        raise NotImplementedError

    def adjust_stream_windows(self, delta: int) -> None:
        raise NotImplementedError

    def on_rst(self, sid: int, code: int) -> None:
        raise NotImplementedError

    def on_goaway(self, last: int, code: int, debug: bytes) -> None:
        raise NotImplementedError

    def stream_credit(self, sid: int, stream: Any, n: int) -> None:
        raise NotImplementedError
