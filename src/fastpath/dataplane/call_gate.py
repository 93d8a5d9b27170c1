"""Admission control and budgets, where a routed call meets the proxy's capacity and its tenant's money.

The proxy has a CallGate only when its config has an [admission] table or
[budgets]; without them `Call._route` finds `svc.gate is None` and nothing
here runs (no header scan, no timer).

Admission control (fastpath.router.admission is the policy, this is its I/O):
a routed call whose decision has no candidate with headroom
(fastpath.router.call_class.has_headroom) is held in state QUEUED. Its
request bytes stay in its send buffer for replay and no WINDOW_UPDATE goes to
the client for them (credit is only returned for bytes sent upstream), so
HTTP/2 flow control holds the client back: a held call buffers at most one
stream window. Held calls start when capacity frees — a call finishing at a
backend, or the periodic tick (every TICK_S while anything is held, which
also sheds calls past their start-by deadline) — highest priority first,
tenants in turn within a priority. A new call of a priority that already has
calls waiting joins the queue behind them rather than taking a freed slot
first. Shed calls are answered RESOURCE_EXHAUSTED with why in grpc-message and
`grpc-retry-pushback-ms`; a held call whose client resets is forgotten.

Budgets (fastpath.control.budgets.BudgetView): a call of a budgeted tenant is
refused RESOURCE_EXHAUSTED naming the budget once it is spent; otherwise, when
it finishes at a backend, it is charged (input tokens = request body bytes /
BYTES_PER_TOKEN, output tokens = response body bytes / BYTES_PER_TOKEN; both
counted on the wire, protobuf and gRPC framing included, never decoded),
priced at that backend's cost_per_1k_tokens, reported to the controller and
counted locally at once; its trailers carry `x-fastpath-budget-remaining`.
"""
from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Any

from fastpath.control.budgets import BYTES_PER_TOKEN, BudgetView, trailer_value
from fastpath.router.admission import AdmissionQueue, Shed, Waiting
from fastpath.router.call_class import HOLD_SHARE, call_class, has_headroom, start_by
from fastpath.router.features import MetadataError

from . import grpc_status as gs
from .call import QUEUED

if TYPE_CHECKING:
    from fastpath.router.router import Decision

    from .call import Call
    from .proxy import Proxy

_now = time.monotonic
TICK_S = 0.01  # held calls are checked against their deadlines (and capacity) this often
BUDGET_TRAILER = b"x-fastpath-budget-remaining"
PUSHBACK = b"grpc-retry-pushback-ms"


class _Record:
    """What the gate keeps on a call (`Call.gate_info`)."""

    __slots__ = ("priority", "tenant", "timeout_s", "waiting", "budgeted")

    def __init__(self, priority: int, tenant: str, timeout_s: float, budgeted: bool) -> None:
        self.priority = priority
        self.tenant = tenant
        self.timeout_s = timeout_s
        self.waiting: Waiting | None = None
        self.budgeted = budgeted


def _shed_kind(reason: str) -> str:
    if "deadline" in reason:
        return "deadline"
    if "displaced" in reason:
        return "displaced"
    if "more than" in reason:
        return "too_large"
    return "queue_full"


class CallGate:
    def __init__(self, proxy: "Proxy") -> None:
        self.proxy = proxy
        cfg = proxy.config
        adm = cfg.admission
        self.queue: AdmissionQueue | None = AdmissionQueue(adm.max_queue_bytes) if adm is not None else None
        self.max_wait_s = adm.max_wait_ms / 1000.0 if adm is not None else math.inf
        self.default_priority = adm.default_priority if adm is not None else 0
        self.budgets: BudgetView | None = BudgetView(cfg.budgets) if cfg.budgets else None
        self._timer: asyncio.TimerHandle | None = None
        self._draining = False
        self._priorities: set[int] = set()  # seen, so their depth gauge goes back to 0
        self.started_after_hold = 0

    # -- the hook in Call._route -------------------------------------------------
    def admit(self, call: "Call", decision: "Decision") -> bool:
        """True: start the call now. False: it is held, or it was answered (refused, shed)."""
        rec = call.gate_info
        if rec is None:
            try:
                c = call_class(call.request_headers)
            except MetadataError as e:
                call.respond_error(gs.INVALID_ARGUMENT, str(e))
                return False
            budgets = self.budgets
            rec = call.gate_info = _Record(c.priority if c.priority >= 0 else self.default_priority,
                                           c.tenant, c.timeout_s, budgets is not None and c.tenant in budgets.budgets)
        if rec.budgeted:
            assert self.budgets is not None
            why = self.budgets.refusal(rec.tenant, _now())
            if why:
                self.proxy.metrics.budget_refused("tokens" if "token budget" in why else "dollars")
                call.respond_error(gs.RESOURCE_EXHAUSTED, f"over budget: {why}")
                return False
        q = self.queue
        if q is None:
            return True
        if (not q.held or rec.priority > q.top_priority) and self._headroom(decision):
            return True
        return self._hold(call, rec)

    def _headroom(self, decision: "Decision") -> bool:
        p = self.proxy
        inflight = p.live.inflight
        return has_headroom(decision, p.router.load_share, lambda i: float(inflight[i]))

    def _hold(self, call: "Call", rec: _Record) -> bool:
        q = self.queue
        assert q is not None
        now = _now()
        f = call.features
        deadline = start_by(call.t_start, f.slo_ttft_ms if f is not None else 0.0, rec.timeout_s, HOLD_SHARE)
        if deadline == math.inf:
            deadline = call.t_start + self.max_wait_s
        w = Waiting(call, rec.priority, rec.tenant, max(1, call.req.pending_bytes), deadline)
        call.state = QUEUED
        rec.waiting = w
        self._priorities.add(rec.priority)
        shed = q.offer(w, now)
        for s in shed:
            self._answer(s)
        if q.held:
            self._arm()
            self.drain()  # a freed slot may be waiting for the head of the line
        self._depth()
        return False

    # -- releasing ---------------------------------------------------------------
    def drain(self) -> None:
        """Starts held calls while some candidate has headroom, in priority then tenant order."""
        q = self.queue
        if q is None or self._draining:
            return
        self._draining = True
        try:
            svc = self.proxy.call_services
            now = _now()
            while q.held:
                w, shed = q.next_call(now)
                for s in shed:
                    self._answer(s)
                if w is None:
                    break
                call: Call = w.key
                assert call.features is not None  # queued calls were routed once
                decision = svc.route(call.features)
                if decision.ranked and not self._headroom(decision):
                    q.putback(w)
                    break
                call.gate_info.waiting = None
                q.observe_wait(w.priority, now - w.enqueued)
                q.observe_start(now)
                self.started_after_hold += 1
                if not decision.ranked:
                    call.decision = decision
                    call.respond_error(gs.UNAVAILABLE, f"no backend for this call: {decision.reason}")
                else:
                    call.start_routed(decision)
        finally:
            self._draining = False
        self._depth()

    def _answer(self, s: Shed) -> None:
        call: Call = s.call.key
        call.gate_info.waiting = None
        self.proxy.metrics.shed(str(s.call.priority), _shed_kind(s.reason))
        call.respond_error(gs.RESOURCE_EXHAUSTED, s.reason.removeprefix("RESOURCE_EXHAUSTED: "),
                           [(PUSHBACK, b"%d" % s.pushback_ms)])

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(TICK_S, self._tick)

    def _tick(self) -> None:
        self._timer = None
        q = self.queue
        if q is None or not q.held:
            return
        for s in q.expire(_now()):
            self._answer(s)
        self.drain()
        if q.held:
            self._arm()
        self._depth()

    def _depth(self) -> None:
        q = self.queue
        if q is None:
            return
        depth = q.depth()
        m = self.proxy.metrics
        for p in self._priorities:
            m.set_queue_depth(str(p), depth.get(p, 0))

    # -- the hooks in ProxyCallServices ------------------------------------------
    def finished(self, call: "Call") -> None:
        """The call ended (answered, reset, or done at a backend): forget it, charge it, start the next."""
        rec = call.gate_info
        if rec is None:
            return
        q = self.queue
        if rec.waiting is not None and q is not None:
            q.remove(rec.waiting)  # its client went away while it was held
            rec.waiting = None
            self._depth()
        backend = call.backend
        if backend < 0:
            return
        if rec.budgeted:
            tokens, dollars = self._usage(call)
            assert self.budgets is not None
            self.budgets.charge(rec.tenant, tokens, dollars, _now())
            watcher = self.proxy.watcher
            if watcher is not None:
                watcher.usage(rec.tenant, tokens, dollars)
        if q is not None and q.held:
            self.drain()

    def _usage(self, call: "Call") -> tuple[float, float]:
        tokens = (call.replay_bytes + call.resp_bytes) / BYTES_PER_TOKEN
        return tokens, tokens * self.proxy.config.backends[call.backend].cost_per_1k_tokens / 1000.0

    def trailers(self, call: "Call") -> list:
        """The budget trailer of a budgeted call: what remains once this call is charged."""
        rec = call.gate_info
        if rec is None or not rec.budgeted or call.backend < 0:
            return []
        assert self.budgets is not None
        left_tokens, left_dollars = self.budgets.remaining(rec.tenant, _now())
        tokens, dollars = self._usage(call)
        return [(BUDGET_TRAILER, trailer_value(None if left_tokens is None else max(0.0, left_tokens - tokens),
                                               None if left_dollars is None else max(0.0, left_dollars - dollars)))]

    def pushed_budgets(self, remaining: dict[str, tuple[float | None, float | None]]) -> None:
        """The controller's remainders (on the proxy's loop)."""
        if self.budgets is not None:
            for tenant, (tokens, dollars) in remaining.items():
                self.budgets.pushed(tenant, tokens, dollars)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def budget_remainders(resources: dict[str, Any]) -> dict[str, tuple[float | None, float | None]]:
    """Pushed "budget" resources as tenant -> (tokens left or None, dollars left or None)."""
    out = {}
    for tenant, r in resources.items():
        b = r.budget
        out[tenant] = (b.tokens_remaining if b.tokens_limit else None,
                       b.dollars_remaining if b.dollars_limit else None)
    return out
