"""One HTTP/2 connection without I/O: bytes in, direct callbacks out, bytes to send.

`H2Connection.receive_data(bytes)` parses frames, applies SETTINGS, keeps
both flow-control windows (ours and the peer's, per connection and per
stream), moves each stream through the RFC 9113 §5.1 transition table
(`fastpath.h2.stream_state`), enforces every limit of `Constraints`, and
validates request, response and trailer blocks (§8.2, §8.3). What a frame
means for the application is delivered by calling the handler's methods
directly — no event object per frame — and what must go out is appended to
`out` (the transport writes it; `data_to_send()` takes it in tests).

Handler methods (a `ConnectionHandler`):
  on_headers(st, headers, end)     a valid request (server side), response or trailers
  on_data(st, data, end)           DATA payload (padding removed); give window back with `credit`
                                   (a stream whose `on_data` is set gets its DATA there instead)
  on_reset(st, code)               the peer reset the stream
  on_stream_error(st, code, msg)   we reset the stream because the peer broke a stream rule
  on_refused(sid, why, msg)        a new stream was refused or malformed (never reached the handler)
  on_goaway(last, code, debug)     the peer is going away
  on_connection_error(code, msg)   we sent GOAWAY(code): close the transport after writing `out`
  on_limit(name)                   an abuse limit was hit (before the error it causes)
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable, Final, Protocol

from . import frames as fr
from . import stream_state as ss
from . import validation
from .constraints import Constraints, TokenBucket
from .hpack_codec import HpackDecoder, HpackEncoder

_new_deque: Final = deque  # a static, not a module-dict lookup, in the compiled build
_pack_hdr: Final = fr._pack_hdr
_DATA: Final = fr.DATA
_END: Final = fr.END_STREAM
_MAX_WINDOW: Final = fr.MAX_WINDOW
_RECV_DATA: Final = ss.NEXT[ss.RECV_DATA]
_RECV_END: Final = ss.NEXT[ss.RECV_END_STREAM]
_RECV_HEADERS: Final = ss.NEXT[ss.RECV_HEADERS]
_SEND_END: Final = ss.NEXT[ss.SEND_END_STREAM]
_SEND_HEADERS: Final = ss.NEXT[ss.SEND_HEADERS]
_CLOSED: Final = ss.CLOSED
_RECENT: Final = 1024  # closed streams remembered, to tell "closed" from "never opened" (a power of two)
_RECENT_MASK: Final = _RECENT - 1
# What `H2Connection.closed_kind` says of a stream id.
NOT_REMEMBERED: Final = 0
CLOSED_NORMALLY: Final = 1
RESET_BY_US: Final = 2


class ConnectionHandler(Protocol):
    """What an `H2Connection` calls; the transport side of fastpath implements it."""

    def on_headers(self, st: "H2Stream", headers: list, end: bool) -> None: ...
    def on_data(self, st: "H2Stream", data: bytes, end: bool) -> None: ...
    def on_reset(self, st: "H2Stream", code: int) -> None: ...
    def on_stream_error(self, st: "H2Stream", code: int, message: str) -> None: ...
    def on_refused(self, sid: int, why: str, message: str) -> None: ...
    def on_goaway(self, last: int, code: int, debug: bytes) -> None: ...
    def on_connection_error(self, code: int, message: str) -> None: ...
    def on_limit(self, name: str) -> None: ...


class StreamError(fr.H2Error):
    """A stream error (RFC 9113 §5.4.2): RST_STREAM `code` on `stream_id`, the connection carries on."""

    def __init__(self, stream_id: int, code: int, message: str) -> None:
        super().__init__(code, message, stream_id)


class H2Stream:
    """One stream's protocol state on one connection; `owner` is what the application hangs on it."""

    __slots__ = ("sid", "state", "recv_window", "recv_unacked", "sender", "owner", "content_length",
                 "received", "got_headers", "conn", "on_data")

    def __init__(self, conn: "H2Connection", sid: int, state: int, recv_window: int) -> None:
        self.conn = conn
        self.on_data: Callable[[bytes, bool], None] | None = None  # DATA goes here, not to the handler
        self.sid = sid
        self.state = state
        self.recv_window = recv_window  # what the peer may still send on this stream
        self.recv_unacked = 0           # bytes consumed but not yet given back with WINDOW_UPDATE
        self.sender: Half | None = None  # our sending side on this stream
        self.owner: Any = None
        self.content_length = -1
        self.received = 0
        self.got_headers = False        # client side: the response HEADERS arrived

    def credit(self, n: int) -> None:
        """`n` bytes received on this stream were consumed: give them back to the peer in batches."""
        if self.state == ss.HALF_CLOSED_REMOTE or self.state == _CLOSED:
            return
        unacked = self.recv_unacked + n
        conn = self.conn
        if unacked >= conn.stream_update_at:
            conn.send(fr.window_update_frame(self.sid, unacked))
            self.recv_window += unacked
            unacked = 0
        self.recv_unacked = unacked


class Half:
    """Our sending side of one stream: bytes waiting to go out on `conn` stream `sid`.

    Sending respects the peer's stream and connection windows and max frame
    size (DATA is split to fit). What cannot go out waits in `pending`; it is
    bounded because the source is only given window back (`on_sent`) for
    bytes that went out, so a slow reader slows only its own stream.
    `on_done` is called once END_STREAM went out.
    """

    __slots__ = ("conn", "sid", "window", "pending", "pending_bytes", "end", "trailers", "trailers_extra", "done",
                 "on_sent", "skip_credit", "blocked", "started", "on_done")

    def __init__(self, on_sent: Callable[[int], None]) -> None:
        self.conn: H2Connection | None = None
        self.sid = 0
        self.window = 0
        self.pending: deque[bytes] = _new_deque()
        self.pending_bytes = 0
        self.end = False          # END_STREAM to send once pending is out
        self.trailers: list | None = None  # header list to close with instead of an empty DATA
        self.trailers_extra: list | None = None  # fields of the trailers unique to this stream (literals)
        self.done = False         # END_STREAM sent
        self.on_sent = on_sent
        self.skip_credit = 0      # replayed bytes that were credited to the source already
        self.blocked = False      # waiting in conn.blocked for connection window
        self.started = False      # stream open on conn (HEADERS sent)
        self.on_done: Callable[[], None] | None = None

    def attach(self, conn: "H2Connection", sid: int) -> None:
        self.conn = conn
        self.sid = sid
        self.window = conn.peer_initial_window
        self.started = True
        st = conn.streams.get(sid)
        if st is not None:
            st.sender = self

    def _finished(self) -> None:
        self.done = True
        conn = self.conn
        if conn is not None:
            conn.end_sent(self.sid)
        if self.on_done is not None:
            self.on_done()

    def push(self, data: bytes, end: bool) -> None:
        """Queues `data` (and END_STREAM if `end`) and sends what the windows allow now."""
        if end:
            self.end = True
        n = len(data)
        if n and not self.pending and self.started and not self.done:
            conn = self.conn
            assert conn is not None
            if n <= self.window and n <= conn.send_window and n <= conn.peer_max_frame and not conn.closed:
                # The common case, one frame that fits: no queueing.
                last = end and self.trailers is None
                conn.send(_pack_hdr(n >> 8, n & 0xFF, _DATA, _END if last else 0, self.sid) + data)
                conn.data_frames_sent += 1
                self.window -= n
                conn.send_window -= n
                if self.skip_credit:
                    used = min(self.skip_credit, n)
                    self.skip_credit -= used
                    n -= used
                if n:
                    self.on_sent(n)
                if last:
                    self._finished()
                elif end:
                    self.pump()  # trailers
                return
        if data:
            self.pending.append(data)
            self.pending_bytes += len(data)
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
        finished = False
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
                conn.send(_pack_hdr(k >> 8, k & 0xFF, _DATA, flags, sid) + data)
            else:
                pending[0] = data[k:]
                conn.send(_pack_hdr(k >> 8, k & 0xFF, _DATA, flags, sid) + data[:k])
            conn.data_frames_sent += 1
            self.window -= k
            conn.send_window -= k
            self.pending_bytes -= k
            sent_total += k
            if flags:
                finished = True
        if sent_total:
            skip = self.skip_credit
            if skip:
                used = skip if skip < sent_total else sent_total
                self.skip_credit = skip - used
                sent_total -= used
            if sent_total:
                self.on_sent(sent_total)
        if not finished and not pending and self.end and not self.done:
            if self.trailers is not None:
                conn.send_headers(sid, self.trailers, end_stream=True, extra=self.trailers_extra, _from_half=True)
                self.trailers = None
            else:
                conn.send(_pack_hdr(0, 0, _DATA, _END, sid))
            finished = True
        if finished:
            self._finished()


def _noop(*args: Any) -> None:
    pass


def _zero() -> int:
    return 0


class H2Connection:
    """Frames, SETTINGS, windows, stream states, limits and validation of one HTTP/2 connection."""

    def __init__(self, constraints: Constraints, client_side: bool, handler: ConnectionHandler) -> None:
        lim = self.limits = constraints
        self.client_side = client_side
        self.handler = handler
        self._on_headers = handler.on_headers
        self._on_data = handler.on_data
        self.out: list[bytes] = []
        self.queued = False
        self.wake: Callable[[], None] = _noop  # called when `out` becomes non-empty
        self.unsent_bytes: Callable[[], int] = _zero  # bytes the transport has not written yet
        self.closed = False
        self.reader = fr.FrameReader(lim.max_frame_size, lim.max_header_block)
        self.decoder = HpackDecoder(max_header_list=lim.max_header_list)
        self.encoder = HpackEncoder()
        self.streams: dict[int, H2Stream] = {}
        self.peer_initial_window = fr.DEFAULT_WINDOW
        self.peer_max_frame = fr.DEFAULT_MAX_FRAME
        self.peer_max_streams = 2**31 - 1
        self.send_window = fr.DEFAULT_WINDOW
        self.recv_window = fr.DEFAULT_WINDOW  # connection-level window we granted the peer
        self.recv_unacked = 0
        self.conn_update_at = lim.connection_window >> 2
        self.stream_update_at = lim.stream_window >> 2
        self.blocked: deque[Half] = deque()
        self.goaway_sent = False
        self.peer_goaway: int | None = None
        self.last_peer_stream = 0       # highest stream id the peer opened
        self.next_local_id = 1          # next stream id we open (client side)
        # Recently closed streams: slot (sid >> 1) & _RECENT_MASK holds sid (closed normally) or -sid
        # (reset by us: its late frames are ignored). See _remember_closed.
        self._closed: list[int] = [0] * _RECENT
        self.preface_buf: bytes | None = None if client_side else b""
        self.settings_seen = False      # the peer's first frame must be SETTINGS (§3.4)
        self.control_bucket = TokenBucket(lim.control_frames_per_s, lim.control_burst)
        self.reset_bucket = TokenBucket(lim.resets_per_s, lim.reset_burst)
        self.empty_data_run = 0
        self.window_updates = 0
        self.data_frames_sent = 0
        self.streams_opened = 0
        self._valid: dict[int, tuple[list, str | None]] = {}
        self.skip_acks = [0, 0]  # SETTINGS / PING ACKs the transport already sent for these bytes

    # -- output ------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.out.append(data)
        if not self.queued:
            self.queued = True
            self.wake()

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call (for tests and simple transports)."""
        out = b"".join(self.out)
        self.out.clear()
        self.queued = False
        return out

    def initiate(self) -> None:
        """Our connection preface: (client) the magic, SETTINGS, and a connection window grant."""
        lim = self.limits
        settings = {
            fr.SETTINGS_INITIAL_WINDOW_SIZE: lim.stream_window,
            fr.SETTINGS_MAX_FRAME_SIZE: lim.max_frame_size,
            fr.SETTINGS_MAX_HEADER_LIST_SIZE: lim.max_header_list,
        }
        if self.client_side:
            settings[fr.SETTINGS_ENABLE_PUSH] = 0
        else:
            settings[fr.SETTINGS_MAX_CONCURRENT_STREAMS] = lim.max_concurrent_streams
        self.recv_window = lim.connection_window
        frames = fr.settings_frame(settings) + fr.window_update_frame(0, lim.connection_window - fr.DEFAULT_WINDOW)
        self.send(fr.PREFACE + frames if self.client_side else frames)

    def send_control(self, frame: bytes) -> None:
        """Queues an ACK; a peer that makes us ACK but never reads what we send is cut off."""
        if self.unsent_bytes() > self.limits.max_unsent_control_bytes:
            raise self._limit_hit("max_unsent_control_bytes",
                                  "peer does not read our frames (PING/SETTINGS ACKs piling up)")
        self.send(frame)

    def send_headers(self, sid: int, headers: list, end_stream: bool, extra: list | None = None,
                     _from_half: bool = False) -> None:
        """HEADERS for `headers`; `extra` fields (values unique to this message) go as literals."""
        st = self.streams.get(sid)
        if st is None or self.closed:
            return
        nxt = _SEND_HEADERS[st.state]
        if nxt < 0:
            return
        block = self.encoder.encode(headers)
        if extra:
            lit = self.encoder.literal
            block += b"".join([lit(n, v) for n, v in extra])
        self.send(fr.headers_frames(sid, block, end_stream, self.peer_max_frame))
        st.state = nxt
        if end_stream and not _from_half:
            sender = st.sender
            if sender is not None and not sender.done:
                sender.done = True
            self.end_sent(sid)

    def end_sent(self, sid: int) -> None:
        """END_STREAM went out on `sid` (DATA or trailers)."""
        st = self.streams.get(sid)
        if st is None:
            return
        nxt = _SEND_END[st.state]
        if nxt >= 0:
            st.state = nxt
            if nxt == _CLOSED:
                self._forget(st, False)

    def open_stream(self, owner: Any) -> H2Stream:
        """(Client side) a new stream with the next id, idle until `send_headers`."""
        sid = self.next_local_id
        self.next_local_id += 2
        st = H2Stream(self, sid, ss.IDLE, self.limits.stream_window)
        st.owner = owner
        self.streams[sid] = st
        self.streams_opened += 1
        return st

    def credit(self, sid: int, n: int) -> None:
        """`n` bytes received on `sid` were consumed: give them back to the peer in batches."""
        st = self.streams.get(sid)
        if st is not None:
            st.credit(n)

    def reset_stream(self, sid: int, code: int) -> None:
        """Sends RST_STREAM(code) unless the stream is already closed, and forgets it."""
        st = self.streams.get(sid)
        if st is None:
            return
        if not self.closed:
            self.send(fr.rst_stream_frame(sid, code))
        self._forget(st, True)

    def close_stream(self, sid: int, code: int = fr.CANCEL) -> None:
        """The application is done with `sid`: a stream not closed yet is reset.

        After a complete response to a request still being sent (half-closed
        local) that is RST_STREAM(NO_ERROR), as RFC 9113 §8.1 asks.
        """
        st = self.streams.get(sid)
        if st is None:
            return
        state = st.state
        if state == _CLOSED:  # closed while its last frame was being handled: nothing to send
            self._forget(st, False)
            return
        if state == ss.HALF_CLOSED_LOCAL and not self.client_side:
            code = fr.NO_ERROR
        self.reset_stream(sid, code)

    def goaway(self, code: int, debug: bytes = b"") -> None:
        if not self.goaway_sent and not self.closed:
            self.goaway_sent = True
            self.send(fr.goaway_frame(self.last_peer_stream, code, debug))

    def _forget(self, st: H2Stream, reset_by_us: bool) -> None:
        self.streams.pop(st.sid, None)
        st.state = _CLOSED
        self._remember_closed(st.sid, reset_by_us)

    def _remember_closed(self, sid: int, reset_by_us: bool) -> None:
        """Remembers a closed stream in a ring indexed by stream id.

        A connection's streams all have the same parity and rising ids, so the
        last _RECENT ids have a slot each and a slot keeps the newest id that
        maps to it: what is remembered is bounded by construction, and a close
        is one list store (a dict and a queue of ids cost 2% of a call's CPU).
        """
        ring = self._closed
        i = (sid >> 1) & _RECENT_MASK
        old = ring[i]
        if (old if old >= 0 else -old) <= sid:
            ring[i] = -sid if reset_by_us else sid

    def closed_kind(self, sid: int) -> int:
        """RESET_BY_US, CLOSED_NORMALLY or NOT_REMEMBERED (never opened, or closed long ago)."""
        v = self._closed[(sid >> 1) & _RECENT_MASK]
        if v == sid:
            return CLOSED_NORMALLY
        if v == -sid:
            return RESET_BY_US
        return NOT_REMEMBERED

    # -- input -------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Feeds bytes from the peer; answers violations (RST_STREAM or GOAWAY) by itself."""
        if self.closed:
            return
        if self.preface_buf is not None:
            buf = self.preface_buf + data
            n = len(fr.PREFACE)
            if len(buf) < n:
                if not fr.PREFACE.startswith(buf):
                    self.connection_error(fr.PROTOCOL_ERROR, "expected the HTTP/2 client preface (h2c prior knowledge)")
                else:
                    self.preface_buf = buf
                return
            if not buf.startswith(fr.PREFACE):
                self.connection_error(fr.PROTOCOL_ERROR, "expected the HTTP/2 client preface (h2c prior knowledge)")
                return
            self.preface_buf = None
            data = buf[n:]
            if not data:
                return
        reader = self.reader
        try:
            frames = reader.feed(data)
            for ftype, flags, sid, payload in frames:
                try:
                    if ftype == _DATA:
                        self._data(flags, sid, payload)
                    elif ftype == fr.HEADERS:
                        self._headers(flags, sid, payload)
                    else:
                        self._control(ftype, flags, sid, payload)
                except fr.H2Error as e:
                    if not isinstance(e, StreamError):
                        raise
                    self.stream_error(e.stream_id, e.code, str(e))
                if self.closed:
                    return
            err = reader.error
            if err is not None:
                raise err
        except fr.H2Error as e:
            self.connection_error(e.code, str(e))

    def connection_error(self, code: int, message: str) -> None:
        """GOAWAY(code) naming the last stream we saw; the handler closes the transport."""
        if self.closed:
            return
        if not self.goaway_sent or code != fr.NO_ERROR:
            self.send(fr.goaway_frame(self.last_peer_stream, code, message.encode()[:200]))
        self.goaway_sent = True
        self.closed = True
        self.handler.on_connection_error(code, message)

    def stream_error(self, sid: int, code: int, message: str) -> None:
        self.send(fr.rst_stream_frame(sid, code))
        st = self.streams.get(sid)
        if st is not None:
            self._forget(st, True)
            if st.owner is not None:
                self.handler.on_stream_error(st, code, message)
        elif self.closed_kind(sid) == NOT_REMEMBERED:
            self._remember_closed(sid, True)

    def _closed_or_idle(self, sid: int, event: int) -> bool:
        """A frame for a stream we hold no state for: True to ignore it; raises when it is an error."""
        if self.client_side:
            if sid >= self.next_local_id or not sid & 1:
                raise fr.H2Error(fr.PROTOCOL_ERROR, f"frame on stream {sid}, which we never opened")
            return True  # the backend's frames crossing our RST_STREAM or END_STREAM
        if sid > self.last_peer_stream:
            nxt = ss.NEXT[event][ss.IDLE]
            if nxt == ss.PROTOCOL_ERROR_CONN:
                raise fr.H2Error(fr.PROTOCOL_ERROR, f"{ss.EVENT_NAMES[event]} on idle stream {sid} (RFC 9113 §5.1)")
            return True
        kind = self.closed_kind(sid)
        if kind == RESET_BY_US:
            return True  # frames in flight when we reset it (§5.1 closed: ignore)
        if ss.NEXT[event][_CLOSED] == ss.STREAM_CLOSED_ERROR:
            if kind == NOT_REMEMBERED and event == ss.RECV_HEADERS:
                raise fr.H2Error(fr.PROTOCOL_ERROR, f"HEADERS on stream {sid}, lower than stream "
                                 f"{self.last_peer_stream} already opened (RFC 9113 §5.1.1)")
            raise StreamError(sid, fr.STREAM_CLOSED, f"{ss.EVENT_NAMES[event]} on closed stream {sid}")
        return True

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise fr.H2Error(fr.PROTOCOL_ERROR, "DATA on stream 0")
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
            self.empty_data_run = 0
        elif not flags & _END:
            self.empty_data_run += 1
            if self.empty_data_run > self.limits.max_consecutive_empty_data:
                raise self._limit_hit("empty DATA frames", "flood of empty DATA frames")
        st = self.streams.get(sid)
        if st is None:
            self._closed_or_idle(sid, ss.RECV_DATA)
            return
        state = st.state
        if _RECV_DATA[state] < 0:
            raise StreamError(sid, fr.STREAM_CLOSED, f"DATA on stream {sid} in state {ss.STATE_NAMES[state]}")
        st.recv_window -= n
        if st.recv_window < 0:
            raise StreamError(sid, fr.FLOW_CONTROL_ERROR, f"peer exceeded the window of stream {sid}")
        data = fr.strip_padding(payload, flags, sid) if flags & fr.PADDED else payload
        if len(data) != n:
            st.credit(n - len(data))
        end = bool(flags & _END)
        if st.content_length >= 0:
            st.received += len(data)
            if st.received > st.content_length or (end and st.received != st.content_length):
                raise StreamError(sid, fr.PROTOCOL_ERROR, f"DATA does not match content-length "
                                  f"{st.content_length} (RFC 9113 §8.1.1)")
        if end:
            st.state = _RECV_END[state]
        on_data = st.on_data
        if on_data is not None:
            on_data(data, end)
        else:
            self._on_data(st, data, end)
        if st.state == _CLOSED and st.sid in self.streams:
            self._forget(st, False)

    def _headers(self, flags: int, sid: int, block: bytes) -> None:
        headers = self.decoder.decode(block)  # always decode: HPACK state is per connection
        end = bool(flags & _END)
        st = self.streams.get(sid)
        if st is None:
            if self.client_side or sid <= self.last_peer_stream:
                self._closed_or_idle(sid, ss.RECV_HEADERS)
                return
            self._new_stream(flags, sid, headers, end)
            return
        state = st.state
        nxt = _RECV_HEADERS[state]
        if nxt < 0:
            raise StreamError(sid, fr.STREAM_CLOSED, f"HEADERS on stream {sid} in state {ss.STATE_NAMES[state]}")
        if flags & fr.SELF_DEPENDENT:
            raise StreamError(sid, fr.PROTOCOL_ERROR, f"stream {sid} depends on itself (RFC 9113 §5.3.1)")
        if self.client_side and not st.got_headers:
            err = self._checked(headers, validation.response_error)
            if err is not None:
                raise StreamError(sid, fr.PROTOCOL_ERROR, f"malformed response: {err}")
            status = headers[0][1]
            if status[:1] == b"1" and status != b"101":
                if end:
                    raise StreamError(sid, fr.PROTOCOL_ERROR, "informational response with END_STREAM")
                return  # 1xx: the final response follows
            st.got_headers = True
        else:
            if not end:
                raise StreamError(sid, fr.PROTOCOL_ERROR, "trailers without END_STREAM (RFC 9113 §8.1)")
            err = self._checked(headers, validation.trailers_error)
            if err is not None:
                raise StreamError(sid, fr.PROTOCOL_ERROR, f"malformed trailers: {err}")
            if st.content_length >= 0 and st.received != st.content_length:
                raise StreamError(sid, fr.PROTOCOL_ERROR, f"DATA does not match content-length "
                                  f"{st.content_length} (RFC 9113 §8.1.1)")
        if end:
            st.state = _RECV_END[nxt]
        self._on_headers(st, headers, end)
        if st.state == _CLOSED and st.sid in self.streams:
            self._forget(st, False)

    def _new_stream(self, flags: int, sid: int, headers: list, end: bool) -> None:
        if not sid & 1:
            raise fr.H2Error(fr.PROTOCOL_ERROR, f"client opened even-numbered stream {sid} (RFC 9113 §5.1.1)")
        self.last_peer_stream = sid
        handler = self.handler
        if self.goaway_sent:
            self._refuse(sid, fr.REFUSED_STREAM, "goaway", "connection is going away")
            return
        if flags & fr.SELF_DEPENDENT:
            self._refuse(sid, fr.PROTOCOL_ERROR, "malformed", f"stream {sid} depends on itself (RFC 9113 §5.3.1)")
            return
        if len(self.streams) >= self.limits.max_concurrent_streams:
            handler.on_limit("max_concurrent_streams")
            self._refuse(sid, fr.REFUSED_STREAM, "max_concurrent_streams", "too many concurrent streams")
            return
        err = self._checked(headers, validation.request_error)
        cl = -1
        if err is None:
            try:
                cl = validation.content_length(headers)
            except ValueError as e:
                err = str(e)
        if err is not None:
            self._refuse(sid, fr.PROTOCOL_ERROR, "malformed", f"malformed request: {err}")
            return
        st = H2Stream(self, sid, ss.HALF_CLOSED_REMOTE if end else ss.OPEN, self.limits.stream_window)
        st.content_length = cl
        if end and cl > 0:
            self._refuse(sid, fr.PROTOCOL_ERROR, "malformed", f"DATA does not match content-length {cl}")
            return
        self.streams[sid] = st
        self.streams_opened += 1
        self._on_headers(st, headers, end)

    def _refuse(self, sid: int, code: int, why: str, message: str) -> None:
        self.send(fr.rst_stream_frame(sid, code))
        self._remember_closed(sid, True)
        self.handler.on_refused(sid, why, message)

    def _limit_hit(self, name: str, message: str) -> fr.H2Error:
        """An abuse limit of `Constraints` was passed: tell the handler, and the error to raise."""
        self.handler.on_limit(name)
        return fr.H2Error(fr.ENHANCE_YOUR_CALM, message)

    def _checked(self, headers: list, check: Callable[[list], str | None]) -> str | None:
        """`check(headers)`, remembered per decoded list (HPACK hands out the same list for a repeated block)."""
        if not self.decoder.cached:
            return check(headers)  # a list decoded once: nothing to remember it for
        key = id(headers)
        hit = self._valid.get(key)
        if hit is not None and hit[0] is headers:
            return hit[1]
        err = check(headers)
        if len(self._valid) >= 256:
            self._valid.clear()
        self._valid[key] = (headers, err)
        return err

    def _control(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        self.empty_data_run = 0
        if ftype == fr.WINDOW_UPDATE:
            self._window_update(sid, payload)
            return
        if ftype == fr.RST_STREAM:
            self._rst_stream(sid, payload)
            return
        if not self.settings_seen and not (ftype == fr.SETTINGS and not flags & fr.ACK):
            raise fr.H2Error(fr.PROTOCOL_ERROR, "the first frame must be SETTINGS (RFC 9113 §3.4)")
        if not self.control_bucket.take():
            raise self._limit_hit("control frame flood", f"control frame flood (frame type {ftype})")
        if ftype == fr.SETTINGS:
            if sid != 0:
                raise fr.H2Error(fr.PROTOCOL_ERROR, "SETTINGS on a stream (RFC 9113 §6.5)")
            if flags & fr.ACK:
                if payload:
                    raise fr.H2Error(fr.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload (RFC 9113 §6.5)")
                return
            self.settings_seen = True
            self._apply_settings(fr.parse_settings(payload))
            if self.skip_acks[0]:
                self.skip_acks[0] -= 1
            else:
                self.send_control(fr.settings_frame(ack=True))
        elif ftype == fr.PING:
            if len(payload) != 8:
                raise fr.H2Error(fr.FRAME_SIZE_ERROR, f"PING of {len(payload)} bytes (RFC 9113 §6.7)")
            if sid != 0:
                raise fr.H2Error(fr.PROTOCOL_ERROR, "PING on a stream (RFC 9113 §6.7)")
            if not flags & fr.ACK:
                if self.skip_acks[1]:
                    self.skip_acks[1] -= 1
                else:
                    self.send_control(fr.ping_frame(payload, ack=True))
        elif ftype == fr.PRIORITY:
            if sid == 0:
                raise fr.H2Error(fr.PROTOCOL_ERROR, "PRIORITY on stream 0 (RFC 9113 §6.3)")
            if len(payload) != 5:
                raise StreamError(sid, fr.FRAME_SIZE_ERROR, f"PRIORITY of {len(payload)} bytes (RFC 9113 §6.3)")
            if fr.read_u32(payload) & fr.MAX_STREAM_ID == sid:
                raise StreamError(sid, fr.PROTOCOL_ERROR, f"stream {sid} depends on itself (RFC 9113 §5.3.1)")
        elif ftype == fr.GOAWAY:
            if sid != 0:
                raise fr.H2Error(fr.PROTOCOL_ERROR, "GOAWAY on a stream (RFC 9113 §6.8)")
            last, code, debug = fr.parse_goaway(payload)
            self.peer_goaway = last
            self.handler.on_goaway(last, code, debug)
        elif ftype == fr.PUSH_PROMISE:
            raise fr.H2Error(fr.PROTOCOL_ERROR, "PUSH_PROMISE is not accepted (push disabled, RFC 9113 §8.4)")
        # Unknown frame types are ignored (RFC 9113 §5.5).

    def _window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise fr.H2Error(fr.FRAME_SIZE_ERROR, f"WINDOW_UPDATE of {len(payload)} bytes (RFC 9113 §6.9)")
        inc = fr.read_u32(payload) & _MAX_WINDOW
        if not self.settings_seen:
            raise fr.H2Error(fr.PROTOCOL_ERROR, "the first frame must be SETTINGS (RFC 9113 §3.4)")
        self.window_updates += 1
        lim = self.limits
        if self.window_updates > (lim.window_update_base + lim.window_update_per_stream * self.streams_opened
                                  + lim.window_update_per_data_frame * self.data_frames_sent):
            raise self._limit_hit("WINDOW_UPDATE flood", "WINDOW_UPDATE flood (more than our DATA frames justify)")
        if sid == 0:
            if inc == 0:
                raise fr.H2Error(fr.PROTOCOL_ERROR, "WINDOW_UPDATE with a zero increment (RFC 9113 §6.9)")
            self.send_window += inc
            if self.send_window > _MAX_WINDOW:
                raise fr.H2Error(fr.FLOW_CONTROL_ERROR, "connection window above 2^31-1 (RFC 9113 §6.9.1)")
            blocked = self.blocked
            while blocked and self.send_window > 0:
                half = blocked.popleft()
                half.blocked = False
                half.pump()
            return
        st = self.streams.get(sid)
        if st is None:
            self._closed_or_idle(sid, ss.RECV_WINDOW_UPDATE)
            return
        if inc == 0:
            raise StreamError(sid, fr.PROTOCOL_ERROR, "WINDOW_UPDATE with a zero increment (RFC 9113 §6.9)")
        sender = st.sender
        if sender is not None:
            sender.window += inc
            if sender.window > _MAX_WINDOW:
                raise StreamError(sid, fr.FLOW_CONTROL_ERROR, f"window of stream {sid} above 2^31-1 (RFC 9113 §6.9.1)")
            sender.pump()

    def _rst_stream(self, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise fr.H2Error(fr.PROTOCOL_ERROR, "RST_STREAM on stream 0 (RFC 9113 §6.4)")
        code = fr.parse_rst_stream(payload)
        if not self.settings_seen:
            raise fr.H2Error(fr.PROTOCOL_ERROR, "the first frame must be SETTINGS (RFC 9113 §3.4)")
        if not self.client_side and not self.reset_bucket.take():
            raise self._limit_hit("too many stream resets", "too many stream resets (rapid reset)")
        st = self.streams.get(sid)
        if st is None:
            self._closed_or_idle(sid, ss.RECV_RST_STREAM)
            return
        self._forget(st, False)
        self.handler.on_reset(st, code)

    def _apply_settings(self, settings: list[tuple[int, int]]) -> None:
        for key, value in settings:
            if key == fr.SETTINGS_INITIAL_WINDOW_SIZE:
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                if delta:
                    senders = [st.sender for st in self.streams.values() if st.sender is not None]
                    for sender in senders:
                        sender.window += delta
                        if sender.window > _MAX_WINDOW:
                            raise fr.H2Error(fr.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE change takes a "
                                             "stream window above 2^31-1 (RFC 9113 §6.9.2)")
                    if delta > 0:
                        for sender in senders:
                            sender.pump()
            elif key == fr.SETTINGS_MAX_FRAME_SIZE:
                self.peer_max_frame = value
            elif key == fr.SETTINGS_HEADER_TABLE_SIZE:
                self.encoder.set_max_table_size(value)
            elif key == fr.SETTINGS_MAX_CONCURRENT_STREAMS:
                self.peer_max_streams = value
