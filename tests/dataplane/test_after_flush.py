"""A finished call's bookkeeping runs after its last frames are written, and before the next event.

Driven without sockets through the proxy's connection objects (the in-process cost harness):
the client's transport records, at the moment the response is written, whether the call was
already counted; once the read event is handled it must be.
"""
from __future__ import annotations

import asyncio

import hpack

from fastpath.bench import fastpath_python_cost as harness
from fastpath.dataplane import conn
from fastpath.h2 import frames as fr


def _one_call(loop_running: bool) -> tuple[list[tuple[float, int]], float, int]:
    proxy, down, up, down_sink, up_sink, cenc, senc = harness._setup(False)
    seen: list[tuple[float, int]] = []  # (in flight on backend 0, calls counted) at each client write
    plain_write = down_sink.write

    def write(data: bytes) -> None:
        seen.append((proxy.live.inflight[0], sum(proxy.metrics.requests.values())))
        plain_write(data)

    down_sink.write = write  # type: ignore[method-assign]
    headers = [(":method", "POST"), (":scheme", "http"), (":path", harness.PATH), (":authority", "fastpath"),
               ("content-type", "application/grpc"), ("te", "trailers")]
    down.data_received(fr.headers_frames(1, cenc.encode(headers), False) + fr.data_frame(1, harness._msg(b"m"), True))
    assert proxy.live.inflight[0] == 1.0, "the call did not reach the backend"
    reply = (fr.headers_frames(1, senc.encode([(":status", "200"), ("content-type", "application/grpc")]), False)
             + fr.data_frame(1, harness._msg(b"y" * 16))
             + fr.headers_frames(1, senc.encode([("grpc-status", "0")]), True))
    up.data_received(reply)
    return seen, proxy.live.inflight[0], sum(proxy.metrics.requests.values())


def test_call_is_counted_after_the_response_is_written_and_before_the_event_ends() -> None:
    async def run() -> tuple[list[tuple[float, int]], float, int]:
        return _one_call(True)

    seen, inflight_after, counted_after = asyncio.run(run())
    assert seen, "nothing was written to the client"
    # The response went out while the call still held its slot: the bookkeeping waited for the write.
    assert seen[-1] == (1.0, 0)
    # ...and was done by the time the read event returned: the next routing sees the slot free.
    assert (inflight_after, counted_after) == (0.0, 1)
    assert not conn._after


def test_without_an_event_loop_bookkeeping_runs_at_once() -> None:
    ran: list[int] = []
    conn.after_flush(ran.append, 7)
    assert ran == [7] and not conn._after


def test_bookkeeping_outside_a_read_event_still_runs_on_the_loop() -> None:
    async def run() -> list[int]:
        ran: list[int] = []
        conn.after_flush(ran.append, 1)  # e.g. from a timer: no flush of a read event follows
        assert ran == []
        await asyncio.sleep(0)
        return ran

    assert asyncio.run(run()) == [1]
