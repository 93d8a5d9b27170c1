"""Python cost of the fast path per call and per streamed message, without sockets.

Feeds real HTTP/2 bytes (encoded by the reference `hpack` package, as a gRPC
client and server would send them) into the proxy's connection objects and
collects what they write, so the figure is the fast path's own CPU with the
kernel's share (syscalls, loopback TCP, wake-ups) left out. Deterministic
enough to compare changes on a busy machine: medians of repeated runs. The
collector is set up as the proxy sets it (`fastpath.dataplane.server`).

`--cold` writes a buffer larger than L2 before every call, so each call meets
its code and data out of cache. Under load the live proxy runs the same code
2-3 times slower than the warm figure (README, "Measured here"); neither figure
replaces the paired A/B end to end (`fastpath.bench.paired`).

    python -m fastpath.bench.fastpath_python_cost [--cold]
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import struct
import time
from typing import Any

import hpack

from fastpath.config import parse_config
from fastpath.dataplane.conn import flush_dirty
from fastpath.dataplane.downstream import DownstreamConnection
from fastpath.dataplane.proxy import Proxy
from fastpath.dataplane.server import YOUNG_GC_THRESHOLD
from fastpath.dataplane.upstream import UpstreamConnection
from fastpath.h2 import frames as fr

PATH = "/inference.GRPCInferenceService/ModelInfer"


class _Sink:
    """A transport that keeps what is written."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def take(self) -> bytes:
        out = b"".join(self.chunks)
        self.chunks.clear()
        return out

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


def _msg(payload: bytes) -> bytes:
    return b"\x00" + struct.pack(">L", len(payload)) + payload


def _setup(unique: bool) -> tuple[Proxy, DownstreamConnection, UpstreamConnection, _Sink, _Sink, hpack.Encoder, hpack.Encoder]:
    cfg = parse_config({"proxy": {"listen": "127.0.0.1:0", "metrics_listen": "", "pin_sessions": False},
                        "backends": [{"name": "b", "address": "127.0.0.1:1", "region": "r",
                                      "cost_per_1k_tokens": 1.0, "models": ["m"]}]})
    proxy = Proxy(cfg)
    down_sink, up_sink = _Sink(), _Sink()
    down = DownstreamConnection(proxy)
    down.connection_made(down_sink)  # type: ignore[arg-type]
    up = UpstreamConnection(proxy, 0)
    proxy.pool.conns[0] = [up]
    up.connection_made(up_sink)  # type: ignore[arg-type]
    big = fr.window_update_frame(0, (1 << 30) - fr.DEFAULT_WINDOW)  # as gRPC peers open their windows
    down.data_received(fr.PREFACE + fr.settings_frame({fr.SETTINGS_INITIAL_WINDOW_SIZE: 4 << 20}) + big)
    up.data_received(fr.settings_frame({fr.SETTINGS_INITIAL_WINDOW_SIZE: 4 << 20}) + big)
    flush_dirty()
    down_sink.take()
    up_sink.take()
    return proxy, down, up, down_sink, up_sink, hpack.Encoder(), hpack.Encoder()


EVICT_BYTES = 8 << 20  # larger than this machine's L2 (2 MiB over its 2 cores)


def measure_calls(n: int, unique: bool, stream_messages: int = 0, cold: bool = False) -> float:
    """µs of Python per call (unary when stream_messages == 0, else per streamed message).

    Each call is timed alone and the figure is the median (a busy machine's preemptions and the
    occasional young-generation collection fall outside it); cold: caches evicted before each
    call, outside the timed part."""
    from fastpath.gen import grpc_service_pb2 as pb

    proxy, down, up, down_sink, up_sink, cenc, senc = _setup(unique)
    req = pb.ModelInferRequest(model_name="m", id="1")
    t = req.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    t.contents.bytes_contents.append(b"x" * 100)
    body = _msg(req.SerializeToString())
    reply = _msg(b"y" * 128)
    base = [(":method", "POST"), (":scheme", "http"), (":path", PATH), (":authority", "fastpath"),
            ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "5S"),
            ("user-agent", "grpc-python/1.85"), ("x-fastpath-region", "r")]
    # Everything the peers send is encoded before the clock starts: only the proxy is timed.
    requests, responses = [], []
    resp_headers = [(":status", "200"), ("content-type", "application/grpc")]
    trailers = [("grpc-status", "0"), ("grpc-message", "")]
    for i in range(n):
        sid = 1 + 2 * i
        headers = base + [("x-request-id", "%032x" % i)] if unique else base
        requests.append(fr.headers_frames(sid, cenc.encode(headers), False) + fr.data_frame(sid, body, True))
        head = fr.headers_frames(sid, senc.encode(resp_headers), False)
        tail = fr.headers_frames(sid, senc.encode(trailers), True)
        if stream_messages:
            responses.append([head] + [fr.data_frame(sid, reply)] * stream_messages + [tail])
        else:
            responses.append([head + fr.data_frame(sid, reply) + tail])
    refill = fr.window_update_frame(0, 16 << 20)
    evict = bytearray(EVICT_BYTES) if cold else bytearray()
    ones = b"\x01" * (EVICT_BYTES // 64)
    per_call: list[float] = []
    clock = time.perf_counter
    gc.collect()
    gc.freeze()  # as the proxy does once it is set up
    threshold = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *threshold[1:])
    try:
        for i in range(n):
            if i % 1000 == 999:  # the peers keep the connection windows open
                down.data_received(refill)
                up.data_received(refill)
            if cold:
                evict[::64] = ones  # one write per cache line
            c0 = clock()
            down.data_received(requests[i])
            flush_dirty()
            up_sink.chunks.clear()
            for chunk in responses[i]:
                up.data_received(chunk)
            down_sink.chunks.clear()
            per_call.append(clock() - c0)
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()
    assert not down.streams and not up.streams, "streams left open"
    assert up.next_id == 2 * n + 1, "not every call reached the backend connection"
    return statistics.median(per_call[n // 10:]) / max(1, stream_messages) * 1e6


def measure(rounds: int = 5, n: int = 2000, cold: bool = False) -> list[dict[str, Any]]:
    rows = []
    cases = [("unary", False, 0), ("unary", True, 0), ("stream_message", False, 50)]
    for kind, unique, msgs in cases:
        samples = [measure_calls(n if not msgs else n // 10, unique, msgs, cold) for _ in range(rounds)]
        rows.append({"kind": kind, "metadata": "unique" if unique else "repeated", "caches": "cold" if cold else "warm",
                     "python_us_p50": round(statistics.median(samples), 2), "python_us_min": round(min(samples), 2)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--cold", action="store_true", help="evict the CPU caches before each call (see the module docstring)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    async def run() -> list[dict[str, Any]]:
        return measure(args.rounds, args.calls, args.cold)

    rows = asyncio.run(run())
    import fastpath

    build = f"compiled ({len(fastpath.compiled_modules())} hot modules, mypyc)" if fastpath.compiled_modules() \
        else "pure Python"
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"build: {build}")
        for r in rows:
            print(f"{r['kind']:15} {r['metadata']:9} {r['caches']:5} {r['python_us_p50']:8.2f} µs (min {r['python_us_min']:.2f})")


if __name__ == "__main__":
    main()
