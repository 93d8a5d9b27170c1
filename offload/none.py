"""The `none` driver: every flow stays on the Python relay.

It is the default where BPF is not allowed, and the fallback when another
driver cannot start. It still records what it was offered, so the controller
can list sessions the same way whatever driver runs.
"""
from __future__ import annotations

import socket
import threading
import time

from fastpath.offload.steering import Flow, FlowStats, Installed, SteeringTable, addr_of


class NoneDriver(SteeringTable):
    """Keeps every flow in Python; install() never takes the sockets."""

    name = "none"
    path = "python"

    def __init__(self, reason: str = "offload driver is none: flows stay on the Python relay") -> None:
        self.reason = reason
        self._flows: dict[str, Flow] = {}
        self._lock = threading.Lock()

    def install(self, session: str, client_sock: socket.socket, backend_sock: socket.socket) -> Installed:
        try:
            flow = Flow(session, addr_of(client_sock), addr_of(backend_sock), "python", FlowStats(), time.monotonic())
        except OSError:
            flow = None
        if flow is not None:
            with self._lock:
                self._flows[session] = flow
        return Installed(session, "python", self.reason)

    def remove(self, session: str) -> bool:
        with self._lock:
            return self._flows.pop(session, None) is not None

    def list(self) -> list[Flow]:
        with self._lock:
            return list(self._flows.values())

    def close(self) -> None:
        with self._lock:
            self._flows.clear()
