"""Backpressure is per stream: a reader that stops reading holds back only its own stream."""
import time

from fastpath.h2 import frames as fr

from .conftest import unary
from .rawh2 import RawH2


def pending_bytes(proxy) -> int:
    total = 0
    for conn in proxy.connections:
        for st in conn.streams.values():
            if st.owner is not None:
                total += st.owner.resp.pending_bytes + st.owner.req.pending_bytes
    return total


def test_slow_reader_bounds_buffering_and_others_carry_on(harness):
    proxy = harness.simple("a")
    backend = harness.backends["a"]
    slow = RawH2(harness.address)  # default 64 KiB windows, and it never sends WINDOW_UPDATE
    sid = slow.call("/test.Echo/ServerStream", b"2000,16384")  # 32 MiB on offer
    slow.read(1.0)
    time.sleep(1.0)
    buffered = harness.loop.call(lambda: pending_bytes(proxy))
    assert buffered <= proxy.limits.stream_window  # the proxy holds at most one stream window
    assert backend.sent < 8 << 20                  # and the backend was slowed down, not drained
    # Other calls on other connections, multiplexed on the same backend connection, are not held up.
    stub = unary(harness.channel())
    for i in range(20):
        assert stub(b"%d" % i, timeout=5) == b"a:%d" % i
    # Opening the window lets the stream finish, byte-exact.
    slow.send(fr.window_update_frame(sid, 40 << 20) + fr.window_update_frame(0, 40 << 20))
    got = sum(len(p) for t, f, s, p in slow.frames if t == fr.DATA and s == sid)
    t_end = time.monotonic() + 30
    done = False
    while not done and time.monotonic() < t_end:
        frames = slow.read(0.2)
        got += sum(len(p) for t, f, s, p in frames if t == fr.DATA and s == sid)
        done = any(t == fr.HEADERS and s == sid and f & fr.END_STREAM for t, f, s, p in frames)
    assert done
    assert got == 2000 * (16384 + 5)
    slow.close()


def test_small_peer_frame_size_and_window_split_data(harness):
    """DATA is split to fit the client's window; nothing is lost when windows open a few bytes at a time."""
    harness.simple("a")
    c = RawH2(harness.address, settings={fr.SETTINGS_INITIAL_WINDOW_SIZE: 1000})
    sid = c.call("/test.Echo/ServerStream", b"3,50000")
    received = bytearray()
    t_end = time.monotonic() + 20
    finished = False
    while not finished and time.monotonic() < t_end:
        for t, f, s, p in c.read(0.1):
            if t == fr.DATA and s == sid:
                assert len(p) <= 1000
                received += p
                c.send(fr.window_update_frame(sid, max(len(p), 1)) + fr.window_update_frame(0, max(len(p), 1)))
            finished |= t == fr.HEADERS and s == sid and bool(f & fr.END_STREAM)
    assert finished
    assert len(received) == 3 * (50000 + 5)
    assert received[5:13] == b"00000000"
    c.close()


def test_client_cancel_reaches_the_backend(harness):
    proxy = harness.simple("a")
    backend = harness.backends["a"]
    c = RawH2(harness.address)
    sid = c.call("/test.Echo/ServerStream", b"1000,100,gate")
    c.read_until(lambda fs: any(t == fr.DATA for t, *_ in fs))
    c.send(fr.rst_stream_frame(sid, fr.CANCEL))
    t_end = time.monotonic() + 5
    while backend.cancelled == 0 and time.monotonic() < t_end:
        time.sleep(0.05)
    assert backend.cancelled == 1
    assert harness.loop.call(lambda: sum(len(c.streams) for c in proxy.connections)) == 0
    c.close()


def test_ping_and_settings_are_answered(harness):
    harness.simple("a")
    c = RawH2(harness.address)
    c.send(fr.ping_frame(b"12345678"))
    frames = c.read_until(lambda fs: any(t == fr.PING for t, *_ in fs))
    ping = [f for f in frames if f[0] == fr.PING][0]
    assert ping[1] & fr.ACK and ping[3] == b"12345678"
    assert any(t == fr.SETTINGS and f & fr.ACK for t, f, *_ in c.frames)
    c.close()
