"""The load client: grpc.aio in its own process, the same code for every path.

The harness keeps one `LoadClient` (a child process) for a whole run and sends
it one JSON command per measurement. For each command the child opens a fresh
channel to the target, warms up, says `ready`, waits for `go` (so the harness
can start reading the proxy's CPU exactly at the window's start), runs the
workload until the window ends, and answers with the raw figures.

Workloads: `unary` (latency of whole calls) and `stream` (server streaming of
`n` messages of `size` bytes; time to the first message, and messages/s), at
any concurrency over one HTTP/2 connection. Metadata is either repeated
(identical headers on every call) or carries a unique `x-request-id` per call;
both send the same headers, so only uniqueness differs.
"""
from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from . import procs

READY = "ready"
CLIENTS = ("h2", "grpcio")
GO = "go"


@dataclass(frozen=True)
class Workload:
    target: str               # host:port
    kind: str                 # "unary" or "stream"
    concurrency: int = 1
    duration_s: float = 1.0   # measured window
    warmup_s: float = 0.3
    n: int = 50               # messages per streaming call
    size: int = 128           # bytes per response message
    unique_ids: bool = False  # a unique x-request-id per call
    client: str = "h2"        # "h2" (lean HTTP/2 client, see h2_client) or "grpcio" (grpc.aio)
    extra_metadata: tuple[tuple[str, str], ...] = ()  # sent on every call (e.g. a path's x-fastpath-session)
    connections: int = 1      # h2 client: calls spread round-robin over this many connections (proxy workers)

    def validate(self) -> None:
        if self.client not in CLIENTS:
            raise ValueError(f"workload client {self.client!r}: expected one of {list(CLIENTS)}")
        if self.kind not in ("unary", "stream"):
            raise ValueError(f"workload kind {self.kind!r}: expected 'unary' or 'stream'")
        if self.concurrency < 1 or self.duration_s <= 0 or self.warmup_s < 0 or self.n < 1 or self.size < 0:
            raise ValueError(f"workload {self}: need concurrency >= 1, duration_s > 0, warmup_s >= 0, n >= 1, size >= 0")


# ---------------------------------------------------------------- child side

class _Metadata:
    """Headers per call: fixed, or fixed plus a unique request id of the same length."""

    def __init__(self, unique: bool, extra: tuple[tuple[str, str], ...] = ()):
        self.unique = unique
        self.prefix = os.urandom(8).hex()
        self.count = 0
        self.extra = tuple((str(k), str(v)) for k, v in extra)
        self.fixed = (("x-fastpath-model", "bench"), *self.extra, ("x-request-id", self.prefix + "0" * 16))

    def next(self) -> tuple[tuple[str, str], ...]:
        if not self.unique:
            return self.fixed
        self.count += 1
        return (("x-fastpath-model", "bench"), *self.extra, ("x-request-id", f"{self.prefix}{self.count:016x}"))


class _Caller:
    """One connection to the target and a way to make one call on it, for either client."""

    async def open(self, w: Workload) -> None: ...
    async def call(self, body: bytes, md: tuple, timeout: float) -> tuple[float, int]: ...
    async def close(self) -> None: ...


class _H2Caller(_Caller):
    async def open(self, w: Workload) -> None:
        from . import h2_client
        from .backend import STREAM, UNARY

        self.conns = [await h2_client.connect(w.target) for _ in range(max(1, w.connections))]
        self.conn = self.conns[0]
        self.next = 0
        self.path = STREAM if w.kind == "stream" else UNARY

    async def call(self, body: bytes, md: tuple, timeout: float) -> tuple[float, int]:
        if len(self.conns) == 1:
            return await self.conn.call(self.path, body, md, timeout)
        self.next = (self.next + 1) % len(self.conns)
        return await self.conns[self.next].call(self.path, body, md, timeout)

    async def close(self) -> None:
        for c in self.conns:
            c.close()


class _GrpcioCaller(_Caller):
    async def open(self, w: Workload) -> None:
        import grpc

        from .backend import STREAM, UNARY

        self.ch = grpc.aio.insecure_channel(w.target, options=[("grpc.use_local_subchannel_pool", 1)])
        try:
            await asyncio.wait_for(self.ch.channel_ready(), 10)
        except asyncio.TimeoutError:
            raise ConnectionError(f"cannot connect to {w.target} within 10 s") from None
        self.stream = w.kind == "stream"
        self.method = self.ch.unary_stream(STREAM) if self.stream else self.ch.unary_unary(UNARY)

    async def call(self, body: bytes, md: tuple, timeout: float) -> tuple[float, int]:
        t0 = time.perf_counter()
        if not self.stream:
            await self.method(body, metadata=md, timeout=timeout)
            return time.perf_counter() - t0, 1
        got, first = 0, 0.0
        async for _ in self.method(body, metadata=md, timeout=timeout):
            if got == 0:
                first = time.perf_counter() - t0
            got += 1
        return first, got

    async def close(self) -> None:
        await self.ch.close()


async def _run_workload(w: Workload, wait_go: Callable[[], Any] | None) -> dict[str, Any]:
    from .backend import encode_request

    body = encode_request(w.n if w.kind == "stream" else 1, w.size)
    expect = w.n if w.kind == "stream" else 1
    md = _Metadata(w.unique_ids, w.extra_metadata)
    caller: _Caller = _H2Caller() if w.client == "h2" else _GrpcioCaller()
    await caller.open(w)
    state: dict[str, Any] = {"calls": 0, "messages": 0, "errors": 0, "first_error": "", "lat": []}

    async def one_call(record: bool) -> None:
        t0 = time.perf_counter()
        try:
            first, got = await caller.call(body, md.next(), 10.0)
            total = time.perf_counter() - t0
            if got != expect:
                raise RuntimeError(f"call ended after {got} of {expect} messages")
        except Exception as e:
            if record:
                state["errors"] += 1
                if not state["first_error"]:
                    state["first_error"] = f"{type(e).__name__}: {str(e)[:300]}"
            await asyncio.sleep(0.001)  # a failing target must not turn the loop into a busy spin
            return
        if record:
            state["calls"] += 1
            state["messages"] += got
            state["lat"].append(total if w.kind == "unary" else first)

    async def worker(until: float, record: bool) -> None:
        while time.perf_counter() < until:
            await one_call(record)

    try:
        # Warm up (connections, proxy pools, caches) without recording.
        warm_until = time.perf_counter() + w.warmup_s
        await asyncio.gather(*(worker(warm_until, False) for _ in range(w.concurrency)))
        if wait_go is not None:
            await wait_go()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(t0 + w.duration_s, True) for _ in range(w.concurrency)))
        elapsed = time.perf_counter() - t0
        client_cpu = time.process_time() - cpu0
    finally:
        await caller.close()
    return {
        "calls": state["calls"],
        "messages": state["messages"],
        "errors": state["errors"],
        "first_error": state["first_error"],
        "elapsed_s": elapsed,
        "client_cpu_s": client_cpu,
        "latencies_us": [round(x * 1e6, 1) for x in state["lat"]],
    }


def _child_main() -> int:
    """Reads workloads (one JSON per line) from stdin; answers ready / result lines on stdout."""
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    stdin = sys.stdin

    async def wait_go() -> None:
        print(json.dumps({"event": READY}), flush=True)
        line = await loop.run_in_executor(None, stdin.readline)
        if line.strip() != GO:
            raise SystemExit(0)

    for line in stdin:
        if not line.strip():
            continue
        try:
            w = Workload(**json.loads(line))
            w.validate()
            result = loop.run_until_complete(_run_workload(w, wait_go))
            print(json.dumps({"event": "result", **result}), flush=True)
        except SystemExit:
            return 0
        except Exception as e:
            print(json.dumps({"event": "error", "error": f"{type(e).__name__}: {e}"}), flush=True)
    return 0


# ---------------------------------------------------------------- parent side

class LoadError(RuntimeError):
    """The load client failed a workload; the message carries its reason."""


class LoadClient:
    """The harness's handle on the load-client process."""

    def __init__(self, log_path=None):
        self.proc = procs.spawn(procs.python_module_argv("fastpath.bench.load"), log_path=log_path,
                                stdout_pipe=True, stdin_pipe=True)
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_json(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LoadError(f"load client silent for {timeout_s:.0f} s")
            r, _, _ = select.select([fd], [], [], min(left, 0.5))
            if r:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise LoadError(f"load client exited (code {self.proc.wait()})")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def _send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def run(self, w: Workload, on_start: Callable[[], None] | None = None,
            on_end: Callable[[], None] | None = None) -> dict[str, Any]:
        """Runs one workload; on_start/on_end are called right at the measured window's edges."""
        w.validate()
        self._send(json.dumps(asdict(w)))
        budget = w.warmup_s + w.duration_s + 30
        msg = self._read_json(budget)
        if msg.get("event") == "error":
            raise LoadError(msg["error"])
        if msg.get("event") != READY:
            raise LoadError(f"load client said {msg!r}, expected ready")
        if on_start:
            on_start()
        self._send(GO)
        msg = self._read_json(budget)
        if on_end:
            on_end()
        if msg.get("event") == "error":
            raise LoadError(msg["error"])
        return msg

    def close(self) -> None:
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            procs.stop(self.proc)


if __name__ == "__main__":
    sys.exit(_child_main())
