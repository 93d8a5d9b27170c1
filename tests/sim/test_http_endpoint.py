"""The metrics/fault HTTP endpoint reads requests robustly: garbage gets a 4xx or a close, never a dead server."""
from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastpath.sim.http_endpoint import HttpEndpoint


async def handler(method: str, path: str, query: str, body: bytes) -> tuple[int, str, bytes]:
    if path == "/echo":
        return 200, "text/plain", f"{method} {query} ".encode() + body
    return 404, "text/plain", b"no\n"


@pytest.fixture(scope="module")
def endpoint():
    loop = asyncio.new_event_loop()
    ep = HttpEndpoint("127.0.0.1", 0, handler)
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(ep.start())
        started.set()
        loop.run_forever()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert started.wait(10)
    yield ep
    asyncio.run_coroutine_threadsafe(ep.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)
    loop.close()


def exchange(port: int, data: bytes, timeout: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out


def test_post_body_and_query_reach_the_handler(endpoint):
    body = b"mode=hang"
    reply = exchange(endpoint.port, b"POST /echo?x=1 HTTP/1.1\r\nContent-Length: 9\r\nConnection: close\r\n\r\n" + body)
    assert reply.startswith(b"HTTP/1.1 200 OK") and reply.endswith(b"POST x=1 mode=hang")


def test_pipelined_keep_alive_requests_are_answered_in_order(endpoint):
    reqs = b"".join(f"GET /echo?n={i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(3))
    reply = exchange(endpoint.port, reqs + b"GET /echo?n=last HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert reply.count(b"HTTP/1.1 200 OK") == 4
    assert reply.index(b"n=0") < reply.index(b"n=1") < reply.index(b"n=2") < reply.index(b"n=last")


@pytest.mark.parametrize("raw, status", [
    (b"NONSENSE\r\n\r\n", b"400"),
    (b"GET /echo HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
    (b"POST /echo HTTP/1.1\r\nContent-Length: -3\r\n\r\n", b"400"),
    (b"POST /echo HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", b"413"),
    (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"400"),
    (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n", b"413"),
])
def test_malformed_requests_get_a_reason(endpoint, raw, status):
    reply = exchange(endpoint.port, raw)
    assert reply.split(b" ")[1] == status


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(max_size=300),
    st.builds(lambda m, p, h, b: m + b" " + p + b" HTTP/1.1\r\n" + h + b"\r\n\r\n" + b,
              st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"get"]), st.binary(max_size=30),
              st.binary(max_size=80), st.binary(max_size=40)),
))
def test_any_bytes_leave_the_server_serving(endpoint, raw):
    reply = exchange(endpoint.port, raw, timeout=1.0)
    if reply:
        assert reply.startswith(b"HTTP/1.1 ")
    ok = exchange(endpoint.port, b"GET /echo HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 OK")
