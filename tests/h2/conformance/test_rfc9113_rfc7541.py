"""Every MUST of RFC 9113 §3–§8 and RFC 7541 that binds a server or an intermediary: one case per rule.

Each case runs against the live proxy over a real socket with a raw client
(`RawH2`, header blocks from the reference `hpack` encoder or written by
hand), and names the section it checks. The list covers h2spec's server
cases (renumbered from RFC 7540 to RFC 9113) and the intermediary rules of
§8.2 (validate what is forwarded). The count is in README.md.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Callable

import pytest

from dataplane.rawh2 import RawH2, grpc_message
from fastpath.dataplane.downstream import SNIFF_TIMEOUT_S
from fastpath.h2 import frames as fr

from .conftest import MAX_STREAMS

UNARY = "/test.Echo/Unary"
CLIENT_STREAM = "/test.Echo/ClientStream"
REQ = [(":method", "POST"), (":scheme", "http"), (":path", UNARY), (":authority", "fastpath"),
       ("content-type", "application/grpc"), ("te", "trailers")]


# -- what the proxy must answer ------------------------------------------------------------
def goaway(c: RawH2, timeout: float = 5.0) -> int | None:
    """The GOAWAY error code the proxy sent (None if it closed without one)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for t, f, s, p in c.read(0.1):
            if t == fr.GOAWAY:
                return fr.parse_goaway(p)[1]
        if getattr(c, "closed", False):
            return None
    raise AssertionError("no GOAWAY and the connection stayed open")


def rst(c: RawH2, sid: int, timeout: float = 5.0) -> int:
    frames = c.read_until(lambda fs: any(t in (fr.RST_STREAM, fr.GOAWAY) and (s == sid or t == fr.GOAWAY)
                                         for t, f, s, p in fs), timeout)
    for t, f, s, p in frames:
        if t == fr.RST_STREAM and s == sid:
            return fr.parse_rst_stream(p)
        if t == fr.GOAWAY:
            return -fr.parse_goaway(p)[1] - 1  # a connection error where a stream error was due
    raise AssertionError("unreachable")


def alive(c: RawH2) -> bool:
    """The connection still works: a PING is answered and no GOAWAY came."""
    c.send(fr.ping_frame(b"conform!"))
    frames = c.read_until(lambda fs: any(t == fr.PING and f & fr.ACK and p == b"conform!" or t == fr.GOAWAY
                                         for t, f, s, p in fs))
    return not any(t == fr.GOAWAY for t, f, s, p in frames)


def response(c: RawH2, sid: int, timeout: float = 5.0) -> list:
    """Frames of `sid` up to its END_STREAM."""
    frames = c.read_until(lambda fs: any(s == sid and f & fr.END_STREAM and t in (fr.HEADERS, fr.DATA)
                                         for t, f, s, p in fs), timeout)
    return [x for x in frames if x[2] == sid]


def block(c: RawH2, headers=REQ) -> bytes:
    return c.enc.encode(headers)


def call(c: RawH2, sid: int, body: bytes = b"hi") -> None:
    c.send(fr.headers_frames(sid, block(c), False) + fr.data_frame(sid, grpc_message(body), True))


def open_stream(c: RawH2, sid: int) -> None:
    """A client-streaming call left open (half-open on our side)."""
    c.send(fr.headers_frames(sid, block(c, REQ[:2] + [(":path", CLIENT_STREAM)] + REQ[3:]), False))


def raw(length: int, ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    return fr.frame_header(length, ftype, flags, sid) + payload


@dataclass
class Case:
    section: str
    rule: str
    run: Callable[[RawH2], None]
    silent: bool = False  # run against the proxy whose backend never answers


CASES: list[Case] = []


def case(section: str, rule: str, silent: bool = False):
    def add(fn: Callable[[RawH2], None]) -> Callable[[RawH2], None]:
        CASES.append(Case(section, rule, fn, silent))
        return fn
    return add


def conn_error(code: int, *frames: bytes, setup: Callable[[RawH2], None] | None = None) -> Callable[[RawH2], None]:
    def run(c: RawH2) -> None:
        if setup:
            setup(c)
        c.send(b"".join(frames))
        assert goaway(c) == code
    return run


def stream_error(sid: int, code: int, *frames: bytes, setup: Callable[[RawH2], None] | None = None,
                 conn_ok: bool = False) -> Callable[[RawH2], None]:
    def run(c: RawH2) -> None:
        if setup:
            setup(c)
        c.send(b"".join(frames))
        got = rst(c, sid)
        assert got == code or (conn_ok and got == -code - 1), (got, code)
        if got == code:
            assert alive(c)
    return run


# -- §3 Starting HTTP/2 ----------------------------------------------------------------------
@case("RFC 9113 §3.4", "the server connection preface (SETTINGS) is the first frame the server sends")
def _(c):
    frames = c.read_until(lambda fs: len(fs) > 0)
    assert frames[0][0] == fr.SETTINGS and not frames[0][1] & fr.ACK


@case("RFC 9113 §3.4", "an invalid connection preface is a connection error PROTOCOL_ERROR")
def _(c):
    d = RawH2(c.sock.getpeername()[0] + ":" + str(c.sock.getpeername()[1]), preface=False)
    d.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + fr.settings_frame({}))
    assert goaway(d) == fr.PROTOCOL_ERROR


@case("RFC 9113 §3.4", "the first frame after the preface must be SETTINGS (PROTOCOL_ERROR otherwise)")
def _(c):
    d = RawH2(c.sock.getpeername()[0] + ":" + str(c.sock.getpeername()[1]), preface=False)
    d.send(fr.PREFACE + fr.ping_frame(b"12345678"))
    assert goaway(d) == fr.PROTOCOL_ERROR


@case("RFC 9113 §3.4, §6.5.3", "the client's SETTINGS is ACKed at once, before any request")
def _(c):
    t0 = time.monotonic()
    frames = c.read_until(lambda fs: any(t == fr.SETTINGS and f & fr.ACK for t, f, s, p in fs), 2.0)
    assert time.monotonic() - t0 < SNIFF_TIMEOUT_S  # not held until a first request or a timer
    assert not any(t == fr.HEADERS for t, f, s, p in frames)


# -- §4 Frames ---------------------------------------------------------------------------------
@case("RFC 9113 §4.1", "a frame of unknown type is ignored")
def _(c):
    c.send(raw(4, 0xFA, 0, 0, b"abcd"))
    assert alive(c)


@case("RFC 9113 §4.1", "undefined flags are ignored")
def _(c):
    c.send(raw(8, fr.PING, 0x16, 0, b"flags!!!"))
    frames = c.read_until(lambda fs: any(t == fr.PING for t, f, s, p in fs))
    assert any(t == fr.PING and f == fr.ACK and p == b"flags!!!" for t, f, s, p in frames)


@case("RFC 9113 §4.1", "the reserved bit of the stream identifier is ignored")
def _(c):
    h = fr.headers_frames(1, block(c), False)
    c.send(h[:5] + (0x80000001).to_bytes(4, "big") + h[9:] + fr.data_frame(1, grpc_message(b"r"), True))
    frames = response(c, 1)
    assert any(t == fr.DATA and p.endswith(b"a:r") for t, f, s, p in frames)


@case("RFC 9113 §4.2", "DATA frames of 2^14 octets are accepted")
def _(c):
    body = b"x" * (16384 - 5)
    c.send(fr.headers_frames(1, block(c), False) + fr.data_frame(1, grpc_message(body), True))
    frames = response(c, 1)
    assert sum(len(p) for t, f, s, p in frames if t == fr.DATA) == 5 + 2 + len(body)


@case("RFC 9113 §4.2", "a DATA frame larger than SETTINGS_MAX_FRAME_SIZE is FRAME_SIZE_ERROR")
def _(c):
    open_stream(c, 1)
    c.send(raw(16385, fr.DATA, 0, 1, b"x" * 16385))
    assert goaway(c) == fr.FRAME_SIZE_ERROR


@case("RFC 9113 §4.2", "a HEADERS frame larger than SETTINGS_MAX_FRAME_SIZE is a connection error FRAME_SIZE_ERROR")
def _(c):
    c.send(raw(16385, fr.HEADERS, fr.END_HEADERS, 1, b"\x00" * 16385))
    assert goaway(c) == fr.FRAME_SIZE_ERROR


@case("RFC 9113 §4.3", "a header block that cannot be decoded is a connection error COMPRESSION_ERROR")
def _(c):
    c.send(raw(2, fr.HEADERS, fr.END_HEADERS | fr.END_STREAM, 1, b"\x7f\xff"))
    assert goaway(c) == fr.COMPRESSION_ERROR


@case("RFC 9113 §4.3", "a PRIORITY frame inside a header block is a connection error PROTOCOL_ERROR")
def _(c):
    b = block(c)
    c.send(raw(len(b) - 1, fr.HEADERS, 0, 1, b[:-1]) + raw(5, fr.PRIORITY, 0, 1, b"\x00\x00\x00\x00\x10"))
    assert goaway(c) == fr.PROTOCOL_ERROR


@case("RFC 9113 §4.3", "HEADERS to another stream inside a header block is a connection error PROTOCOL_ERROR")
def _(c):
    b = block(c)
    c.send(raw(len(b) - 1, fr.HEADERS, 0, 1, b[:-1]) + fr.headers_frames(3, b, True))
    assert goaway(c) == fr.PROTOCOL_ERROR


# -- §5.1 Stream states ------------------------------------------------------------------------
CASES += [
    Case("RFC 9113 §5.1", "idle: DATA is a connection error PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, fr.data_frame(1, b"x"))),
    Case("RFC 9113 §5.1, §6.4", "idle: RST_STREAM is a connection error PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, fr.rst_stream_frame(1, fr.CANCEL))),
    Case("RFC 9113 §5.1, §6.9", "idle: WINDOW_UPDATE is a connection error PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, fr.window_update_frame(1, 100))),
    Case("RFC 9113 §5.1, §6.10", "idle: CONTINUATION is a connection error PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, raw(0, fr.CONTINUATION, fr.END_HEADERS, 1, b""))),
]


@case("RFC 9113 §5.1", "idle: PRIORITY is allowed")
def _(c):
    c.send(raw(5, fr.PRIORITY, 0, 9, b"\x00\x00\x00\x00\x10"))
    assert alive(c)


@case("RFC 9113 §5.1", "half-closed (remote): DATA is a stream error STREAM_CLOSED")
def _(c):
    open_stream(c, 1)
    c.send(fr.data_frame(1, b"", True) + fr.data_frame(1, b"more"))
    assert rst(c, 1) == fr.STREAM_CLOSED


@case("RFC 9113 §5.1", "half-closed (remote): HEADERS is a stream error STREAM_CLOSED")
def _(c):
    open_stream(c, 1)
    c.send(fr.data_frame(1, b"", True) + fr.headers_frames(1, block(c, [("x-late", "1")]), True))
    assert rst(c, 1) == fr.STREAM_CLOSED


@case("RFC 9113 §5.1", "half-closed (remote): CONTINUATION is a stream error STREAM_CLOSED or PROTOCOL_ERROR")
def _(c):
    open_stream(c, 1)
    c.send(fr.data_frame(1, b"", True) + raw(0, fr.CONTINUATION, fr.END_HEADERS, 1, b""))
    assert goaway(c) == fr.PROTOCOL_ERROR  # a CONTINUATION without its HEADERS breaks the connection


@case("RFC 9113 §5.1", "closed (client reset it): DATA is a stream error STREAM_CLOSED")
def _(c):
    open_stream(c, 1)
    c.send(fr.rst_stream_frame(1, fr.CANCEL) + fr.data_frame(1, b"x"))
    assert rst(c, 1) == fr.STREAM_CLOSED


@case("RFC 9113 §5.1", "closed (client reset it): HEADERS is a stream error STREAM_CLOSED")
def _(c):
    open_stream(c, 1)
    c.send(fr.rst_stream_frame(1, fr.CANCEL) + fr.headers_frames(1, block(c, [("x-late", "1")]), True))
    assert rst(c, 1) == fr.STREAM_CLOSED


@case("RFC 9113 §5.1", "closed (both ends done): DATA is STREAM_CLOSED")
def _(c):
    call(c, 1)
    response(c, 1)
    c.send(fr.data_frame(1, b"late"))
    assert rst(c, 1) in (fr.STREAM_CLOSED, -fr.STREAM_CLOSED - 1)


@case("RFC 9113 §5.1", "closed (both ends done): HEADERS is STREAM_CLOSED")
def _(c):
    call(c, 1)
    response(c, 1)
    c.send(fr.headers_frames(1, block(c, [("x-late", "1")]), True))
    assert rst(c, 1) in (fr.STREAM_CLOSED, -fr.STREAM_CLOSED - 1)


@case("RFC 9113 §5.1", "closed: WINDOW_UPDATE and RST_STREAM that cross our END_STREAM are accepted")
def _(c):
    call(c, 1)
    response(c, 1)
    c.send(fr.window_update_frame(1, 10) + fr.rst_stream_frame(1, fr.CANCEL))
    assert alive(c)


@case("RFC 9113 §5.1, §8.1", "a completed call is not followed by RST_STREAM")
def _(c):
    call(c, 1)
    frames = response(c, 1) + c.read(0.3)
    assert not any(t == fr.RST_STREAM for t, f, s, p in frames)


@case("RFC 9113 §8.1", "a response that ends before the request gets RST_STREAM(NO_ERROR) for the rest")
def _(c):
    c.send(fr.headers_frames(1, block(c, REQ[:2] + [(":path", "/test.Echo/NoSuchMethod")] + REQ[3:]), False))
    frames = c.read_until(lambda fs: any(t == fr.RST_STREAM for t, f, s, p in fs))
    codes = [fr.parse_rst_stream(p) for t, f, s, p in frames if t == fr.RST_STREAM and s == 1]
    assert codes == [fr.NO_ERROR]
    assert any(t == fr.HEADERS and f & fr.END_STREAM for t, f, s, p in frames)


# -- §5.1.1 / §5.1.2 -----------------------------------------------------------------------------
CASES += [
    Case("RFC 9113 §5.1.1", "an even-numbered stream from a client is a connection error PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, fr.headers_frames(2, b"\x83\x86\x84", True))),
]


@case("RFC 9113 §5.1.1", "a stream id smaller than one already opened is a connection error PROTOCOL_ERROR")
def _(c):
    call(c, 5)
    response(c, 5)
    c.send(fr.headers_frames(3, block(c), True))
    assert goaway(c) == fr.PROTOCOL_ERROR


@case("RFC 9113 §5.1.2", "streams beyond SETTINGS_MAX_CONCURRENT_STREAMS are refused (REFUSED_STREAM)")
def _(c):
    for k in range(MAX_STREAMS):
        open_stream(c, 1 + 2 * k)
    extra = 1 + 2 * MAX_STREAMS
    open_stream(c, extra)
    assert rst(c, extra) in (fr.REFUSED_STREAM, fr.PROTOCOL_ERROR)


@case("RFC 9113 §5.1.2", "the server advertises SETTINGS_MAX_CONCURRENT_STREAMS")
def _(c):
    frames = c.read_until(lambda fs: any(t == fr.SETTINGS and not f & fr.ACK and p for t, f, s, p in fs))
    settings = dict(kv for t, f, s, p in frames if t == fr.SETTINGS and not f & fr.ACK
                    for kv in fr.parse_settings(p))
    assert settings.get(fr.SETTINGS_MAX_CONCURRENT_STREAMS) == MAX_STREAMS


# -- §5.3 priority (§5.3.1 of RFC 7540, kept in RFC 9113 §5.3.1) --------------------------------
CASES += [
    Case("RFC 9113 §5.3.1", "HEADERS depending on its own stream is a stream error PROTOCOL_ERROR",
         stream_error(1, fr.PROTOCOL_ERROR, raw(8, fr.HEADERS, fr.END_HEADERS | fr.PRIORITY_FLAG | fr.END_STREAM, 1,
                                                b"\x00\x00\x00\x01\x10\x83\x86\x84"))),
    Case("RFC 9113 §5.3.1", "PRIORITY depending on its own stream is a stream error PROTOCOL_ERROR",
         stream_error(3, fr.PROTOCOL_ERROR, raw(5, fr.PRIORITY, 0, 3, b"\x00\x00\x00\x03\x10"))),
]


# -- §5.4 error handling ---------------------------------------------------------------------------
@case("RFC 9113 §5.4.1", "after a connection error the server sends GOAWAY and closes the TCP connection")
def _(c):
    c.send(raw(6, fr.PING, 0, 0, b"123456"))
    assert goaway(c) == fr.FRAME_SIZE_ERROR
    c.sock.settimeout(2)
    try:
        while c.sock.recv(65536):
            pass
    except (ConnectionResetError, socket.timeout) as e:
        assert not isinstance(e, socket.timeout), "connection left open after GOAWAY"


@case("RFC 9113 §5.4.1", "GOAWAY names the last stream the server processed")
def _(c):
    call(c, 1)
    response(c, 1)
    c.send(raw(6, fr.PING, 0, 0, b"123456"))
    frames = c.read_until(lambda fs: any(t == fr.GOAWAY for t, f, s, p in fs))
    last = [fr.parse_goaway(p)[0] for t, f, s, p in frames if t == fr.GOAWAY][0]
    assert last == 1


@case("RFC 9113 §5.4.2", "a stream error leaves the other streams of the connection working")
def _(c):
    open_stream(c, 1)
    c.send(fr.window_update_frame(1, 0))  # stream error PROTOCOL_ERROR on stream 1
    assert rst(c, 1) == fr.PROTOCOL_ERROR
    call(c, 3)
    assert any(t == fr.DATA for t, f, s, p in response(c, 3))


# -- §5.5 extensions --------------------------------------------------------------------------------
@case("RFC 9113 §5.5", "an unknown frame type on a stream is ignored")
def _(c):
    open_stream(c, 1)
    c.send(raw(3, 0xFB, 0xFF, 1, b"ext"))
    assert alive(c)


@case("RFC 9113 §5.5", "an unknown frame type inside a header block is a connection error PROTOCOL_ERROR")
def _(c):
    b = block(c)
    c.send(raw(len(b) - 1, fr.HEADERS, 0, 1, b[:-1]) + raw(3, 0xFB, 0, 1, b"ext"))
    assert goaway(c) == fr.PROTOCOL_ERROR


@case("RFC 9113 §5.5", "an unknown SETTINGS identifier is ignored")
def _(c):
    c.send(fr.settings_frame({0xFE: 7}))
    frames = c.read_until(lambda fs: sum(1 for t, f, s, p in fs if t == fr.SETTINGS and f & fr.ACK) >= 2)
    assert not any(t == fr.GOAWAY for t, f, s, p in frames)


# -- §6.1 DATA ---------------------------------------------------------------------------------------
CASES += [
    Case("RFC 9113 §6.1", "DATA on stream 0 is a connection error PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, fr.data_frame(0, b"x"))),
    Case("RFC 9113 §6.1", "DATA with a pad length not less than the payload is a connection error PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, raw(3, fr.DATA, fr.PADDED, 1, b"\x05ab"), setup=lambda c: open_stream(c, 1))),
]


@case("RFC 9113 §6.1", "padded DATA is accepted and the padding is not forwarded")
def _(c):
    msg = grpc_message(b"pad")
    c.send(fr.headers_frames(1, block(c), False) + raw(1 + len(msg) + 4, fr.DATA, fr.PADDED | fr.END_STREAM, 1,
                                                          b"\x04" + msg + b"\x00" * 4))
    assert any(t == fr.DATA and p.endswith(b"a:pad") for t, f, s, p in response(c, 1))


@case("RFC 9113 §6.1", "DATA on a stream not open or half-closed (local) is a stream error STREAM_CLOSED")
def _(c):
    open_stream(c, 1)
    c.send(fr.data_frame(1, b"", True) + fr.data_frame(1, b"x"))
    assert rst(c, 1) == fr.STREAM_CLOSED


# -- §6.2 HEADERS -------------------------------------------------------------------------------------
CASES += [
    Case("RFC 9113 §6.2", "HEADERS on stream 0 is a connection error PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, raw(3, fr.HEADERS, fr.END_HEADERS, 0, b"\x83\x86\x84"))),
    Case("RFC 9113 §6.2", "HEADERS with a pad length not less than the payload is a connection error PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, raw(4, fr.HEADERS, fr.END_HEADERS | fr.PADDED, 1, b"\x09\x83\x86\x84"))),
]


@case("RFC 9113 §6.2, §6.10", "a header block split over HEADERS and several CONTINUATIONs is accepted")
def _(c):
    b = block(c)
    parts = [b[:3], b[3:6], b[6:]]
    c.send(raw(len(parts[0]), fr.HEADERS, 0, 1, parts[0]) + raw(len(parts[1]), fr.CONTINUATION, 0, 1, parts[1])
           + raw(len(parts[2]), fr.CONTINUATION, fr.END_HEADERS, 1, parts[2])
           + fr.data_frame(1, grpc_message(b"cont"), True))
    assert any(t == fr.DATA and p.endswith(b"a:cont") for t, f, s, p in response(c, 1))


@case("RFC 9113 §6.2", "padded HEADERS with a priority block are accepted")
def _(c):
    b = block(c)
    payload = b"\x02" + b"\x00\x00\x00\x00\x10" + b + b"\x00\x00"
    c.send(raw(len(payload), fr.HEADERS, fr.END_HEADERS | fr.PADDED | fr.PRIORITY_FLAG, 1, payload)
           + fr.data_frame(1, grpc_message(b"prio"), True))
    assert any(t == fr.DATA and p.endswith(b"a:prio") for t, f, s, p in response(c, 1))


# -- §6.3 PRIORITY ---------------------------------------------------------------------------------------
CASES += [
    Case("RFC 9113 §6.3", "PRIORITY on stream 0 is a connection error PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, raw(5, fr.PRIORITY, 0, 0, b"\x00\x00\x00\x01\x10"))),
    Case("RFC 9113 §6.3", "PRIORITY with a length other than 5 is a stream error FRAME_SIZE_ERROR",
         stream_error(1, fr.FRAME_SIZE_ERROR, raw(4, fr.PRIORITY, 0, 1, b"\x00\x00\x00\x03"))),
]


# -- §6.4 RST_STREAM ---------------------------------------------------------------------------------------
CASES += [
    Case("RFC 9113 §6.4", "RST_STREAM on stream 0 is a connection error PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, fr.rst_stream_frame(0, fr.CANCEL))),
    Case("RFC 9113 §6.4", "RST_STREAM with a length other than 4 is a connection error FRAME_SIZE_ERROR",
         conn_error(fr.FRAME_SIZE_ERROR, raw(3, fr.RST_STREAM, 0, 1, b"\x00\x00\x08"),
                    setup=lambda c: open_stream(c, 1))),
]


@case("RFC 9113 §6.4", "after RST_STREAM from the client the server sends nothing more on the stream")
def _(c):
    open_stream(c, 1)
    c.send(fr.rst_stream_frame(1, fr.CANCEL))
    time.sleep(0.2)
    frames = c.read(0.3)
    assert not any(s == 1 for t, f, s, p in frames)
    assert alive(c)


# -- §6.5 SETTINGS ---------------------------------------------------------------------------------------
CASES += [
    Case("RFC 9113 §6.5", "SETTINGS ACK with a payload is a connection error FRAME_SIZE_ERROR",
         conn_error(fr.FRAME_SIZE_ERROR, raw(6, fr.SETTINGS, fr.ACK, 0, b"\x00\x01\x00\x00\x10\x00"))),
    Case("RFC 9113 §6.5", "SETTINGS on a stream is a connection error PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, raw(6, fr.SETTINGS, 0, 1, b"\x00\x01\x00\x00\x10\x00"))),
    Case("RFC 9113 §6.5", "SETTINGS of a length not a multiple of 6 is a connection error FRAME_SIZE_ERROR",
         conn_error(fr.FRAME_SIZE_ERROR, raw(3, fr.SETTINGS, 0, 0, b"\x00\x01\x00"))),
    Case("RFC 9113 §6.5.2", "SETTINGS_ENABLE_PUSH other than 0 or 1 is a connection error PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, fr.settings_frame({fr.SETTINGS_ENABLE_PUSH: 2}))),
    Case("RFC 9113 §6.5.2", "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1 is a connection error FLOW_CONTROL_ERROR",
         conn_error(fr.FLOW_CONTROL_ERROR, fr.settings_frame({fr.SETTINGS_INITIAL_WINDOW_SIZE: 2**31}))),
    Case("RFC 9113 §6.5.2", "SETTINGS_MAX_FRAME_SIZE below 16384 is a connection error PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, fr.settings_frame({fr.SETTINGS_MAX_FRAME_SIZE: 16383}))),
    Case("RFC 9113 §6.5.2", "SETTINGS_MAX_FRAME_SIZE above 2^24-1 is a connection error PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, fr.settings_frame({fr.SETTINGS_MAX_FRAME_SIZE: 2**24}))),
]


@case("RFC 9113 §6.5.3", "SETTINGS without ACK is answered with an empty SETTINGS ACK")
def _(c):
    c.read_until(lambda fs: any(t == fr.SETTINGS and f & fr.ACK for t, f, s, p in fs))
    c.send(fr.settings_frame({fr.SETTINGS_MAX_FRAME_SIZE: 20000}))
    frames = c.read_until(lambda fs: any(t == fr.SETTINGS and f & fr.ACK for t, f, s, p in fs))
    assert [p for t, f, s, p in frames if t == fr.SETTINGS and f & fr.ACK] == [b""]


@case("RFC 9113 §6.5.3", "values of one SETTINGS frame are processed in order")
def _(c):
    payload = (fr.SETTINGS_INITIAL_WINDOW_SIZE.to_bytes(2, "big") + (100).to_bytes(4, "big")
               + fr.SETTINGS_INITIAL_WINDOW_SIZE.to_bytes(2, "big") + (1).to_bytes(4, "big"))
    c.send(raw(12, fr.SETTINGS, 0, 0, payload))
    call(c, 1)
    frames = c.read_until(lambda fs: any(t == fr.DATA for t, f, s, p in fs))
    assert [len(p) for t, f, s, p in frames + c.read(0.2) if t == fr.DATA] == [1]


# -- §6.7 PING -------------------------------------------------------------------------------------------
CASES += [
    Case("RFC 9113 §6.7", "PING on a stream is a connection error PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, raw(8, fr.PING, 0, 1, b"12345678"))),
    Case("RFC 9113 §6.7", "PING of a length other than 8 is a connection error FRAME_SIZE_ERROR",
         conn_error(fr.FRAME_SIZE_ERROR, raw(6, fr.PING, 0, 0, b"123456"))),
]


@case("RFC 9113 §6.7", "PING is answered with PING ACK carrying the same payload, at once")
def _(c):
    t0 = time.monotonic()
    c.send(fr.ping_frame(b"pingpong"))
    frames = c.read_until(lambda fs: any(t == fr.PING and f & fr.ACK for t, f, s, p in fs), 2.0)
    assert time.monotonic() - t0 < SNIFF_TIMEOUT_S  # not held until a first request or a timer
    assert [p for t, f, s, p in frames if t == fr.PING] == [b"pingpong"]


@case("RFC 9113 §6.7", "a PING ACK is not answered")
def _(c):
    c.send(fr.ping_frame(b"ackackac", ack=True))
    assert alive(c)
    assert not any(t == fr.PING and p == b"ackackac" for t, f, s, p in c.frames)


# -- §6.8 GOAWAY -----------------------------------------------------------------------------------------
CASES += [
    Case("RFC 9113 §6.8", "GOAWAY on a stream is a connection error PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, raw(8, fr.GOAWAY, 0, 1, b"\x00" * 8))),
]


@case("RFC 9113 §6.8", "streams up to the client's GOAWAY last-stream id still complete")
def _(c):
    c.send(fr.headers_frames(1, block(c), False))
    c.send(fr.goaway_frame(1, fr.NO_ERROR))
    c.send(fr.data_frame(1, grpc_message(b"bye"), True))
    assert any(t == fr.DATA and p.endswith(b"a:bye") for t, f, s, p in response(c, 1))


# -- §6.9 WINDOW_UPDATE and flow control -----------------------------------------------------------------------
CASES += [
    Case("RFC 9113 §6.9", "a zero increment on the connection is a connection error PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, raw(4, fr.WINDOW_UPDATE, 0, 0, b"\x00\x00\x00\x00"))),
    Case("RFC 9113 §6.9", "a zero increment on a stream is a stream error PROTOCOL_ERROR",
         stream_error(1, fr.PROTOCOL_ERROR, raw(4, fr.WINDOW_UPDATE, 0, 1, b"\x00\x00\x00\x00"),
                      setup=lambda c: open_stream(c, 1))),
    Case("RFC 9113 §6.9", "WINDOW_UPDATE of a length other than 4 is a connection error FRAME_SIZE_ERROR",
         conn_error(fr.FRAME_SIZE_ERROR, raw(3, fr.WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"))),
    Case("RFC 9113 §6.9.1", "a connection window above 2^31-1 is a connection error FLOW_CONTROL_ERROR",
         conn_error(fr.FLOW_CONTROL_ERROR, fr.window_update_frame(0, 2**31 - 1) + fr.window_update_frame(0, 2**31 - 1))),
    Case("RFC 9113 §6.9.1", "a stream window above 2^31-1 is a stream error FLOW_CONTROL_ERROR",
         stream_error(1, fr.FLOW_CONTROL_ERROR, fr.window_update_frame(1, 2**31 - 1) + fr.window_update_frame(1, 2**31 - 1),
                      setup=lambda c: open_stream(c, 1))),
]


@case("RFC 9113 §6.9.1", "the server sends no more DATA than the client's stream window allows")
def _(c):
    c.send(fr.settings_frame({fr.SETTINGS_INITIAL_WINDOW_SIZE: 1}))
    call(c, 1, b"y" * 100)
    frames = c.read_until(lambda fs: any(t == fr.DATA for t, f, s, p in fs)) + c.read(0.3)
    assert [len(p) for t, f, s, p in frames if t == fr.DATA] == [1]
    c.send(fr.window_update_frame(1, 1000))
    rest = response(c, 1)
    assert sum(len(p) for t, f, s, p in rest if t == fr.DATA) == 5 + 102 - 1


@case("RFC 9113 §6.9.2", "a new SETTINGS_INITIAL_WINDOW_SIZE adjusts the windows of open streams")
def _(c):
    c.send(fr.settings_frame({fr.SETTINGS_INITIAL_WINDOW_SIZE: 1}))
    call(c, 1, b"y" * 100)
    c.read_until(lambda fs: any(t == fr.DATA for t, f, s, p in fs))
    c.send(fr.settings_frame({fr.SETTINGS_INITIAL_WINDOW_SIZE: 3}))
    frames = c.read_until(lambda fs: any(t == fr.DATA for t, f, s, p in fs)) + c.read(0.3)
    assert [len(p) for t, f, s, p in frames if t == fr.DATA] == [2]


@case("RFC 9113 §6.9.2", "a change that makes a stream window negative is tracked")
def _(c):
    c.send(fr.settings_frame({fr.SETTINGS_INITIAL_WINDOW_SIZE: 5}))
    call(c, 1, b"y" * 100)
    c.read_until(lambda fs: sum(len(p) for t, f, s, p in fs if t == fr.DATA) >= 5)
    c.send(fr.settings_frame({fr.SETTINGS_INITIAL_WINDOW_SIZE: 0}))  # window -5
    c.send(fr.window_update_frame(1, 7))                                # window 2
    frames = c.read_until(lambda fs: any(t == fr.DATA for t, f, s, p in fs)) + c.read(0.3)
    assert [len(p) for t, f, s, p in frames if t == fr.DATA] == [2]


@case("RFC 9113 §6.9.2", "an INITIAL_WINDOW_SIZE change that overflows a stream window is a connection "
                         "error FLOW_CONTROL_ERROR")
def _(c):
    open_stream(c, 1)
    c.send(fr.window_update_frame(1, 2**31 - 1 - 65535))
    c.send(fr.settings_frame({fr.SETTINGS_INITIAL_WINDOW_SIZE: 65536}))
    assert goaway(c) == fr.FLOW_CONTROL_ERROR


@case("RFC 9113 §6.9", "DATA beyond the stream window the server granted is a stream error FLOW_CONTROL_ERROR",
      silent=True)
def _(c):
    # The backend of this proxy accepts TCP but never reads: no credit comes back to the client.
    settings = dict(kv for t, f, s, p in c.read_until(lambda fs: any(t == fr.SETTINGS and p for t, f, s, p in fs))
                    if t == fr.SETTINGS and not f & fr.ACK for kv in fr.parse_settings(p))
    window = settings[fr.SETTINGS_INITIAL_WINDOW_SIZE]
    c.send(fr.window_update_frame(0, 1 << 30))
    open_stream(c, 1)
    c.send(fr.data_frame(1, b"z" * 16384) * (window // 16384 + 1))
    assert rst(c, 1) == fr.FLOW_CONTROL_ERROR


# -- §6.10 CONTINUATION ----------------------------------------------------------------------------------------
def _headers_open(c: RawH2) -> None:
    b = block(c)
    c.send(raw(len(b) - 1, fr.HEADERS, 0, 1, b[:-1]))


CASES += [
    Case("RFC 9113 §6.10", "CONTINUATION followed by a frame other than CONTINUATION is a connection error "
                           "PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, raw(0, fr.CONTINUATION, 0, 1, b""), fr.data_frame(1, b"x"),
                    setup=_headers_open)),
    Case("RFC 9113 §6.10", "CONTINUATION on stream 0 is a connection error PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, raw(0, fr.CONTINUATION, fr.END_HEADERS, 0, b""), setup=_headers_open)),
    Case("RFC 9113 §6.10", "CONTINUATION after HEADERS with END_HEADERS is a connection error PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, fr.headers_frames(1, b"\x83\x86\x84", False),
                    raw(0, fr.CONTINUATION, fr.END_HEADERS, 1, b""))),
    Case("RFC 9113 §6.10", "CONTINUATION after a CONTINUATION with END_HEADERS is a connection error PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, raw(1, fr.CONTINUATION, fr.END_HEADERS, 1, b"\x84"),
                    raw(0, fr.CONTINUATION, fr.END_HEADERS, 1, b""),
                    setup=lambda c: c.send(raw(2, fr.HEADERS, 0, 1, b"\x83\x86")))),
    Case("RFC 9113 §6.10", "CONTINUATION after DATA is a connection error PROTOCOL_ERROR",
         conn_error(fr.PROTOCOL_ERROR, fr.data_frame(1, b"x"), raw(0, fr.CONTINUATION, fr.END_HEADERS, 1, b""),
                    setup=lambda c: open_stream(c, 1))),
]


# -- §7 error codes ----------------------------------------------------------------------------------------------
@case("RFC 9113 §7", "GOAWAY with an unknown error code triggers nothing special")
def _(c):
    c.send(fr.goaway_frame(0, 0xFF))
    assert alive(c)


@case("RFC 9113 §7", "RST_STREAM with an unknown error code triggers nothing special")
def _(c):
    open_stream(c, 1)
    c.send(fr.rst_stream_frame(1, 0xFF))
    assert alive(c)


# -- §8.1 message exchange ---------------------------------------------------------------------------------------
CASES += [
    Case("RFC 9113 §8.1", "a second HEADERS without END_STREAM is a stream error PROTOCOL_ERROR",
         stream_error(1, fr.PROTOCOL_ERROR, setup=lambda c: (open_stream(c, 1), c.send(
             fr.headers_frames(1, c.enc.encode([("x-trailer", "1")]), False))))),
]


@case("RFC 9113 §8.1", "trailers with END_STREAM end the request and are forwarded")
def _(c):
    c.send(fr.headers_frames(1, block(c), False) + fr.data_frame(1, grpc_message(b"tr"))
           + fr.headers_frames(1, c.enc.encode([("x-trailer", "1")]), True))
    assert any(t == fr.DATA and p.endswith(b"a:tr") for t, f, s, p in response(c, 1))


# -- §8.1.1 malformed messages, §8.2 fields, §8.3 pseudo-headers: each refused, never forwarded --------------------
def _malformed(headers: list, body: bytes | None = None, sid: int = 1) -> Callable[[RawH2], None]:
    def run(c: RawH2) -> None:
        end = body is None
        c.send(fr.headers_frames(sid, c.enc.encode(headers), end))
        if body is not None:
            c.send(fr.data_frame(sid, body, True))
        assert rst(c, sid) == fr.PROTOCOL_ERROR
        assert alive(c)
    return run


MALFORMED = [
    ("RFC 9113 §8.2", "a field name with upper-case letters", REQ + [("X-Upper", "1")]),
    ("RFC 9113 §8.2.1", "a field name with a space", REQ + [("x bad", "1")]),
    ("RFC 9113 §8.2.1", "a field name with a control character", REQ + [("x\x01", "1")]),
    ("RFC 9113 §8.2.1", "a field value with CR", REQ + [("x-v", "a\rb")]),
    ("RFC 9113 §8.2.1", "a field value with LF", REQ + [("x-v", "a\nb")]),
    ("RFC 9113 §8.2.1", "a field value with NUL", REQ + [("x-v", "a\x00b")]),
    ("RFC 9113 §8.2.1", "a field value with leading whitespace", REQ + [("x-v", " a")]),
    ("RFC 9113 §8.2.1", "a field value with trailing whitespace", REQ + [("x-v", "a\t")]),
    ("RFC 9113 §8.2.2", "the connection field", REQ + [("connection", "keep-alive")]),
    ("RFC 9113 §8.2.2", "the keep-alive field", REQ + [("keep-alive", "300")]),
    ("RFC 9113 §8.2.2", "the proxy-connection field", REQ + [("proxy-connection", "x")]),
    ("RFC 9113 §8.2.2", "the transfer-encoding field", REQ + [("transfer-encoding", "chunked")]),
    ("RFC 9113 §8.2.2", "the upgrade field", REQ + [("upgrade", "h2c")]),
    ("RFC 9113 §8.2.2", "te with a value other than trailers", REQ[:-1] + [("te", "gzip")]),
    ("RFC 9113 §8.3", "an unknown pseudo-header", [(":foo", "bar")] + REQ),
    ("RFC 9113 §8.3", "a response pseudo-header in a request", [(":status", "200")] + REQ),
    ("RFC 9113 §8.3", "a pseudo-header after a regular field", REQ[:3] + [("x-a", "1"), (":authority", "y")]),
    ("RFC 9113 §8.3.1", "an empty :path", REQ[:2] + [(":path", "")] + REQ[3:]),
    ("RFC 9113 §8.3.1", "no :method", REQ[1:]),
    ("RFC 9113 §8.3.1", "no :scheme", REQ[:1] + REQ[2:]),
    ("RFC 9113 §8.3.1", "no :path", REQ[:2] + REQ[3:]),
    ("RFC 9113 §8.3.1", "a repeated :method", REQ[:1] + [(":method", "GET")] + REQ[1:]),
    ("RFC 9113 §8.3.1", "a repeated :scheme", REQ[:2] + [(":scheme", "https")] + REQ[2:]),
    ("RFC 9113 §8.3.1", "a repeated :path", REQ[:3] + [(":path", "/x")] + REQ[3:]),
]
for _section, _what, _headers in MALFORMED:
    CASES.append(Case(_section, f"a request with {_what} is malformed: stream error PROTOCOL_ERROR, not forwarded",
                      _malformed(_headers)))

CASES += [
    Case("RFC 9113 §8.1.1", "content-length unequal to the DATA length is a stream error PROTOCOL_ERROR",
         _malformed(REQ + [("content-length", "100")], grpc_message(b"short"))),
    Case("RFC 9113 §8.1.1", "content-length unequal to the sum of several DATA frames is a stream error PROTOCOL_ERROR",
         stream_error(1, fr.PROTOCOL_ERROR, setup=lambda c: c.send(
             fr.headers_frames(1, c.enc.encode(REQ + [("content-length", "4")]), False)
             + fr.data_frame(1, b"abc") + fr.data_frame(1, b"de", True)))),
]


@case("RFC 9113 §8.1", "pseudo-headers in trailers are a stream error PROTOCOL_ERROR")
def _(c):
    open_stream(c, 1)
    c.send(fr.headers_frames(1, c.enc.encode([(":path", "/x")]), True))
    assert rst(c, 1) == fr.PROTOCOL_ERROR


@case("RFC 9113 §8.2.2", "te: trailers is allowed")
def _(c):
    call(c, 1)
    assert any(t == fr.DATA for t, f, s, p in response(c, 1))


@case("RFC 9113 §8.4", "PUSH_PROMISE from a client is a connection error PROTOCOL_ERROR")
def _(c):
    c.send(raw(7, fr.PUSH_PROMISE, fr.END_HEADERS, 1, b"\x00\x00\x00\x02\x83\x86\x84"))
    assert goaway(c) == fr.PROTOCOL_ERROR


@case("RFC 9113 §8.4", "the server never pushes (no PUSH_PROMISE when push is enabled)")
def _(c):
    c.send(fr.settings_frame({fr.SETTINGS_ENABLE_PUSH: 1}))
    call(c, 1)
    frames = response(c, 1)
    assert not any(t == fr.PUSH_PROMISE for t, f, s, p in frames + c.frames)


# -- RFC 7541 HPACK -------------------------------------------------------------------------------------------
def _hpack(block_bytes: bytes) -> Callable[[RawH2], None]:
    return conn_error(fr.COMPRESSION_ERROR, raw(len(block_bytes), fr.HEADERS, fr.END_HEADERS | fr.END_STREAM, 1,
                                                block_bytes))


CASES += [
    Case("RFC 7541 §2.3.3", "an indexed field beyond the tables is a decoding error (COMPRESSION_ERROR)",
         _hpack(b"\x83\x86\xff\x80\x01")),
    Case("RFC 7541 §2.3.3", "a literal with a name index beyond the tables is a decoding error",
         _hpack(b"\x83\x86\x7f\x80\x01\x01a")),
    Case("RFC 7541 §4.2, §6.3", "a dynamic table size update after a field is a decoding error",
         _hpack(b"\x83\x86\x84\x20")),
    Case("RFC 7541 §5.2", "Huffman padding longer than 7 bits is a decoding error",
         _hpack(b"\x83\x86\x84\x40\x82\x1f\xff\x01a")),
    Case("RFC 7541 §5.2", "Huffman padding not made of the EOS prefix (zeros) is a decoding error",
         _hpack(b"\x83\x86\x84\x40\x81\x00\x01a")),
    Case("RFC 7541 §5.2", "a Huffman string containing EOS is a decoding error",
         _hpack(b"\x83\x86\x84\x40\x84\xff\xff\xff\xff\x01a")),
    Case("RFC 7541 §6.1", "an indexed field with index 0 is a decoding error", _hpack(b"\x83\x86\x80")),
    Case("RFC 7541 §6.3", "a table size update above SETTINGS_HEADER_TABLE_SIZE is a decoding error",
         _hpack(b"\x3f\xe2\x1f\x83\x86\x84")),
    Case("RFC 7541 §5.1", "an integer that overflows is a decoding error",
         _hpack(b"\x83\x86\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")),
    Case("RFC 7541 §5.2", "a string longer than the rest of the block is a decoding error",
         _hpack(b"\x83\x86\x84\x40\x0aabc")),
]


@case("RFC 7541 §4.2", "a table size update at the start of a block, within the limit, is accepted")
def _(c):
    b = b"\x3f\x61" + block(c)  # size update to 128, then the request
    c.send(raw(len(b), fr.HEADERS, fr.END_HEADERS, 1, b) + fr.data_frame(1, grpc_message(b"tbl"), True))
    assert any(t == fr.DATA and p.endswith(b"a:tbl") for t, f, s, p in response(c, 1))


@case("RFC 7541 §2.3.2, §4.4", "the dynamic table is kept across blocks (indexed fields reused)")
def _(c):
    for sid in (1, 3, 5):
        call(c, sid, b"dyn%d" % sid)
        assert any(t == fr.DATA and p.endswith(b"a:dyn%d" % sid) for t, f, s, p in response(c, sid))


# -- the runner ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=[f"{k:03d} {c.section} {c.rule}"[:110] for k, c in enumerate(CASES)])
def test_conformance(live_proxy, silent_proxy, case: Case):
    c = RawH2((silent_proxy if case.silent else live_proxy).address)
    try:
        case.run(c)
    finally:
        c.close()
