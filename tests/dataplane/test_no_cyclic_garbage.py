"""A finished call leaves nothing for the cycle collector: freed by reference counts alone.

Per-call objects caught in a reference cycle live until a young collection, which then walks
all of them; when a call left one (14 objects), collections were ~18% of the proxy's CPU per
unary call. Driven without sockets through the proxy's connection objects (the in-process cost
harness), with the collector off, so `gc.collect()` counts what the calls left behind.
"""
from __future__ import annotations

import asyncio
import gc
from collections import Counter
from collections.abc import Iterator

import pytest

from fastpath.bench import fastpath_python_cost as harness
from fastpath.h2 import frames as fr

HEADERS = [(":method", "POST"), (":scheme", "http"), (":path", harness.PATH), (":authority", "fastpath"),
           ("content-type", "application/grpc"), ("te", "trailers")]
CALLS = 50


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _response(senc, sid: int, messages: int) -> bytes:
    out = fr.headers_frames(sid, senc.encode([(":status", "200"), ("content-type", "application/grpc")]), False)
    out += fr.data_frame(sid, harness._msg(b"y" * 16)) * messages
    return out + fr.headers_frames(sid, senc.encode([("grpc-status", "0")]), True)


def _calls(ending: str) -> Counter[str]:
    """Runs CALLS calls that end the given way; returns the fastpath objects the collector then finds, by type."""
    proxy, down, up, down_sink, up_sink, cenc, senc = harness._setup(False)
    gc.collect()  # the set-up's own garbage is not the calls'
    for i in range(CALLS):
        sid = 1 + 2 * i
        headers = HEADERS + [("x-request-id", "%032x" % i)] if ending == "unique" else HEADERS
        up_sid = up.next_id
        down.data_received(fr.headers_frames(sid, cenc.encode(headers), False) + fr.data_frame(sid, harness._msg(b"m"), True))
        if up.next_id != up_sid + 2:  # the backend in cool-down after resets: the proxy answered
            assert ending == "backend_reset", f"call {i} did not reach the backend"
        elif ending == "client_reset":
            down.data_received(fr.rst_stream_frame(sid, fr.CANCEL))
        elif ending == "backend_reset":
            up.data_received(fr.rst_stream_frame(up_sid, fr.INTERNAL_ERROR))
        else:
            up.data_received(_response(senc, up_sid, 5 if ending == "stream" else 1))
        down_sink.chunks.clear()
        up_sink.chunks.clear()
    assert not down.streams and not up.streams, "calls left streams open"
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        # Only fastpath's types: what else a test run leaves (an earlier test's event loop) is not the calls'.
        return Counter(type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("fastpath"))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


@pytest.mark.parametrize("ending", ["unary", "unique", "stream", "client_reset", "backend_reset"])
def test_finished_calls_leave_no_cyclic_garbage(collector_off: None, ending: str) -> None:
    async def run() -> Counter[str]:
        return _calls(ending)

    left = asyncio.run(run())
    assert not left, f"cyclic garbage after {CALLS} calls: {dict(left)}"
