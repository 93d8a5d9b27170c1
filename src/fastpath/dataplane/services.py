"""What a `Call` may use from the rest of the proxy: routing, upstreams, outcome reporting.

`ProxyCallServices` implements `fastpath.dataplane.call.CallServices` over the
router, fleet snapshot, live stats, upstream pool and counters that `Proxy`
wires together. Each `call_*` method is one recording point (call started,
routed, first byte, failover, finished with a status) — where metrics hook in.
Routing results are reused per request shape: the features of a repeated
header block (HPACK hands out the same list) are parsed once.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Final

from fastpath.router.features import (RequestFeatures, features_from_headers, model_from_infer_request,
                                      model_from_path)
from fastpath.router.prefix import prompt_blocks_of

from . import model_switch
from .call import CallServices
from .conn import after_flush
from .hedging import Hedger, hedged_trailer
from .outcome import status_ok

if TYPE_CHECKING:
    from fastpath.router.live import LiveStats
    from fastpath.router.router import Decision, Router
    from fastpath.router.snapshot import FleetSnapshot

    from .call import Call
    from .proxy import Proxy
    from .upstream import UpstreamConnection, UpstreamPool

log = logging.getLogger("fastpath.dataplane")
_perf_counter: Final = time.perf_counter  # statics, not module attribute lookups, in the compiled build
_monotonic: Final = time.monotonic


def with_model(f: RequestFeatures, model: str, prompt_blocks: tuple[int, ...] = ()) -> RequestFeatures:
    return RequestFeatures(model, f.region, f.session, f.policy, f.slo_ttft_ms, f.max_cost, f.allow_regions,
                           prompt_blocks or f.prompt_blocks, f.allow_substitute)


class Wiring:
    """What calls reach on every call that a proxy swaps while it runs (a new snapshot, a reload).

    `Proxy` keeps these here, behind properties of the same names, so the
    compiled services read them as fields of a native object rather than as
    attributes of the interpreted `Proxy`.
    """

    router: "Router"
    snapshot: "FleetSnapshot"
    live: "LiveStats"
    pool: "UpstreamPool"
    name_bytes: list[bytes]
    watcher: Any

    def __init__(self) -> None:
        self.watcher = None


class ProxyCallServices(CallServices):
    """The proxy as its calls see it."""

    def __init__(self, proxy: "Proxy") -> None:
        self.proxy = proxy
        self.w: Wiring = proxy.wiring
        self.replay_limit = proxy.limits.replay_limit
        self.names = proxy.names
        self.metrics = proxy.metrics
        self.gate = proxy.gate  # admission control and budgets (fastpath.dataplane.call_gate); None when not configured
        self._features: dict[int, tuple[list, RequestFeatures]] = {}
        self._with_path: dict[tuple[int, bytes], tuple[RequestFeatures, RequestFeatures]] = {}
        self._last_log = 0.0
        # Policies whose calls allow a substitute model without the header (config only: pushed
        # weights keep the opt-in of the policy's name).
        self._substitute_policies = model_switch.substitute_policies(proxy.config)
        self.hedger: Hedger | None = None  # TTFT hedging ([router.hedge]); None = off, no per-call cost
        self.set_hedge(proxy.config.hedge)

    def set_hedge(self, cfg: Any) -> None:
        """Turns TTFT hedging on or off (at start and on a pushed config; unchanged settings keep
        the armed timers and the budget)."""
        old = self.hedger
        if old is not None:
            if cfg.enabled and old.cfg == cfg:
                return
            old.close()
        self.hedger = Hedger(cfg, self.metrics) if cfg.enabled else None

    # -- routing ---------------------------------------------------------------
    def features(self, headers: list, recurs: bool = True) -> RequestFeatures:
        """Routing inputs of a header list; a repeated header block (same cached list) is parsed once.
        `recurs`: the list may come again (False for a block decoded once: not remembered)."""
        hit = self._features.get(id(headers))
        if hit is not None and hit[0] is headers:
            return hit[1]
        f = features_from_headers(headers)
        if self._substitute_policies and not f.allow_substitute:
            f.allow_substitute = (f.policy or self.w.router.default_policy) in self._substitute_policies
        if not recurs:
            return f
        if len(self._features) >= 1024:
            self._features.clear()
            self._with_path.clear()
        self._features[id(headers)] = (headers, f)  # keeps `headers` alive, so its id stays unique
        return f

    @property
    def prefix_on(self) -> bool:
        """Prompt-prefix affinity is on: KServe calls are held for their first DATA even when the model is known."""
        return self.w.router.prefix_on

    def features_from_path(self, f: RequestFeatures, path: bytes) -> RequestFeatures:
        key = (id(f), path)
        hit = self._with_path.get(key)
        if hit is not None and hit[0] is f:
            return hit[1]
        model = model_from_path(path) if path else ""
        out = with_model(f, model if model in self.proxy.models else "")
        if len(self._with_path) >= 4096:
            self._with_path.clear()
        self._with_path[key] = (f, out)  # keeps f alive, so its id is not reused while cached
        return out

    def features_from_body(self, f: RequestFeatures, body: list[bytes]) -> RequestFeatures | None:
        """The request body prefix is available: the model (unless metadata named it) and the prompt's
        blocks for prefix affinity; None = need more of the body."""
        data = body[0] if len(body) == 1 else b"".join(body)
        model = model_from_infer_request(data)
        if model is None:
            return None
        p = self.proxy
        model = f.model or model
        blocks = prompt_blocks_of(data, model, p.config.prefix) if self.w.router.prefix_on else ()
        return with_model(f, model, blocks)

    def route(self, f: RequestFeatures) -> "Decision":
        w = self.w
        t0 = _perf_counter()
        decision = w.router.route(f, w.snapshot, w.live)
        after_flush(self._record_decided, (decision, _perf_counter() - t0))
        return decision

    def _record_decided(self, args: tuple["Decision", float]) -> None:
        """After the request is on its way: count the decision, and build its trailer now, while
        the backend works, rather than when the response is back."""
        decision = args[0]
        self.metrics.decided(decision, args[1])
        if decision.ranked:
            decision.header(0)

    # -- upstreams -------------------------------------------------------------
    def acquire(self, backend: int) -> "UpstreamConnection | None":
        return self.w.pool.acquire(backend)

    def backend_name(self, backend: int) -> str:
        return self.names[backend]

    def response_trailers(self, call: "Call") -> tuple[list, list | None]:
        """(fields added to the backend's trailers, per-call literal fields)."""
        plain = [(b"x-fastpath-backend", self.w.name_bytes[call.backend])]
        if self.gate is not None:
            plain += self.gate.trailers(call)
        decision = call.decision
        lits = None if decision is None else [(b"x-fastpath-decision", decision.header(call.position))]
        sw = call.switch
        if sw is not None:  # the call allowed a substitute model
            if sw.served:
                plain.append((model_switch.SERVED_MODEL, sw.served_b))
            if lits is not None:
                lits[0] = (b"x-fastpath-decision", lits[0][1] + sw.decision_note())
        if call.hedged_from >= 0:
            names = self.w.name_bytes
            lits = (lits or []) + [hedged_trailer(names[call.hedged_from], names[call.backend], call.hedged_after_ms)]
        return plain, lits

    # -- outcomes --------------------------------------------------------------
    def call_started(self, call: "Call") -> None:
        pass

    def call_routed(self, call: "Call") -> None:
        """Prefix affinity: the prompt's blocks are learned where this call goes."""
        if call.decision is not None:
            self.w.router.learn(call.decision)

    def call_attempt(self, call: "Call", backend: int) -> None:
        """The call goes to `backend` (first try, failover or hedge): one more call in flight there."""
        self.w.live.started(backend)
        hedger = self.hedger
        if hedger is not None:
            hedger.arm(call)

    def call_first_byte(self, call: "Call", ttft_ms: float) -> None:
        self.w.live.first_byte(call.backend, ttft_ms)
        if call.hedged_from >= 0:
            self.metrics.hedge("won")  # the replayed attempt answered

    def call_hedged(self, call: "Call", backend: int, waited_ms: float) -> None:
        """`backend` gave no first byte in time: abandoned, not failed (no health, error or cool-down
        charge; `LiveStats.abandoned` folds the wait into its TTFT estimate only once it stalls in a row)."""
        self.w.live.abandoned(backend, waited_ms)
        self.metrics.hedge("sent")
        now = _monotonic()
        if now - self._last_log > 1.0:
            self._last_log = now
            log.info("hedge: backend %s gave no first byte in %.0f ms; replaying on the next candidate "
                     "(%d hedges so far)", self.names[backend], waited_ms, self.metrics.hedges["sent"])

    def call_failover(self, call: "Call", backend: int, why: str) -> None:
        """`backend` failed the call before its first byte (its fault: transport or UNAVAILABLE)."""
        self.w.live.finished(backend, False)
        self._observe(call, backend, False, 0.0)
        self.metrics.failovers += 1
        f = call.features
        self.metrics.call_finished(backend, f.model if f is not None else "", False, -1.0, 0.0)
        now = _monotonic()
        if now - self._last_log > 1.0:
            self._last_log = now
            log.info("failover: backend %s %s; trying the next candidate (%d failovers so far)",
                     self.names[backend], why, self.metrics.failovers)

    def call_finished(self, call: "Call", status: bytes | None, backend_fault: bool, ttft_ms: float) -> None:
        """Only `backend_fault` moves a backend's health; the status is what the client got.
        Recorded once the call's last frames are written (`after_flush`)."""
        after_flush(self._record_finished, (call, status, backend_fault, ttft_ms))

    def _record_finished(self, args: tuple["Call", bytes | None, bool, float]) -> None:
        call, status, backend_fault, ttft_ms = args
        if not status_ok(status):
            self.metrics.errors += 1
        if call.hedged_from >= 0 and call.t_first == 0.0:
            self.metrics.hedge("lost")  # the replayed attempt gave no first byte either
        backend = call.backend
        if backend < 0:
            if self.gate is not None:
                self.gate.finished(call)
            return
        self.w.live.finished(backend, not backend_fault)
        ok = status_ok(status)
        self.metrics.requests[(self.names[backend], "ok" if ok else "error")] += 1
        f = call.features
        self.metrics.call_finished(backend, f.model if f is not None else "", ok,
                                   _monotonic() - call.t_start, ttft_ms / 1000.0)
        self._observe(call, backend, not backend_fault, ttft_ms)
        if self.gate is not None:
            self.gate.finished(call)  # after live.finished: the slot this call held is free

    def _observe(self, call: "Call", backend: int, ok: bool, ttft_ms: float) -> None:
        f = call.features
        if ok and f is not None and f.session:
            self.w.live.remember_session(f.session, backend)
        watcher = self.w.watcher
        if watcher is not None and f is not None:
            watcher.observe(self.names[backend], f.region, f.session, ttft_ms, ok, f.model, f.prompt_blocks)

    def call_reset(self, call: "Call", message: str) -> None:
        self.metrics.resets += 1
        log.info("reset stream %d from %s: %s", call.down_id, call.down.peer, message)
