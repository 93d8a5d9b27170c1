"""One client's bad or failing requests never count against a backend other clients need.

Malformed requests are refused by the proxy (RST_STREAM PROTOCOL_ERROR) and
never forwarded or retried; statuses that describe the request (UNIMPLEMENTED
and the like) reach the client but do not move the backend's health.
"""
import threading
import time

import grpc

from fastpath.h2 import frames as fr

from .conftest import unary
from .rawh2 import RawH2, grpc_message

NO_METHOD = [(":scheme", "http"), (":path", "/test.Echo/Unary"), (":authority", "fastpath"),
             ("content-type", "application/grpc"), ("te", "trailers")]


def test_malformed_and_unimplemented_flood_leaves_other_clients_and_backends_alone(harness):
    proxy = harness.simple("a", "b")
    stop = threading.Event()
    flood = {"malformed": 0, "unimplemented": 0, "refused": 0}

    def refused(c: RawH2) -> int:
        return sum(1 for t, f, s, p in c.frames if t == fr.RST_STREAM and fr.parse_rst_stream(p) == fr.PROTOCOL_ERROR)

    def flooder() -> None:
        c = RawH2(harness.address)
        sid = 1
        # 250 of each at 50 per second: 5 s, or longer on a stalled machine (bounded at 20 s).
        t_cap = time.monotonic() + 20.0
        while flood["malformed"] < 250 and time.monotonic() < t_cap and not stop.is_set():
            tick = time.monotonic()
            # A request without :method (malformed, RFC 9113 §8.3.1) ...
            c.send(fr.headers_frames(sid, c.enc.encode(NO_METHOD), False) + fr.data_frame(sid, grpc_message(b"x"), True))
            flood["malformed"] += 1
            # ... and a well-formed call to a method no backend implements.
            c.headers("/test.Echo/NoSuchMethod", sid=sid + 2)
            c.send(fr.data_frame(sid + 2, grpc_message(b"x"), end_stream=True))
            flood["unimplemented"] += 1
            sid += 4
            c.read(0.001)
            time.sleep(max(0.0, 0.02 - (time.monotonic() - tick)))  # 50 of each per second
        t_end = time.monotonic() + 5.0  # the last refusals may still be on their way
        while refused(c) < flood["malformed"] and time.monotonic() < t_end:
            c.read(0.1)
        flood["refused"] = refused(c)

    th = threading.Thread(target=flooder)
    th.start()
    stub = unary(harness.channel())
    ok = total = 0
    while th.is_alive():
        total += 1
        try:
            if stub(b"%d" % total, timeout=5).endswith(b":%d" % total):
                ok += 1
        except grpc.RpcError:
            pass
    th.join()
    assert flood["malformed"] == 250 and flood["unimplemented"] == 250, flood
    assert flood["refused"] == flood["malformed"], flood  # every malformed request refused by the proxy
    assert total >= 50 and ok / total >= 0.99, (ok, total)
    cooling = harness.loop.call(lambda: [proxy.live.is_cooling(i) for i in range(2)])
    assert cooling == [False, False]
    # The backends never saw a malformed request: only the unimplemented calls and ours reached them.
    assert harness.loop.call(lambda: proxy.malformed) == flood["malformed"]


def test_unimplemented_answers_do_not_cool_a_backend_down(harness):
    proxy = harness.simple("a")
    bad = unary(harness.channel(), "NoSuchMethod")
    for i in range(20):
        try:
            bad(b"x", timeout=5)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNIMPLEMENTED
    assert not harness.loop.call(lambda: proxy.live.is_cooling(0))
    assert unary(harness.channel())(b"ok", timeout=5) == b"a:ok"


def test_malformed_request_is_refused_and_never_reaches_a_backend(harness):
    harness.simple("a")
    before = harness.backends["a"].calls
    c = RawH2(harness.address)
    c.send(fr.headers_frames(1, c.enc.encode(NO_METHOD + [("Upper-Case", "1")]), True))
    frames = c.read_until(lambda fs: any(t == fr.RST_STREAM for t, *_ in fs))
    rst = [fr.parse_rst_stream(p) for t, f, s, p in frames if t == fr.RST_STREAM and s == 1]
    assert rst == [fr.PROTOCOL_ERROR]
    time.sleep(0.2)
    assert harness.backends["a"].calls == before
