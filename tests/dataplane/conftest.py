"""Fixtures for the fast path: the proxy and real gRPC backends on one uvloop loop in a thread.

Tests talk to the proxy with real gRPC clients (or raw HTTP/2 sockets) from the
test thread, so the proxy's event loop is the one a user runs, and tests can
still look inside it (buffered bytes, open streams) through `LoopThread.call`.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import grpc
import pytest
import uvloop

from fastpath.config import parse_config
from fastpath.dataplane.limits import Limits
from fastpath.dataplane.proxy import Proxy


class LoopThread:
    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 20.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def go() -> None:
            try:
                fut.set_result(fn())
            except Exception as e:  # pragma: no cover - surfaced to the test
                fut.set_exception(e)

        self.loop.call_soon_threadsafe(go)
        return fut.result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _ident(x: bytes) -> bytes:
    return x


@dataclass
class EchoBackend:
    """A real grpc.aio server with all four RPC shapes over raw bytes, and knobs tests turn."""

    name: str
    loop: LoopThread
    server: Any = None
    port: int = 0
    calls: int = 0
    cancelled: int = 0
    refuse: bool = False           # answer UNAVAILABLE before any message
    die_after: int = -1            # server-stream: stop the server abruptly after N messages
    gate: asyncio.Event | None = None
    seen_metadata: list = field(default_factory=list)
    deadlines: list = field(default_factory=list)
    sent: int = 0                  # bytes handed to grpc by server-streaming calls

    async def start(self, port: int = 0) -> None:
        self.gate = asyncio.Event()
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary, _ident, _ident),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream, _ident, _ident),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream, _ident, _ident),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi, _ident, _ident),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
        self.port = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
            self.server = None

    async def _enter(self, context) -> None:
        self.calls += 1
        self.seen_metadata.append(dict(context.invocation_metadata()))
        self.deadlines.append(context.time_remaining())
        context.set_trailing_metadata((("x-backend-name", self.name),))
        if self.refuse:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "refusing")

    async def unary(self, request: bytes, context) -> bytes:
        await self._enter(context)
        return self.name.encode() + b":" + request

    async def server_stream(self, request: bytes, context):
        """Request "count,size[,gate]": count messages of size bytes; with gate, wait after the first."""
        await self._enter(context)
        parts = request.decode().split(",")
        count, size = int(parts[0]), int(parts[1])
        try:
            for i in range(count):
                if i == self.die_after:
                    asyncio.get_running_loop().create_task(self.stop())
                    await asyncio.sleep(10)
                payload = (b"%08d" % i) + b"x" * max(0, size - 8)
                self.sent += len(payload)
                yield payload
                if i == 0 and len(parts) > 2:
                    await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def client_stream(self, request_iterator, context) -> bytes:
        await self._enter(context)
        total, n = 0, 0
        async for msg in request_iterator:
            total += len(msg)
            n += 1
        return f"{n},{total}".encode()

    async def bidi(self, request_iterator, context):
        await self._enter(context)
        async for msg in request_iterator:
            yield self.name.encode() + b":" + msg


def make_config(backends: list[dict], offload: str = "none") -> Any:
    return parse_config({
        "proxy": {"listen": "127.0.0.1:0", "metrics_listen": ""},
        "offload": {"driver": offload},
        "regions": {"rtt_ms": {"near": {"r1": 1.0, "r2": 80.0}, "far": {"r1": 80.0, "r2": 1.0}}},
        "backends": backends,
    })


class Harness:
    """The proxy plus echo backends; `channel()` gives a gRPC channel to the proxy."""

    def __init__(self, loop: LoopThread) -> None:
        self.loop = loop
        self.backends: dict[str, EchoBackend] = {}
        self.proxy: Proxy | None = None
        self.address = ""
        self.channels: list[grpc.Channel] = []

    def add_backend(self, name: str) -> EchoBackend:
        b = EchoBackend(name, self.loop)
        self.loop.run(b.start())
        self.backends[name] = b
        return b

    def start_proxy(self, specs: list[dict], limits: Limits | None = None, offload: str = "none") -> Proxy:
        cfg = make_config(specs, offload)

        async def go() -> Proxy:
            proxy = Proxy(cfg, limits)
            host, port = await proxy.start()
            self.address = f"{host}:{port}"
            return proxy

        self.proxy = self.loop.run(go())
        return self.proxy

    def simple(self, *names: str, regions: tuple[str, ...] = ("r1", "r2"), limits: Limits | None = None,
               offload: str = "none") -> Proxy:
        """Backends `names` serving model m; the first is nearest to region "near"."""
        specs = []
        for k, name in enumerate(names):
            b = self.backends.get(name) or self.add_backend(name)
            specs.append({"name": name, "address": f"127.0.0.1:{b.port}", "region": regions[min(k, len(regions) - 1)],
                          "cost_per_1k_tokens": 1.0, "models": ["m"]})
        return self.start_proxy(specs, limits, offload)

    def channel(self) -> grpc.Channel:
        ch = grpc.insecure_channel(self.address, options=[("grpc.enable_retries", 0)])
        self.channels.append(ch)
        return ch

    def close(self) -> None:
        for ch in self.channels:
            ch.close()
        if self.proxy is not None:
            self.loop.run(self.proxy.drain(0.5))
            if self.proxy.offload is not None:
                self.proxy.offload.close()
        for b in self.backends.values():
            self.loop.run(b.stop())


@pytest.fixture(scope="module")
def loop_thread():
    lt = LoopThread()
    yield lt
    lt.stop()


@pytest.fixture
def harness(loop_thread):
    h = Harness(loop_thread)
    yield h
    h.close()


NEAR = (("x-fastpath-region", "near"),)


def unary(channel: grpc.Channel, method: str = "Unary"):
    return channel.unary_unary(f"/test.Echo/{method}", request_serializer=_ident, response_deserializer=_ident)


def server_stream(channel: grpc.Channel):
    return channel.unary_stream("/test.Echo/ServerStream", request_serializer=_ident, response_deserializer=_ident)


def client_stream(channel: grpc.Channel):
    return channel.stream_unary("/test.Echo/ClientStream", request_serializer=_ident, response_deserializer=_ident)


def bidi(channel: grpc.Channel):
    return channel.stream_stream("/test.Echo/Bidi", request_serializer=_ident, response_deserializer=_ident)
