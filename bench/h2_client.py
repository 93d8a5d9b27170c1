"""A lean gRPC-over-HTTP/2 (h2c) client for load generation, on asyncio/uvloop.

grpc.aio costs this machine's client ~150 µs of CPU per streamed message and
~400 µs per unary call, so with it the client, not the proxy, sets the pace and
the proxy sees one message per wake-up. This client speaks the same protocol
(connection preface, SETTINGS, HPACK headers with a dynamic table, DATA with
5-byte gRPC message prefixes, trailers with grpc-status, PING, WINDOW_UPDATE,
GOAWAY) but handles messages inside `data_received`, without a coroutine
switch per message, so every path is driven harder and at equal client cost.

Header blocks are encoded by `hpack.Encoder` as a gRPC client would:
repeated metadata becomes indexed references after the first call; a unique
`x-request-id` is a new literal in every block.
"""
from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass, field

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
MAX_WINDOW = 2**31 - 1


class GrpcCallError(RuntimeError):
    """A call that ended without grpc-status 0; the message says how it ended."""


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return bytes((n >> 16 & 0xFF, n >> 8 & 0xFF, n & 0xFF, ftype, flags)) + stream_id.to_bytes(4, "big") + payload


def table_neutral(block: bytes) -> bool:
    """True if decoding this HPACK block leaves the dynamic table unchanged.

    Indexed fields and literals without (or never) indexing leave it alone;
    literals with incremental indexing and size updates change it. Such a block
    decodes to the same headers every time while the table is unchanged, so its
    decoded form can be cached.
    """
    i, n = 0, len(block)

    def varint(i: int, bits: int) -> tuple[int, int]:
        mask = (1 << bits) - 1
        v = block[i] & mask
        i += 1
        if v < mask:
            return v, i
        shift = 0
        while True:
            if i >= n:
                raise ValueError("truncated HPACK integer")
            b = block[i]
            i += 1
            v += (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return v, i

    try:
        while i < n:
            b = block[i]
            if b & 0x80:
                _, i = varint(i, 7)
            elif b & 0xE0 != 0:  # 01xxxxxx incremental indexing, 001xxxxx size update
                return False
            else:
                idx, i = varint(i, 4)
                if idx == 0:
                    length, i = varint(i, 7)
                    i += length
                length, i = varint(i, 7)
                i += length
        return i == n
    except (ValueError, IndexError):
        return False


def grpc_message(body: bytes) -> bytes:
    """A gRPC length-prefixed, uncompressed message."""
    return b"\x00" + len(body).to_bytes(4, "big") + body


@dataclass(slots=True)
class _Stream:
    sid: int
    t0: float
    done: asyncio.Future
    first: float = 0.0
    msgs: int = 0
    prefix: bytes = b""
    prefix_need: int = 5
    body_need: int = 0
    headers_seen: int = 0
    block: bytearray = field(default_factory=bytearray)
    block_end_stream: bool = False
    status: str | None = None
    message: str = ""


class H2GrpcConnection(asyncio.Protocol):
    """One HTTP/2 connection carrying many concurrent gRPC calls."""

    def __init__(self, authority: str):
        self.authority = authority
        self.transport: asyncio.Transport | None = None
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.dec.max_header_list_size = 1 << 20
        self.next_sid = 1
        self.streams: dict[int, _Stream] = {}
        self.buf = b""
        self.send_window = 65535
        self.peer_initial_window = 65535
        self.window_open = asyncio.Event()
        self.window_open.set()
        self.recv_unacked = 0
        self.closed: BaseException | None = None
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.cont_sid = 0
        self._cache: tuple[tuple, bytes, bool] | None = None
        self._decoded: dict[bytes, list] = {}
        self._loop = asyncio.get_running_loop()

    # -------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        settings = struct.pack(">HI", 0x2, 0) + struct.pack(">HI", 0x4, MAX_WINDOW)  # no push; max stream window
        transport.write(PREFACE + frame(SETTINGS, 0, 0, settings)
                        + frame(WINDOW_UPDATE, 0, 0, (MAX_WINDOW - 65535).to_bytes(4, "big")))

    def connection_lost(self, exc) -> None:  # type: ignore[override]
        self._fail_all(exc or ConnectionError("connection closed by peer"))

    def _fail_all(self, exc: BaseException, above: int = 0) -> None:
        if above == 0:
            self.closed = exc
        for sid in [s for s in self.streams if s > above]:
            st = self.streams.pop(sid)
            if not st.done.done():
                st.done.set_exception(exc)
        if not self.ready.done():
            self.ready.set_exception(exc)
        self.window_open.set()

    def data_received(self, data: bytes) -> None:  # type: ignore[override]
        buf = self.buf + data if self.buf else data
        pos, end = 0, len(buf)
        while end - pos >= 9:
            length = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
            if end - pos - 9 < length:
                break
            ftype, flags = buf[pos + 3], buf[pos + 4]
            sid = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
            payload = buf[pos + 9:pos + 9 + length]
            pos += 9 + length
            self._frame(ftype, flags, sid, payload)
        self.buf = buf[pos:]

    # -------------------------------------------------- frames
    def _frame(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if ftype == DATA:
            self.recv_unacked += len(payload)
            if self.recv_unacked > 1 << 30:  # keep the connection window wide open
                self.transport.write(frame(WINDOW_UPDATE, 0, 0, self.recv_unacked.to_bytes(4, "big")))
                self.recv_unacked = 0
            st = self.streams.get(sid)
            if st is None:
                return
            if flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            self._data(st, payload)
            if flags & END_STREAM:
                self._end(st)
        elif ftype == HEADERS or ftype == CONTINUATION:
            st = self.streams.get(sid)
            if ftype == HEADERS:
                if flags & PADDED:
                    payload = payload[1:len(payload) - payload[0]]
                if flags & PRIORITY_FLAG:
                    payload = payload[5:]
                if st is not None:
                    st.block_end_stream = bool(flags & END_STREAM)
            if st is None:  # still decode, to keep the HPACK table in step
                if flags & END_HEADERS:
                    self._decode(bytes(payload))
                return
            st.block += payload
            if flags & END_HEADERS:
                headers = self._decode(bytes(st.block))
                st.block.clear()
                st.headers_seen += 1
                for k, v in headers:
                    if k == b"grpc-status":
                        st.status = v.decode()
                    elif k == b"grpc-message":
                        st.message = v.decode(errors="replace")
                    elif k == b":status" and v != b"200":
                        st.status = st.status or f"http {v.decode()}"
                if st.block_end_stream:
                    self._end(st)
        elif ftype == SETTINGS:
            if flags & ACK:
                return
            for i in range(0, len(payload) - 5, 6):
                key, value = struct.unpack_from(">HI", payload, i)
                if key == 0x1:
                    self.enc.header_table_size = value
                elif key == 0x4:
                    self.peer_initial_window = value
            self.transport.write(frame(SETTINGS, ACK, 0))
            if not self.ready.done():
                self.ready.set_result(None)
        elif ftype == WINDOW_UPDATE:
            if sid == 0:
                self.send_window += int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                self.window_open.set()
        elif ftype == PING:
            if not flags & ACK:
                self.transport.write(frame(PING, ACK, 0, payload))
        elif ftype == RST_STREAM:
            st = self.streams.pop(sid, None)
            if st is not None and not st.done.done():
                code = int.from_bytes(payload[:4], "big")
                st.done.set_exception(GrpcCallError(f"stream reset by peer (RST_STREAM code {code})"))
        elif ftype == GOAWAY:
            last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            code = int.from_bytes(payload[4:8], "big")
            self._fail_all(ConnectionError(f"GOAWAY code {code} last stream {last}"), above=last)
            self.closed = ConnectionError(f"peer sent GOAWAY (code {code})")

    def _decode(self, block: bytes) -> list:
        """HPACK-decodes a block; blocks that leave the table unchanged are decoded once."""
        headers = self._decoded.get(block)
        if headers is not None:
            return headers
        headers = self.dec.decode(block, raw=True)
        if table_neutral(block):
            if len(self._decoded) > 256:
                self._decoded.clear()
            self._decoded[block] = headers
        else:
            self._decoded.clear()  # the table changed: cached blocks may now mean something else
        return headers

    def _data(self, st: _Stream, payload: bytes) -> None:
        i, n = 0, len(payload)
        while i < n:
            if st.prefix_need:
                take = min(st.prefix_need, n - i)
                st.prefix += payload[i:i + take]
                i += take
                st.prefix_need -= take
                if st.prefix_need:
                    return
                st.body_need = int.from_bytes(st.prefix[1:5], "big")
                st.prefix = b""
                if st.body_need:
                    continue
            else:
                take = min(st.body_need, n - i)
                i += take
                st.body_need -= take
                if st.body_need:
                    return
            st.msgs += 1
            if st.msgs == 1:
                st.first = time.perf_counter()
            st.prefix_need = 5

    def _end(self, st: _Stream) -> None:
        self.streams.pop(st.sid, None)
        if st.done.done():
            return
        if st.status == "0":
            st.done.set_result(None)
        else:
            st.done.set_exception(GrpcCallError(
                f"call ended with grpc-status {st.status or 'missing'}" + (f": {st.message}" if st.message else "")))

    # -------------------------------------------------- calls
    def _header_block(self, path: str, metadata: tuple[tuple[str, str], ...]) -> bytes:
        headers = ((":method", "POST"), (":scheme", "http"), (":path", path), (":authority", self.authority),
                   ("content-type", "application/grpc"), ("te", "trailers"), *metadata)
        c = self._cache
        if c is not None and c[0] == headers and c[2]:
            return c[1]  # every field already indexed: the block no longer changes the table
        block = self.enc.encode(headers)
        self._cache = (headers, block, c is not None and c[0] == headers and c[1] == block)
        return block

    async def call(self, path: str, body: bytes, metadata: tuple[tuple[str, str], ...] = (),
                   timeout: float = 10.0) -> tuple[float, int]:
        """One gRPC call; returns (seconds to the first response message, messages received)."""
        if self.closed is not None:
            raise ConnectionError(f"connection unusable: {self.closed}")
        data = grpc_message(body)
        while self.send_window < len(data):
            self.window_open.clear()
            await asyncio.wait_for(self.window_open.wait(), timeout)
            if self.closed is not None:
                raise ConnectionError(f"connection unusable: {self.closed}")
        self.send_window -= len(data)
        sid = self.next_sid
        self.next_sid += 2
        st = _Stream(sid=sid, t0=time.perf_counter(), done=self._loop.create_future())
        self.streams[sid] = st
        block = self._header_block(path, metadata)
        self.transport.write(frame(HEADERS, END_HEADERS, sid, block) + frame(DATA, END_STREAM, sid, data))
        timer = self._loop.call_later(timeout, self._expire, st, timeout)
        try:
            await st.done
        finally:
            timer.cancel()
        return (st.first or time.perf_counter()) - st.t0, st.msgs

    def _expire(self, st: _Stream, timeout: float) -> None:
        if self.streams.pop(st.sid, None) is None or st.done.done():
            return
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(RST_STREAM, 0, st.sid, (8).to_bytes(4, "big")))  # CANCEL
        st.done.set_exception(GrpcCallError(f"no end of call within {timeout} s ({st.msgs} messages so far)"))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(GOAWAY, 0, 0, (self.next_sid - 2 if self.next_sid > 1 else 0).to_bytes(4, "big") + bytes(4)))
            self.transport.close()


async def connect(target: str, timeout: float = 10.0) -> H2GrpcConnection:
    """Opens an h2c connection to host:port and waits for the server's SETTINGS."""
    host, _, port = target.rpartition(":")
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(loop.create_connection(lambda: H2GrpcConnection(target), host, int(port)), timeout)
    import socket

    proto.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await asyncio.wait_for(proto.ready, timeout)
    return proto
