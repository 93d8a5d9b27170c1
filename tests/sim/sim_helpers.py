"""Helpers for the simulated-fleet tests: in-process sites on port 0, free port blocks, raw HTTP."""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator

import grpc

from fastpath.config import Backend, SimSpec
from fastpath.gen import grpc_service_pb2_grpc as pb_grpc
from fastpath.sim.site import Site

RTT = {"near": {"home": 2.0, "away": 300.0}, "far": {"home": 300.0, "away": 2.0}}


def backend(name: str = "t-site", *, models: tuple[str, ...] = ("m1", "m2"), region: str = "home",
            metrics: bool = True, **sim: float) -> Backend:
    """A simulated backend on port 0 (the OS picks free ports)."""
    return Backend(name=name, address="127.0.0.1:0", region=region, cost_per_1k_tokens=0.5,
                   power_budget_watts=5000.0, models=models,
                   metrics_url="http://127.0.0.1:0/metrics" if metrics else "",
                   sim=SimSpec(**{"slots": 4, "tokens_per_s": 200.0, "prefill_ms": 5.0, **sim}))


@asynccontextmanager
async def running_site(b: Backend | None = None, **kw: object) -> AsyncIterator[tuple[Site, pb_grpc.GRPCInferenceServiceStub]]:
    site = Site(b or backend(), RTT, **kw)  # type: ignore[arg-type]
    await site.start()
    try:
        async with grpc.aio.insecure_channel(site.address) as ch:
            yield site, pb_grpc.GRPCInferenceServiceStub(ch)
    finally:
        await site.stop(grace=None)


async def http(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, str]:
    """One HTTP/1.1 request on a fresh connection; returns (status, body)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    await w.drain()
    data = await r.read()
    w.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), payload.decode()
