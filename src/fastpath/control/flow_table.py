"""The controller's table of sessions (flows) and the data path each one takes.

Two sources fill it. Proxies report their pinned sessions (client address,
backend, path, bytes through Python and through the offload) in their
observation batches; such a report replaces what that proxy reported before,
so a closed connection leaves the table. Sessions seen only in observations
(routed mode) are listed too, with the client's region in place of an
address. The table is what `fastpath flows` shows and what SetFlowPath acts
on. It is bounded: the least recently seen session is dropped when it is
full, and a session not seen for `idle_expiry_s` is gone.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from fastpath.gen import control_pb2

PATHS = ("python", "kernel", "dpu")
MAX_FIELD_CHARS = 256


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
    reported: bool = False  # in the latest flow report of proxy_id (a live pinned connection)

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
        self._by_proxy: dict[str, set[str]] = {}  # proxy -> sessions in its latest report
        self.evicted = 0
        self.expired = 0

    def _drop(self, session: str) -> None:
        f = self._flows.pop(session, None)
        if f is not None and f.reported:
            self._by_proxy.get(f.proxy_id, set()).discard(session)

    def _insert(self, f: FlowEntry) -> None:
        self._flows[f.session] = f
        while len(self._flows) > self.capacity:
            self._drop(next(iter(self._flows)))
            self.evicted += 1

    def expire(self, now: float | None = None) -> None:
        """Drops sessions idle for longer than idle_expiry_s (the table is in last-seen order)."""
        now = time.monotonic() if now is None else now
        flows = self._flows
        while flows:
            oldest = next(iter(flows.values()))
            if now - oldest.last_seen <= self.idle_expiry_s:
                break
            self._drop(oldest.session)
            self.expired += 1

    def touch(self, session: str, client: str, backend: str, proxy_id: str) -> FlowEntry:
        """Records that an observed call of `session` was just carried to `backend`."""
        now = time.monotonic()
        self.expire(now)
        f = self._flows.get(session)
        if f is None:
            f = FlowEntry(session, client, backend, proxy_id, first_seen=now, last_seen=now)
            self._insert(f)
        else:
            self._flows.move_to_end(session)
            f.last_seen = now
            if not f.reported:  # a proxy's report knows the connection better than an observation
                f.backend, f.proxy_id = backend, proxy_id
                if client:
                    f.client = client
        f.calls += 1
        return f

    def replace_reported(self, proxy_id: str, flows: Iterable[control_pb2.Flow]) -> None:
        """Takes a proxy's report of its pinned sessions; its sessions missing from it are closed."""
        now = time.monotonic()
        self.expire(now)
        proxy_id = proxy_id[:MAX_FIELD_CHARS]
        fresh: set[str] = set()
        for r in flows:
            session = r.session[:MAX_FIELD_CHARS]
            if not session or r.path not in PATHS:
                continue
            f = self._flows.get(session)
            if f is None:
                f = FlowEntry(session, "", "", proxy_id, first_seen=now, last_seen=now)
                self._insert(f)
            else:
                self._flows.move_to_end(session)
                if f.reported and f.proxy_id != proxy_id:
                    self._by_proxy.get(f.proxy_id, set()).discard(session)
            f.client = r.client[:MAX_FIELD_CHARS] or f.client
            f.backend = r.backend[:MAX_FIELD_CHARS] or f.backend
            f.proxy_id, f.path, f.reported = proxy_id, r.path, True
            f.bytes_python, f.bytes_offload = r.bytes_python, r.bytes_offload
            if r.age_s > 0:
                f.first_seen = now - r.age_s
            f.last_seen = now
            fresh.add(session)
        for gone in self._by_proxy.get(proxy_id, set()) - fresh:
            f = self._flows.get(gone)
            if f is not None and f.reported and f.proxy_id == proxy_id:
                self._flows.pop(gone)
        self._by_proxy[proxy_id] = {s for s in fresh if s in self._flows}

    def get(self, session: str) -> FlowEntry | None:
        return self._flows.get(session)

    def __contains__(self, session: str) -> bool:
        return session in self._flows

    def __len__(self) -> int:
        return len(self._flows)

    def entries(self) -> list[FlowEntry]:
        return list(self._flows.values())

    def to_message(self) -> control_pb2.FlowList:
        now = time.monotonic()
        self.expire(now)
        return control_pb2.FlowList(flows=[f.to_message(now) for f in reversed(self._flows.values())])
