"""Known HTTP/2 attacks against the proxy: each is answered as the RFC says, and others carry on.

Rapid reset (CVE-2023-44487), CONTINUATION flood (CVE-2024-27316), HPACK
bomb, SETTINGS/PING floods, empty-DATA floods, oversized frames, too many
streams, a bad preface, slowloris.
"""
import struct
import time

import pytest

from fastpath.dataplane.limits import Limits
from fastpath.h2 import frames as fr

from .conftest import unary
from .rawh2 import RawH2


def goaway_of(frames):
    for t, f, s, p in frames:
        if t == fr.GOAWAY:
            return fr.parse_goaway(p)
    return None


def others_still_served(harness):
    stub = unary(harness.channel())
    for i in range(5):
        assert stub(b"%d" % i, timeout=5) == b"a:%d" % i


def wait_goaway(c, timeout=5.0):
    frames = c.read_until(lambda fs: goaway_of(fs) is not None, timeout)
    return goaway_of(frames)


def test_rapid_reset_gets_enhance_your_calm(harness):
    proxy = harness.simple("a", limits=Limits(resets_per_s=50, reset_burst=100))
    c = RawH2(harness.address)
    burst = b""
    for i in range(300):
        sid = 1 + 2 * i
        burst += fr.headers_frames(sid, c.enc.encode([(":method", "POST"), (":scheme", "http"),
                                                      (":path", "/test.Echo/Unary"), (":authority", "x")]), False)
        burst += fr.rst_stream_frame(sid, fr.CANCEL)
    c.send(burst)
    last, code, debug = wait_goaway(c)
    assert code == fr.ENHANCE_YOUR_CALM and b"rapid reset" in debug
    assert proxy.metrics.limits_hit["too many stream resets"] >= 1
    others_still_served(harness)


def test_continuation_flood_is_cut_off(harness):
    harness.simple("a")
    c = RawH2(harness.address)
    c.send(fr.frame_header(100, fr.HEADERS, 0, 1) + b"\x00" * 100)
    c.send(b"".join(fr.frame_header(16000, fr.CONTINUATION, 0, 1) + b"\x00" * 16000 for _ in range(10)))
    last, code, debug = wait_goaway(c)
    assert code == fr.ENHANCE_YOUR_CALM and b"CONTINUATION" in debug
    others_still_served(harness)


def test_hpack_bomb_is_refused(harness):
    """One small header indexed once, then referenced thousands of times: the decoded list is capped."""
    harness.simple("a")
    c = RawH2(harness.address)
    big = ("x-bomb", "v" * 4000)
    first = c.enc.encode([(":method", "POST"), (":path", "/test.Echo/Unary"), big])
    c.send(fr.headers_frames(1, first, True))
    index = b"\xbe"  # dynamic table index 62: the bomb just inserted
    c.send(fr.headers_frames(3, c.enc.encode([(":method", "POST")]) + index * 3000, True))
    last, code, debug = wait_goaway(c)
    assert code == fr.COMPRESSION_ERROR and b"header list" in debug
    others_still_served(harness)


@pytest.mark.parametrize("flood", ["ping", "settings", "empty_data", "priority"])
def test_control_frame_floods_get_enhance_your_calm(harness, flood):
    harness.simple("a", limits=Limits(control_frames_per_s=100, control_burst=200))
    c = RawH2(harness.address)
    if flood == "empty_data":
        c.headers("/test.Echo/ClientStream")  # stream 1, for the empty DATA frames below
    frame = {
        "ping": fr.ping_frame(b"12345678"),
        "settings": fr.settings_frame({fr.SETTINGS_MAX_FRAME_SIZE: 16384}),
        "empty_data": fr.data_frame(1, b""),
        "priority": fr.frame_header(5, fr.PRIORITY, 0, 1) + b"\x00\x00\x00\x00\x10",
    }[flood]
    c.send(frame * 1000)
    last, code, debug = wait_goaway(c)
    assert code == fr.ENHANCE_YOUR_CALM
    others_still_served(harness)


def test_oversized_frame_is_frame_size_error(harness):
    harness.simple("a")
    c = RawH2(harness.address)
    c.send(fr.frame_header(20000, fr.DATA, 0, 1) + b"\x00" * 20000)
    last, code, debug = wait_goaway(c)
    assert code == fr.FRAME_SIZE_ERROR
    others_still_served(harness)


def test_streams_beyond_the_limit_are_refused(harness):
    harness.simple("a", limits=Limits(max_concurrent_streams=4))
    c = RawH2(harness.address)
    sids = [c.headers("/test.Echo/ClientStream") for _ in range(6)]
    frames = c.read_until(lambda fs: sum(t == fr.RST_STREAM for t, *_ in fs) >= 2)
    refused = {s for t, f, s, p in frames if t == fr.RST_STREAM and fr.parse_rst_stream(p) == fr.REFUSED_STREAM}
    assert refused == set(sids[4:])
    others_still_served(harness)


def test_bad_preface_is_protocol_error(harness):
    harness.simple("a")
    c = RawH2(harness.address, preface=False)
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    last, code, debug = wait_goaway(c)
    assert code == fr.PROTOCOL_ERROR and b"preface" in debug


def test_slowloris_connection_is_closed(harness):
    proxy = harness.simple("a", limits=Limits(header_timeout_s=0.5))
    c = RawH2(harness.address)
    c.send(fr.frame_header(10, fr.HEADERS, 0, 1) + b"\x00" * 10)  # a header block never finished
    last, code, debug = wait_goaway(c, timeout=5)
    assert code == fr.NO_ERROR and b"within 0.5 s" in debug
    assert proxy.metrics.limits_hit["header_timeout"] >= 1
    others_still_served(harness)


def test_idle_connection_is_closed(harness):
    proxy = harness.simple("a", limits=Limits(idle_timeout_s=0.6, header_timeout_s=0.3))
    stub = unary(harness.channel())
    assert stub(b"x", timeout=5) == b"a:x"
    c = RawH2(harness.address)
    last, code, debug = wait_goaway(c, timeout=5)
    assert code == fr.NO_ERROR
    assert proxy.metrics.limits_hit["header_timeout"] + proxy.metrics.limits_hit["idle_timeout"] >= 1


def test_connections_beyond_the_limit_are_closed(harness):
    proxy = harness.simple("a", limits=Limits(max_connections=2))
    keep = [RawH2(harness.address) for _ in range(2)]
    time.sleep(0.1)
    extra = RawH2(harness.address)
    assert extra.read(1.0) == [] and extra.closed
    assert proxy.metrics.limits_hit["max_connections"] >= 1
    for k in keep:
        k.close()


def test_stream_window_overflow_resets_only_that_stream(harness):
    harness.simple("a")
    c = RawH2(harness.address)
    sid = c.call("/test.Echo/ServerStream", b"3,100,gate")
    c.send(fr.window_update_frame(sid, 2**31 - 1))
    frames = c.read_until(lambda fs: any(t == fr.RST_STREAM and s == sid for t, f, s, p in fs))
    assert goaway_of(frames) is None
    others_still_served(harness)


def test_garbage_after_preface_is_answered_and_others_carry_on(harness):
    harness.simple("a")
    for junk in (b"\xff" * 64, struct.pack(">HBBBL", 0, 4, 0x4, 0, 0) + b"\x00\x01", b"\x00\x00\x08\x06\x00\x00\x00\x00\x01" + b"x" * 8):
        c = RawH2(harness.address)
        c.send(junk)
        c.read(0.5)
        c.close()
    others_still_served(harness)
