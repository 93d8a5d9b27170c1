"""A live proxy (routed mode, real echo backend, real sockets) for the RFC 9113 / RFC 7541 cases."""
from __future__ import annotations

import socket
import threading

import pytest

from dataplane.conftest import Harness, LoopThread
from fastpath.dataplane.limits import Limits

MAX_STREAMS = 8  # advertised SETTINGS_MAX_CONCURRENT_STREAMS, small so §5.1.2 is cheap to exceed


@pytest.fixture(scope="module")
def live_proxy():
    loop = LoopThread()
    h = Harness(loop)
    h.simple("a", limits=Limits(max_concurrent_streams=MAX_STREAMS))
    yield h
    h.close()
    loop.stop()


class SilentBackend:
    """Accepts TCP connections and never reads or writes: a backend that gives no flow-control credit."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture(scope="module")
def silent_proxy():
    loop = LoopThread()
    backend = SilentBackend()
    h = Harness(loop)
    h.start_proxy([{"name": "silent", "address": f"127.0.0.1:{backend.port}", "region": "r1",
                    "cost_per_1k_tokens": 1.0, "models": ["m"]}])
    yield h
    h.close()
    backend.close()
    loop.stop()
