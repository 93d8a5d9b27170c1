"""The benchmark backend: a real grpc.aio server that answers as cheaply as it can.

Two methods on raw bytes (no protobuf work per message, so the backend's cost
stays small and equal for every path):
  /fastpath.bench.v1.Bench/Unary   one response of `size` bytes
  /fastpath.bench.v1.Bench/Stream  `n` responses of `size` bytes, sent as fast as the client reads
The request body is a serialized KServe ModelInferRequest whose model_name is
"bench" (so a proxy that reads the model from the body routes it like an
inference call) and whose id carries the shape, e.g. "n=50,size=128".

Run alone: `python -m fastpath.bench.backend --listen 127.0.0.1:0`; it prints
`bench backend listening on HOST:PORT` when ready.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from functools import lru_cache
from typing import AsyncIterator

import grpc

from fastpath.gen import grpc_service_pb2

SERVICE = "fastpath.bench.v1.Bench"
UNARY = f"/{SERVICE}/Unary"
STREAM = f"/{SERVICE}/Stream"
MODEL = "bench"
READY_PREFIX = "bench backend listening on"
MAX_SIZE = 4 << 20
MAX_N = 1_000_000


class ShapeError(ValueError):
    """A request id that does not describe a response shape."""


def encode_request(n: int = 1, size: int = 128) -> bytes:
    """The request body for a call asking for `n` messages of `size` bytes."""
    if not 1 <= n <= MAX_N or not 0 <= size <= MAX_SIZE:
        raise ShapeError(f"n={n}, size={size}: need 1 <= n <= {MAX_N} and 0 <= size <= {MAX_SIZE}")
    return grpc_service_pb2.ModelInferRequest(model_name=MODEL, id=f"n={n},size={size}").SerializeToString()


def parse_shape(shape_id: str) -> tuple[int, int]:
    """Parses "n=50,size=128" into (50, 128)."""
    fields: dict[str, int] = {}
    for part in shape_id.split(","):
        key, sep, value = part.partition("=")
        if not sep or key not in ("n", "size") or not value.isdigit():
            raise ShapeError(f"request id {shape_id!r}: expected 'n=<count>,size=<bytes>'")
        fields[key] = int(value)
    n, size = fields.get("n", 1), fields.get("size", 128)
    if not 1 <= n <= MAX_N or not 0 <= size <= MAX_SIZE:
        raise ShapeError(f"request id {shape_id!r}: need 1 <= n <= {MAX_N} and 0 <= size <= {MAX_SIZE}")
    return n, size


@lru_cache(maxsize=256)
def _shape_of(body: bytes) -> tuple[int, int, bytes]:
    """Clients repeat the same body, so each distinct body is decoded once."""
    try:
        req = grpc_service_pb2.ModelInferRequest.FromString(body)
    except Exception:
        raise ShapeError("request body is not a ModelInferRequest") from None
    n, size = parse_shape(req.id or "n=1,size=128")
    return n, size, b"x" * size


async def _unary(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
    try:
        _, _, payload = _shape_of(body)
    except ShapeError as e:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
    return payload


async def _stream(body: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    try:
        n, _, payload = _shape_of(body)
    except ShapeError as e:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
    for _ in range(n):
        yield payload


def _handlers() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "Stream": grpc.unary_stream_rpc_method_handler(_stream),
        },
    )


async def start_server(listen: str = "127.0.0.1:0") -> tuple[grpc.aio.Server, str]:
    """Starts the backend in this event loop; returns the server and its real host:port."""
    host = listen.rpartition(":")[0] or "127.0.0.1"
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((_handlers(),))
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    return server, f"{host}:{port}"


async def _serve(listen: str) -> None:
    server, address = await start_server(listen)
    print(f"{READY_PREFIX} {address}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    try:
        await asyncio.wait_for(server.stop(0.5), 3)
    except asyncio.TimeoutError:  # never outlive a stop request, whatever the open calls do
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastpath.bench.backend", description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:0", help="host:port to listen on (port 0 = any free port)")
    args = p.parse_args(argv)
    asyncio.run(_serve(args.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
