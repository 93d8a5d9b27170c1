"""Admission control as a sans-IO object: hold calls no backend has headroom for, shed what cannot make it.

When the router finds no candidate with headroom for a call's SLO, the call
need not fail at once: its bytes are already buffered for replay and HTTP/2
flow control holds its client back, so it can wait for a slot. This object
only decides; the data plane feeds it calls, asks it which to start when a
backend frees up, and answers the shed ones with RESOURCE_EXHAUSTED and
`grpc-retry-pushback-ms`. No I/O, no clock of its own (time comes in).

Policy:
- queues by priority (x-fastpath-priority; higher first); within a priority,
  round-robin across tenants (x-fastpath-tenant), first come first served
  within a tenant, so one tenant's burst does not starve the others;
- bounded in bytes: a call that does not fit displaces the newest call of a
  lower priority, else it is shed itself;
- a call whose deadline (its SLO, or grpc-timeout) would pass before it could
  start, given the expected wait, is shed now rather than late, with a
  pushback of about when capacity is expected back.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Waiting:
    """One held call."""

    key: Any  # the data plane's handle for the call
    priority: int
    tenant: str
    size: int  # bytes held for replay
    deadline: float  # when starting it is no longer worth it (clock units: seconds)
    enqueued: float = 0.0


@dataclass(slots=True)
class Shed:
    call: Waiting
    reason: str
    pushback_ms: int


@dataclass
class AdmissionQueue:
    max_bytes: int
    expected_wait_s: float = 0.05  # how long a slot takes to free up, for priorities not yet observed
    wait_by_priority: dict[int, float] = field(default_factory=dict)  # observed waits (EWMA), observe_wait()
    start_interval_s: float = -1.0  # mean time between held calls starting (EWMA; -1 = none seen), observe_start()
    _last_start: float = -1.0
    _queues: dict[int, OrderedDict[str, deque[Waiting]]] = field(default_factory=dict)
    bytes_held: int = 0
    held: int = 0

    def offer(self, call: Waiting, now: float) -> list[Shed]:
        """Holds `call`; returns the calls shed to make room (possibly `call` itself)."""
        call.enqueued = now
        if call.deadline <= now + self.expected_wait(call.priority):
            return [self._shed(call, "its deadline passes before a backend is expected to have room")]
        if call.size > self.max_bytes:
            return [self._shed(call, f"the call holds {call.size} bytes, more than the queue's {self.max_bytes}")]
        shed: list[Shed] = []
        while self.bytes_held + call.size > self.max_bytes:
            victim = self._newest_below(call.priority)
            if victim is None:
                shed.append(self._shed(call, f"the queue is full ({self.bytes_held} of {self.max_bytes} bytes held)"))
                return shed
            self._remove(victim)
            shed.append(self._shed(victim, f"displaced by a priority {call.priority} call (queue full)"))
        tenants = self._queues.setdefault(call.priority, OrderedDict())
        tenants.setdefault(call.tenant, deque()).append(call)
        self.bytes_held += call.size
        self.held += 1
        return shed

    def next_call(self, now: float) -> tuple[Waiting | None, list[Shed]]:
        """The call to start now that a backend has room (highest priority, next tenant in turn),
        and the calls found past their deadline on the way (shed)."""
        shed: list[Shed] = []
        for priority in sorted(self._queues, reverse=True):
            tenants = self._queues[priority]
            while tenants:
                tenant, q = next(iter(tenants.items()))
                call = q.popleft()
                self.bytes_held -= call.size
                self.held -= 1
                if q:
                    tenants.move_to_end(tenant)  # round-robin: this tenant waits for the others' turn
                else:
                    del tenants[tenant]
                if call.deadline <= now:
                    shed.append(self._shed(call, f"waited {now - call.enqueued:.3f} s, past its deadline"))
                    continue
                if not tenants:
                    del self._queues[priority]
                return call, shed
            del self._queues[priority]
        return None, shed

    def putback(self, call: Waiting) -> None:
        """Returns a call next_call() handed out but that could not start after all: first in line again."""
        tenants = self._queues.setdefault(call.priority, OrderedDict())
        q = tenants.get(call.tenant)
        if q is None:
            q = tenants[call.tenant] = deque()
        q.appendleft(call)
        tenants.move_to_end(call.tenant, last=False)
        self.bytes_held += call.size
        self.held += 1

    def remove(self, call: Waiting) -> bool:
        """Forgets a held call (its client went away); False when it is not held."""
        q = self._queues.get(call.priority, {}).get(call.tenant)
        if q is None or call not in q:
            return False
        self._remove(call)
        return True

    @property
    def top_priority(self) -> int:
        """The highest priority with a call waiting (-1 when none)."""
        return max(self._queues) if self._queues else -1

    def depth(self) -> dict[int, int]:
        """Calls waiting by priority."""
        return {p: sum(len(q) for q in t.values()) for p, t in self._queues.items()}

    def expire(self, now: float) -> list[Shed]:
        """Sheds every held call that can no longer start before its deadline."""
        out = []
        for priority in list(self._queues):
            for tenant, q in list(self._queues[priority].items()):
                wait = self.expected_wait(priority)
                for call in [c for c in q if c.deadline <= now + wait]:
                    self._remove(call)
                    out.append(self._shed(call, "its deadline passes before a backend is expected to have room"))
        return out

    def _newest_below(self, priority: int) -> Waiting | None:
        for p in sorted(self._queues):
            if p >= priority:
                return None
            newest = None
            for q in self._queues[p].values():
                if q and (newest is None or q[-1].enqueued >= newest.enqueued):
                    newest = q[-1]
            if newest is not None:
                return newest
        return None

    def _remove(self, call: Waiting) -> None:
        tenants = self._queues[call.priority]
        q = tenants[call.tenant]
        q.remove(call)
        if not q:
            del tenants[call.tenant]
        if not tenants:
            del self._queues[call.priority]
        self.bytes_held -= call.size
        self.held -= 1

    def expected_wait(self, priority: int) -> float:
        return self.wait_by_priority.get(priority, self.expected_wait_s)

    def observe_wait(self, priority: int, waited_s: float, weight: float = 0.2) -> None:
        """A held call of `priority` started after `waited_s`: moves that priority's expected wait."""
        old = self.wait_by_priority.get(priority)
        self.wait_by_priority[priority] = waited_s if old is None else old + weight * (waited_s - old)

    def observe_start(self, now: float, weight: float = 0.1) -> None:
        """A held call started now: the rate at which the queue drains (for pushback)."""
        if self._last_start >= 0.0:
            gap = max(0.0, now - self._last_start)
            old = self.start_interval_s
            self.start_interval_s = gap if old < 0.0 else old + weight * (gap - old)
        self._last_start = now

    def pushback_s(self, priority: int) -> float:
        """About when a call of `priority` shed now would find room: the calls ahead of it (its
        priority and higher) times the interval at which held calls start, once that is known."""
        ahead = sum(len(q) for p, t in self._queues.items() if p >= priority for q in t.values())
        if self.start_interval_s >= 0.0:
            return max(self.start_interval_s * (1 + ahead), 0.001)
        return max(self.expected_wait(priority), 0.001) * (1 + ahead)

    def _shed(self, call: Waiting, why: str) -> Shed:
        pushback = max(1, int(self.pushback_s(call.priority) * 1000))
        return Shed(call, f"RESOURCE_EXHAUSTED: not admitted: {why}; retry after {pushback} ms", pushback)
