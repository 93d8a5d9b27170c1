"""The controller's table of sessions (flows) and the data path each one takes.

Proxies report the sessions they carry; the table is what `fastpath flows`
shows and what offload decisions will be made from. It is bounded: the least
recently seen session is dropped when it is full, and a session not seen for
`idle_expiry_s` is gone (it is no longer a flow anyone carries).
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from fastpath.gen import control_pb2

PATHS = ("python", "kernel", "dpu")


@dataclass
class FlowEntry:
    session: str
    client: str
    backend: str
    proxy_id: str
    path: str = "python"
    bytes_python: int = 0
    bytes_offload: int = 0
    first_seen: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    calls: int = 0

    def to_message(self, now: float | None = None) -> control_pb2.Flow:
        now = time.monotonic() if now is None else now
        return control_pb2.Flow(
            session=self.session,
            client=self.client,
            backend=self.backend,
            path=self.path,
            bytes_python=self.bytes_python,
            bytes_offload=self.bytes_offload,
            age_s=max(0.0, now - self.first_seen),
            proxy_id=self.proxy_id,
        )


class FlowTable:
    """Sessions by id, least recently seen first; at most `capacity` of them."""

    def __init__(self, capacity: int = 10000, idle_expiry_s: float = 600.0) -> None:
        if capacity < 1:
            raise ValueError("flow table capacity must be at least 1")
        self.capacity = capacity
        self.idle_expiry_s = idle_expiry_s
        self._flows: OrderedDict[str, FlowEntry] = OrderedDict()
        self.evicted = 0
        self.expired = 0

    def expire(self, now: float | None = None) -> None:
        """Drops sessions idle for longer than idle_expiry_s (the table is in last-seen order)."""
        now = time.monotonic() if now is None else now
        flows = self._flows
        while flows:
            oldest = next(iter(flows.values()))
            if now - oldest.last_seen <= self.idle_expiry_s:
                break
            flows.popitem(last=False)
            self.expired += 1

    def touch(self, session: str, client: str, backend: str, proxy_id: str) -> FlowEntry:
        """Records that `session` was just carried to `backend`."""
        now = time.monotonic()
        self.expire(now)
        f = self._flows.get(session)
        if f is None:
            f = FlowEntry(session, client, backend, proxy_id, first_seen=now, last_seen=now)
            self._flows[session] = f
            while len(self._flows) > self.capacity:
                self._flows.popitem(last=False)
                self.evicted += 1
        else:
            self._flows.move_to_end(session)
            f.last_seen = now
            f.backend, f.proxy_id = backend, proxy_id
            if client:
                f.client = client
        f.calls += 1
        return f

    def get(self, session: str) -> FlowEntry | None:
        return self._flows.get(session)

    def __len__(self) -> int:
        return len(self._flows)

    def to_message(self) -> control_pb2.FlowList:
        now = time.monotonic()
        self.expire(now)
        return control_pb2.FlowList(flows=[f.to_message(now) for f in reversed(self._flows.values())])
