"""The steering table every offload driver implements (eBPF, DPU, none).

The fast path hands a pinned session's two connected sockets to a driver;
the driver either moves that flow's bytes itself (kernel splice, DPU rule) or
says it cannot, and the flow stays on the Python relay. The controller lists
flows and reads their counters through the same interface, whatever driver is
underneath.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Self

PathName = Literal["python", "kernel", "dpu"]
Addr = tuple[str, int]


@dataclass(frozen=True)
class FlowStats:
    """Bytes and packets of one flow, per direction and per path that moved them.

    `*_to_backend` counts client -> backend, `*_to_client` the answer. The
    offload counters are what the kernel/NIC moved; `python_*` what the driver
    itself copied while handing the flow over.
    """

    bytes_to_backend: int = 0
    bytes_to_client: int = 0
    packets_to_backend: int = 0
    packets_to_client: int = 0
    python_bytes_to_backend: int = 0
    python_bytes_to_client: int = 0

    @property
    def offload_bytes(self) -> int:
        return self.bytes_to_backend + self.bytes_to_client

    @property
    def python_bytes(self) -> int:
        return self.python_bytes_to_backend + self.python_bytes_to_client


@dataclass(frozen=True)
class Flow:
    """One steered flow: which session, between which addresses, on which path."""

    session: str
    client: Addr
    backend: Addr
    path: PathName
    stats: FlowStats
    started: float  # time.monotonic() at install

    @property
    def age_s(self) -> float:
        return time.monotonic() - self.started


@dataclass
class Installed:
    """What install() did with a flow, and a way to learn when it ended.

    path == "python" means the driver did not take the flow: the caller keeps
    relaying it (and still owns the sockets); `reason` says why.
    """

    session: str
    path: PathName
    reason: str = ""
    final: FlowStats | None = None  # set when the flow has ended
    end_reason: str = ""
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _callbacks: list[Callable[[Installed], None]] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def offloaded(self) -> bool:
        return self.path != "python"

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until the flow ended (True) or the timeout passed (False)."""
        return self._done.wait(timeout)

    async def wait_closed(self) -> None:
        """Awaits the end of the flow without blocking the event loop."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def wake(_: Installed) -> None:
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(None))

        self.add_done_callback(wake)
        await fut

    def add_done_callback(self, fn: Callable[[Installed], None]) -> None:
        """Calls fn(self) when the flow ends (from the driver's thread), or now if it has."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(fn)
                return
        fn(self)

    def finish(self, final: FlowStats, end_reason: str) -> None:
        """Marks the flow ended; drivers call this once."""
        with self._lock:
            if self._done.is_set():
                return
            self.final, self.end_reason = final, end_reason
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            try:
                fn(self)
            except Exception:  # one caller's callback must not break the driver's thread
                logging.getLogger("fastpath.offload").exception("done callback of session %s failed", self.session)


class SteeringTable(ABC):
    """Install, remove, list and count flows; one implementation per data path."""

    name: str = "?"
    path: PathName = "python"

    @abstractmethod
    def install(self, session: str, client_sock: socket.socket, backend_sock: socket.socket) -> Installed:
        """Offers a connected client/backend socket pair for `session`.

        On success the driver owns both sockets (it closes them when the flow
        ends); the caller must have stopped reading and writing them.
        """

    @abstractmethod
    def remove(self, session: str) -> bool:
        """Ends a steered flow (both connections are shut down); False if unknown."""

    @abstractmethod
    def list(self) -> list[Flow]:
        """The flows the driver currently steers."""

    def counters(self) -> dict[str, FlowStats]:
        """Per-session counters of the flows currently steered."""
        return {f.session: f.stats for f in self.list()}

    def errors(self) -> dict[str, int]:
        """Failure classes seen by the data path, and how often."""
        return {}

    def close(self) -> None:
        """Ends every flow and releases the driver's resources."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def addr_of(sock: socket.socket) -> Addr:
    """The peer address of a connected socket as (host, port)."""
    peer = sock.getpeername()
    return (str(peer[0]), int(peer[1]))
