"""Real servers for the controller's tests: a Prometheus text endpoint and a KServe ServerReady endpoint."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc

from fastpath.config import Config, parse_config
from fastpath import launch
from fastpath.ports import free_port, free_port_block
from fastpath.gen import grpc_service_pb2, grpc_service_pb2_grpc

PY = sys.executable


def free_port_base(n: int) -> int:
    return free_port_block(n)



def make_config(backends: list[dict], control_port: int | None = None, offload_driver: str = "none",
                **control: float) -> Config:
    """A config over the given backends (name, address, metrics_url), with fast control intervals."""
    data = {
        "offload": {"driver": offload_driver},
        "control": {
            "listen": f"127.0.0.1:{control_port or free_port()}",
            "scrape_interval_ms": 20,
            "health_interval_ms": 50,
            "health_timeout_ms": 200,
            **control,
        },
        "regions": {"rtt_ms": {"us-east": {"us-east": 2.0}}},
        "backends": [
            {"region": "us-east", "cost_per_1k_tokens": 1.0, "power_budget_watts": 5000, "models": ["m"], **b}
            for b in backends
        ],
    }
    return parse_config(data, "<control test>")


class MetricsServer:
    """An HTTP/1.1 keep-alive server answering every GET with `text` (mode changes how)."""

    def __init__(self, text: str = "") -> None:
        self.text = text
        self.mode = "ok"  # ok | chunked | hang | close | 500 | http10
        self.connections = 0
        self.requests = 0
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    async def start(self, port: int = 0) -> "MetricsServer":
        self._stopped = asyncio.Event()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port or self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stops listening and closes every connection, including ones accepted a moment ago."""
        if self._server is not None:
            self._server.close()
            self._server = None
            self._stopped.set()
            await asyncio.sleep(0)  # let just-accepted connections reach _serve, which closes them
            for w in list(self._writers):
                w.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while self._server is not None:
                head = await reader.readuntil(b"\r\n\r\n")
                if self._server is None:
                    break
                assert head.startswith(b"GET /metrics HTTP/1.1\r\n"), head
                self.requests += 1
                body = self.text.encode()
                if self.mode == "hang":
                    await self._stopped.wait()
                    break
                elif self.mode == "500":
                    writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops")
                elif self.mode == "chunked":
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    for i in range(0, len(body), 7):
                        part = body[i:i + 7]
                        writer.write(b"%x;ext=1\r\n%s\r\n" % (len(part), part))
                    writer.write(b"0\r\nX-Trailer: y\r\n\r\n")
                elif self.mode == "http10":
                    writer.write(b"HTTP/1.0 200 OK\r\n\r\n" + body)
                    await writer.drain()
                    break
                else:
                    close = self.mode == "close"
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: %d\r\n%s\r\n%s"
                                 % (len(body), b"Connection: close\r\n" if close else b"", body))
                    if close:
                        await writer.drain()
                        break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


class _Ready(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, owner: "ReadyServer") -> None:
        self.owner = owner

    async def ServerReady(self, request, context):  # noqa: N802
        self.owner.probes += 1
        if self.owner.hang:
            await asyncio.sleep(3600)
        if self.owner.delay_s:
            await asyncio.sleep(self.owner.delay_s)
        return grpc_service_pb2.ServerReadyResponse(ready=self.owner.ready)


class ReadyServer:
    """A real gRPC server answering inference.GRPCInferenceService/ServerReady; restartable on its port."""

    def __init__(self) -> None:
        self.ready = True
        self.hang = False
        self.delay_s = 0.0  # answer probes this late (a busy server)
        self.probes = 0
        self.port = 0
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> "ReadyServer":
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_Ready(self), server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._server = server
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
            self._server = None


async def eventually(check, timeout_s: float = 10.0, interval_s: float = 0.02, what: str = "condition"):
    """Polls check() (sync or async) until it returns a truthy value; fails with `what` after timeout."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last: {last!r})")


def spawn_controller(config_path: Path, log_path: Path) -> subprocess.Popen:
    """`fastpath controller --config FILE` as a real child process, waiting for its listen line."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log = open(log_path, "ab")
    proc = subprocess.Popen([PY, "-m", "fastpath.cli", "controller", "--config", str(config_path)],
                            stdout=subprocess.PIPE, stderr=log, env=env)
    log.close()
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if "listening on" not in line:
        proc.kill()
        proc.wait()
        raise AssertionError(f"controller did not start: {line!r}; log: {log_path.read_text()[-2000:]}")
    return proc


def stop_process(proc: subprocess.Popen) -> None:
    launch.stop_process(proc, timeout_s=5)
    if proc.stdout:
        proc.stdout.close()
